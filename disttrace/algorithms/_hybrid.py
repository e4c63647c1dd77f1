"""Hybrid: D-RTRL where the trace fits a memory budget, ES-D-RTRL elsewhere.

Not a rule of its own: an assignment of the two rules to the graph's ops. Every
``element_wise`` op keeps its exact trace (it counts against the budget first);
the other ops are taken smallest D-RTRL trace first, while the budget lasts.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from disttrace.algorithms._d_rtrl import DRTRLRule
from disttrace.algorithms._es_d_rtrl import ESRule, decay_pair, es_or_exact
from disttrace.checks import non_negative_int

__all__ = ["Hybrid", "param_trace_bytes"]


def param_trace_bytes(graph, op) -> int:
    """Bytes of the D-RTRL traces of one op (all groups it reaches)."""
    total = 0
    for g in op.groups:
        grp = graph.groups[g]
        shapes = jax.eval_shape(
            lambda ops, grp=grp: op.rule.dr_zeros(ops, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype), op.operands
        )
        total += sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes))
    return total


@dataclasses.dataclass(frozen=True, init=False)
class Hybrid:
    """D-RTRL for the weights whose traces fit ``memory_budget`` bytes, ES-D-RTRL elsewhere.

    Weights are taken smallest trace first until the budget is used up.

    Args:
      memory_budget: bytes available for parameter-dimension traces (>= 0).
      decay, decay_or_rank: as for :class:`ES_D_RTRL`.
    """

    memory_budget: int
    x_decay: float
    f_decay: float

    def __init__(self, memory_budget: int = 2**28, decay=None, *, decay_or_rank=None):
        budget = non_negative_int("Hybrid", "memory_budget", memory_budget)
        x, f = decay_pair(decay, decay_or_rank, "Hybrid")
        object.__setattr__(self, "memory_budget", budget)
        object.__setattr__(self, "x_decay", x)
        object.__setattr__(self, "f_decay", f)

    def rules(self, graph) -> tuple:
        """D-RTRL for ``element_wise`` ops and for the others while the budget lasts."""
        rules = [es_or_exact(op, graph, self.x_decay, self.f_decay) for op in graph.ops]
        exact = [j for j, r in enumerate(rules) if isinstance(r, DRTRLRule)]
        budget = self.memory_budget - sum(param_trace_bytes(graph, graph.ops[j]) for j in exact)
        candidates = sorted((param_trace_bytes(graph, graph.ops[j]), j) for j, r in enumerate(rules) if isinstance(r, ESRule))
        for cost, j in candidates:
            if cost <= budget:
                rules[j] = DRTRLRule(graph.ops[j], graph)
                budget -= cost
        return tuple(rules)
