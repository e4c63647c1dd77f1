"""Does the step's output read the previous hidden values other than through the new ones?

A model's output is usually computed from the new hidden values (``s_t = H(V_t - θ)``),
so the whole of ``∂L_t/∂h_{t-1}`` flows through ``h_t``. Some models read a value
derived from ``h_{t-1}`` that bypasses ``h_t`` (a spike taken before the reset). The
ES-D-RTRL learner needs that bypass part of the learning signal, which costs a second
backward pass per step; this structural test lets it skip the pass when the bypass is
zero by construction.
"""

from __future__ import annotations

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._graph import ETraceGraph

__all__ = ["output_bypasses_hidden"]


def output_bypasses_hidden(graph: ETraceGraph) -> bool:
    """True if some output leaf depends on a previous hidden value along a path that
    does not pass through a new hidden value.

    Conservative: any equation with a tainted input taints all its outputs.
    """
    jaxpr = graph.jaxpr.jaxpr
    n_p = graph.param_tree.num_leaves
    n_h = len(graph.hidden_paths)
    n_out = graph.out_tree.num_leaves
    hidden_new = {v for v in jaxpr.outvars[n_out : n_out + n_h] if not jc.is_literal(v)}
    tainted = set(jaxpr.invars[n_p : n_p + n_h])
    for eqn in jaxpr.eqns:
        if any(not jc.is_literal(v) and v in tainted and v not in hidden_new for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(not jc.is_literal(v) and v in tainted and v not in hidden_new for v in jaxpr.outvars[:n_out])
