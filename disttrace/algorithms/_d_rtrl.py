"""D-RTRL: diagonal RTRL, the trace of every weight kept in the parameter dimension.

For op ``y = op(x, W)`` reaching hidden group ``G`` (K states per neuron), the trace
``E`` (B, K, *W-layout) follows, in the previous-hidden form (DESIGN.md §2),

.. math::
    g_t(W) = \\sum_b \\sum_k δ^{prev}_t[b,k] ∘ E_{t-1}[b,k] + ∂L_t/∂W|_{direct},
    \\qquad E_t = D_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t

with ``D_t`` the per-neuron K×K Jacobian block. Exact wherever the true hidden
Jacobian is block-diagonal (leaky/LIF/ALIF layers without recurrent weights). Memory
O(B·K·|W|) per (op, group); the direct term is added by the learner.

Chunked form (``chunk_size=U``, matmul-family ops with ``TraceOpRule.chunkable``): the
trace is read and written once per chunk (``_chunked.chunk_update``), the same-step
term folded into the chunk's input contraction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._chunked import chunk_update, contract_then_decay
from disttrace.algorithms._rule import OpFactors, tree_add

__all__ = ["D_RTRL", "DRTRLRule", "DRTRLTrace"]


class DRTRLTrace(NamedTuple):
    """D-RTRL state of one op.

    Attributes:
      e: TraceKey string -> the op rule's trace tuple for that group, e.g. for a
        matmul ``((B, K, I, O),)``.
    """

    e: dict

    sharding_roles = {"e": "trace"}


class DRTRLRule:
    """D-RTRL for one op (see the module docstring).

    Args:
      op: the graph's ``TraceOpNode``.
      graph: the ``ETraceGraph``.
    """

    name = "d_rtrl"
    dimension = "param"
    chunk_direct = True
    chunk_reads_weights = False

    def __init__(self, op, graph):
        self.op = op
        self.groups = tuple(graph.groups[g] for g in op.groups)
        self.keys = tuple(graph.trace_key(op, g) for g in op.groups)
        self.chunked = bool(op.rule.chunkable)

    @functools.cached_property
    def _shapes(self) -> DRTRLTrace:
        # traced once: ``init`` runs at every trial of a trainer
        rule = self.op.rule
        return DRTRLTrace({
            key: jax.eval_shape(
                lambda ops, grp=grp: rule.dr_zeros(ops, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype),
                self.op.operands,
            )
            for key, grp in zip(self.keys, self.groups)
        })

    def init(self) -> DRTRLTrace:
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._shapes)

    def zero_grad(self) -> tuple:
        rule, grp = self.op.rule, self.groups[0]

        def probe(operands):
            delta = jnp.zeros((grp.shape[0], grp.k, *grp.neuron_shape), grp.dtype)
            e = rule.dr_zeros(operands, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype)
            return rule.dr_contract(rule.to_trace_neurons(delta, operands), e)

        return tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(probe, self.op.operands))

    def update(self, state: DRTRLTrace, f: OpFactors) -> tuple[tuple, DRTRLTrace]:
        rule = self.op.rule
        to_n = functools.partial(rule.to_trace_neurons, operands=f.operands)
        grad, e = None, dict(state.e)
        for i, key in enumerate(self.keys):
            gk, decayed = contract_then_decay(rule, to_n(f.delta_prev[i]), to_n(f.jac[i]), e[key])
            grad = gk if grad is None else tree_add(grad, gk)
            e[key] = tree_add(decayed, rule.dr_outer(f.g[i], f.operands))
        return grad, DRTRLTrace(e)

    # ---- chunked form: nothing per step but the factors; the trace once per chunk
    def chunk_step(self, state: DRTRLTrace, f: OpFactors):
        kept = (self.op.rule.chunk_input(f.operands), f.g, f.jac, f.delta_prev, f.y_grad)
        return state, kept

    def chunk_end(self, start: DRTRLTrace, state: DRTRLTrace, kept, operands) -> tuple[tuple, DRTRLTrace]:
        del state, operands  # the trace did not move inside the chunk; weights are not read
        xs, gs, jacs, deltas, y = kept
        grad, e = None, dict(start.e)
        for i, key in enumerate(self.keys):
            # the same-step term is folded into the first group's input contraction only
            gk, e[key] = chunk_update(
                self.op.rule, self.op.operands, e[key], xs, gs[i], jacs[i], deltas[i], y if i == 0 else None
            )
            grad = gk if grad is None else tree_add(grad, gk)
        return grad, DRTRLTrace(e)


@dataclasses.dataclass(frozen=True)
class D_RTRL:  # noqa: N801 - the algorithm's name in the literature and in braintrace
    """Diagonal RTRL: exact trace of every weight in the parameter dimension."""

    def rules(self, graph) -> tuple:
        """A :class:`DRTRLRule` for every op that reaches a hidden group."""
        return tuple(DRTRLRule(op, graph) if op.groups else None for op in graph.ops)
