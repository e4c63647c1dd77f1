"""Which learning-signal paths skip the new hidden values? (structural, from the jaxpr)

ES-D-RTRL splits the step's loss gradient into paths through the new hidden values of
a group, which meet the eligibility traces, and paths that *bypass* them, e.g. an output
spike read from the potential before its reset, or read and passed on to a later
layer. Bypass paths need extra backward work each step, so the learner does it only
where this module finds they can exist:

- :func:`bypass_groups`: groups G whose previous values reach the output (or another
  group's new values) other than through G's own new values;
- :func:`bypass_ops`: trace ops whose output reaches the output (or another group's
  new values) other than through the new values of the groups the op drives.

Conservative: any equation with a tainted input taints all its outputs.
"""

from __future__ import annotations

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._graph import ETraceGraph

__all__ = ["bypass_groups", "bypass_ops"]


def _layout(graph: ETraceGraph):
    jaxpr = graph.jaxpr.jaxpr
    n_p = graph.param_tree.num_leaves
    n_h = len(graph.hidden_paths)
    n_out = graph.out_tree.num_leaves
    outs = [v for v in jaxpr.outvars[:n_out] if not jc.is_literal(v)]
    new = [None if jc.is_literal(v) else v for v in jaxpr.outvars[n_out : n_out + n_h]]
    prev = jaxpr.invars[n_p : n_p + n_h]
    return jaxpr, outs, new, prev


def _reaches(jaxpr, sources, blockers, targets) -> bool:
    """Whether a value in ``sources`` reaches ``targets`` without passing a ``blockers`` var."""
    tainted = set(sources)
    for eqn in jaxpr.eqns:
        if any(not jc.is_literal(v) and v in tainted and v not in blockers for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(v in tainted and v not in blockers for v in targets)


def bypass_groups(graph: ETraceGraph) -> frozenset[int]:
    """Indices of the hidden groups whose previous values can reach the loss other than
    through the group's own new values."""
    jaxpr, outs, new, prev = _layout(graph)
    found = set()
    for grp in graph.groups:
        own = {new[m] for m in grp.members if new[m] is not None}
        others = [v for i, v in enumerate(new) if v is not None and i not in grp.members]
        if _reaches(jaxpr, [prev[m] for m in grp.members], own, outs + others):
            found.add(grp.index)
    return frozenset(found)


def bypass_ops(graph: ETraceGraph) -> frozenset[int]:
    """Indices of the traced ops whose output can reach the loss other than through the
    new values of the groups the op drives."""
    jaxpr, outs, new, _ = _layout(graph)
    found = set()
    for op in graph.ops:
        if not op.groups:
            continue
        members = {m for g in op.groups for m in graph.groups[g].members}
        own = {new[m] for m in members if new[m] is not None}
        others = [v for i, v in enumerate(new) if v is not None and i not in members]
        if _reaches(jaxpr, jaxpr.eqns[op.eqn_index].outvars, own, outs + others):
            found.add(op.index)
    return frozenset(found)
