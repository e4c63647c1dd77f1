"""Algorithm specifications: which trace each weight keeps.

Each spec is a frozen dataclass validated at construction; ``assign_modes`` turns a
spec and a compiled graph into one mode per trace op:

- ``"param"``: D-RTRL, trace in the parameter dimension (B·K·|W|), exact where the
  hidden Jacobian is diagonal;
- ``"io"``: ES-D-RTRL / pp-prop, trace in the input/output dimension (B·(I+O));
- ``"none"``: the op reaches no hidden state; its weights get the exact same-step
  gradient only.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from disttrace.compiler import ETraceGraph

__all__ = ["BPTT", "D_RTRL", "ES_D_RTRL", "Hybrid", "assign_modes", "param_trace_bytes", "pp_prop"]


def _decay_from(decay, decay_or_rank, who: str) -> tuple[float, float]:
    """Returns (x-side, f-side) decays from a float decay, an int rank, or a pair."""
    if decay is not None and decay_or_rank is not None:
        raise ValueError(f"{who}: give 'decay' or 'decay_or_rank', not both")
    value = decay if decay is not None else decay_or_rank
    name = "decay" if decay is not None else "decay_or_rank"
    if value is None:
        value = 0.9
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{who}: argument {name!r} as a pair must be (x_decay, f_decay); got {value!r}")
        return _decay_from(value[0], None, who)[0], _decay_from(value[1], None, who)[1]
    if isinstance(value, bool):
        raise ValueError(f"{who}: argument {name!r} must be a float in [0, 1) or an int rank >= 1; got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{who}: argument {name!r} as a rank must be >= 1; got {value}")
        d = (value - 1) / (value + 1)  # braintrace's rank -> decay mapping
        return d, d
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{who}: argument {name!r} must lie in [0, 1); got {value}")
        return value, value
    raise ValueError(f"{who}: argument {name!r} must be a float, an int rank or a pair; got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class D_RTRL:  # noqa: N801 - the algorithm's name in the literature and in braintrace
    """Diagonal RTRL: exact trace of every weight in the parameter dimension."""


@dataclasses.dataclass(frozen=True, init=False)
class ES_D_RTRL:  # noqa: N801
    """Exponentially smoothed D-RTRL (pp-prop): traces in the IO dimension.

    Args:
      decay: smoothing factor in [0, 1) (default 0.9); an int is read as a rank r
        with decay (r-1)/(r+1); a pair sets the input- and output-side decays.
      decay_or_rank: braintrace's spelling of the same argument.
    """

    x_decay: float
    f_decay: float

    def __init__(self, decay=None, *, decay_or_rank=None):
        x, f = _decay_from(decay, decay_or_rank, "ES_D_RTRL")
        object.__setattr__(self, "x_decay", x)
        object.__setattr__(self, "f_decay", f)


pp_prop = ES_D_RTRL


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
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 0:
            raise ValueError(f"Hybrid: argument 'memory_budget' must be an int >= 0 (bytes); got {memory_budget!r}")
        x, f = _decay_from(decay, decay_or_rank, "Hybrid")
        object.__setattr__(self, "memory_budget", memory_budget)
        object.__setattr__(self, "x_decay", x)
        object.__setattr__(self, "f_decay", f)


@dataclasses.dataclass(frozen=True)
class BPTT:
    """Backpropagation through time: the exact oracle (memory grows with T)."""


def param_trace_bytes(graph: ETraceGraph, op) -> int:
    """Bytes of the D-RTRL traces of one op (all groups it reaches)."""
    total = 0
    operands = op.operands
    for g in op.groups:
        grp = graph.groups[g]
        shapes = jax.eval_shape(
            lambda ops, grp=grp: op.rule.dr_zeros(ops, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype), operands
        )
        total += sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes))
    return total


def assign_modes(graph: ETraceGraph, spec) -> tuple[str, ...]:
    """One mode (``"param"``, ``"io"`` or ``"none"``) per op of ``graph``."""
    modes = []
    for op in graph.ops:
        if not op.groups:
            modes.append("none")
        elif isinstance(spec, D_RTRL) or op.rule.input_argnum is None:
            # ops without an input (element_wise) keep their exact O(B·K·N) trace always
            modes.append("param")
        elif isinstance(spec, ES_D_RTRL):
            modes.append("io")
        else:
            modes.append(None)
    if isinstance(spec, Hybrid):
        # element_wise traces are always kept; they count against the budget first
        budget = spec.memory_budget - sum(
            param_trace_bytes(graph, op) for j, op in enumerate(graph.ops) if modes[j] == "param"
        )
        order = sorted((param_trace_bytes(graph, graph.ops[j]), j) for j, m in enumerate(modes) if m is None)
        for cost, j in order:
            if cost <= budget:
                modes[j] = "param"
                budget -= cost
            else:
                modes[j] = "io"
    return tuple(modes)
