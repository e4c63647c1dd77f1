"""ES-D-RTRL / pp-prop: traces in the input/output dimension, O(B·(I+O)) per op.

The D-RTRL trace ``E_t`` of op ``y = op(x, W)`` is factorised as an input trace times
an output trace (normalisation and bias correction as braintrace 0.2.8's ``pp_prop``,
Nat. Commun. 2026):

.. math::
    ε^x_t = α_x ε^x_{t-1} + x_t, \\qquad ε^f_t = α_f (D_t ε^f_{t-1}) + (1-α_f)\\, ∂h_t/∂y_t,

    g_t(W) = \\sum_b ε^x_t[b] ⊗ \\Big(\\sum_k δ^{new}_t[b,k] ε^f_t[b,k]\\Big) / c_t,
    \\qquad c_t = 1 - α_f^{n_t+1}

where ``n_t`` counts *time steps* seen (braintrace counts calls, so its chunked runs
are biased: F-30); like braintrace, ``c_t = 1`` once ``n_t >= 1000``, and like braintrace
the input trace has no ``(1-α_x)`` factor (the bias correction of ``ε^f`` absorbs the
scale). ``δ^{new}`` holds a group's other new values fixed (``_factors``). Where the
compiler finds bypass paths (``compiler.bypass_groups`` / ``bypass_ops``), two exact
terms are added:

.. math::
    \\sum_b ε^x_{t-1}[b] ⊗ \\Big(\\sum_k δ^{bypass}_t[b,k] ε^f_{t-1}[b,k]\\Big) / c_{t-1}
    \\;+\\; \\sum_b x_t[b] ⊗ ∂L_t/∂y_t[b]\\big|_{\\text{skipping the op's groups}}

Chunked form: each term above is the product of two per-step factors (``ε^x_t`` or
``x_t``, and a signal), so a chunk keeps them and contracts them in one matrix
product with time folded into the batch (ops whose ``TraceOpRule.es_foldable``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._d_rtrl import DRTRLRule
from disttrace.algorithms._rule import OpFactors, tree_add
from disttrace.ops import apply_block

__all__ = ["ES_D_RTRL", "ESTrace", "ESRule", "decay_pair", "pp_prop"]

# braintrace's pp_prop stops correcting the bias after this many steps.
BIAS_CORRECTION_STEPS = 1000


def decay_pair(decay, decay_or_rank, who: str) -> tuple[float, float]:
    """(x-side, f-side) decays from a float decay, an int rank, or a pair.

    Raises:
      ValueError: on both arguments given, or a value out of range or of a wrong type.
    """
    if decay is not None and decay_or_rank is not None:
        raise ValueError(f"{who}: give 'decay' or 'decay_or_rank', not both")
    value = decay if decay is not None else decay_or_rank
    name = "decay" if decay is not None else "decay_or_rank"
    if value is None:
        value = 0.9
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{who}: argument {name!r} as a pair must be (x_decay, f_decay); got {value!r}")
        return decay_pair(value[0], None, who)[0], decay_pair(value[1], None, who)[1]
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


def bias_correction(t, f_decay: float, dtype):
    """``1 - α_f^(n+1)`` for ``n = t`` steps seen (1 after 1000 steps, as braintrace)."""
    n = jnp.maximum(t, 0).astype(dtype)
    corr = jnp.where(t < BIAS_CORRECTION_STEPS, 1.0 - f_decay ** (n + 1.0), 1.0)
    return jnp.maximum(corr, 1e-8)


class ESTrace(NamedTuple):
    """ES-D-RTRL state of one op.

    Attributes:
      x: input trace ``ε^x`` (B, I...) (the op rule's ``es_input`` layout).
      f: TraceKey string -> output trace ``ε^f`` of that group, (B, K, N...).
    """

    x: jax.Array
    f: dict

    sharding_roles = {"x": "x_trace", "f": "trace"}


class ESRule:
    """ES-D-RTRL for one op (see the module docstring).

    Args:
      op, graph: the op and its graph.
      x_decay, f_decay: ``α_x`` and ``α_f`` in [0, 1).
    """

    name = "es_d_rtrl"
    dimension = "io"
    chunk_direct = False
    chunk_reads_weights = True

    def __init__(self, op, graph, x_decay: float, f_decay: float):
        self.op = op
        self.groups = tuple(graph.groups[g] for g in op.groups)
        self.keys = tuple(graph.trace_key(op, g) for g in op.groups)
        self.x_decay, self.f_decay = x_decay, f_decay
        self.chunked = bool(op.rule.es_foldable)

    @functools.cached_property
    def _x_shape(self) -> jax.ShapeDtypeStruct:
        return jax.eval_shape(self.op.rule.es_input, self.op.operands)  # traced once, not per trial

    def init(self) -> ESTrace:
        s = self._x_shape
        f = {key: jnp.zeros((grp.shape[0], grp.k, *grp.neuron_shape), grp.dtype) for key, grp in zip(self.keys, self.groups)}
        return ESTrace(jnp.zeros(s.shape, s.dtype), f)

    def zero_grad(self) -> tuple:
        rule, grp = self.op.rule, self.groups[0]

        def probe(operands):
            signal = jnp.zeros((grp.shape[0], *grp.neuron_shape), grp.dtype)
            return rule.es_grad(rule.es_input(operands), signal, operands)

        return tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(probe, self.op.operands))

    def _terms(self, state: ESTrace, f: OpFactors) -> tuple[list, ESTrace]:
        """The step's (input factor, signal) pairs and the new traces."""
        rule = self.op.rule
        x_in = rule.es_input(f.operands)
        x = self.x_decay * state.x + x_in.astype(state.x.dtype)
        traces, now, before = dict(state.f), None, None
        for i, key in enumerate(self.keys):
            ef_prev = traces[key]
            ef = self.f_decay * apply_block(f.jac[i], ef_prev) + (1.0 - self.f_decay) * f.g[i]
            traces[key] = ef
            s_now = jnp.sum(f.delta_new[i] * ef, axis=1)
            now = s_now if now is None else now + s_now
            if f.delta_bypass[i] is not None:
                s_before = jnp.sum(f.delta_bypass[i] * ef_prev, axis=1)
                before = s_before if before is None else before + s_before
        # δ^new meets the traces that include step t; the part of the signal that
        # bypasses h_t meets the previous traces (corrected with the previous count).
        terms = [(x, now / bias_correction(f.t, self.f_decay, now.dtype))]
        if before is not None:
            terms.append((state.x, before / bias_correction(f.t - 1, self.f_decay, now.dtype)))
        if f.y_bypass is not None:  # same-step paths that skip the op's groups: exact
            terms.append((x_in, f.y_bypass))
        return terms, ESTrace(x, traces)

    def update(self, state: ESTrace, f: OpFactors) -> tuple[tuple, ESTrace]:
        terms, state = self._terms(state, f)
        grads = [self.op.rule.es_grad(a, b, f.operands) for a, b in terms]
        return functools.reduce(tree_add, grads), state

    # ---- chunked form: traces advance per step, the contractions wait for the chunk end
    def chunk_step(self, state: ESTrace, f: OpFactors):
        terms, state = self._terms(state, f)
        return state, terms

    def chunk_end(self, start: ESTrace, state: ESTrace, kept, operands) -> tuple[tuple, ESTrace]:
        """Contracts the chunk's stacked factor pairs, (U, B, ...) each, in one product per pair.

        ``es_grad`` sums over its leading axis, so time is folded into the batch;
        ``operands`` supply the weights and constant index arrays the op rule reads.
        """
        del start
        fold = lambda a: a.reshape((-1,) + a.shape[2:])
        grads = [self.op.rule.es_grad(fold(a), fold(b), operands) for a, b in kept]
        return functools.reduce(tree_add, grads), state


def es_or_exact(op, graph, x_decay: float, f_decay: float):
    """The ES rule for ``op``, or D-RTRL where the op has no input (``element_wise``:
    its exact O(B·K·N) trace is as small as an IO trace), or ``None`` (no hidden group)."""
    if not op.groups:
        return None
    if op.rule.input_argnum is None:
        return DRTRLRule(op, graph)
    return ESRule(op, graph, x_decay, f_decay)


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
        x, f = decay_pair(decay, decay_or_rank, "ES_D_RTRL")
        object.__setattr__(self, "x_decay", x)
        object.__setattr__(self, "f_decay", f)

    def rules(self, graph) -> tuple:
        """An :class:`ESRule` per op with an input, D-RTRL for ``element_wise`` ops."""
        return tuple(es_or_exact(op, graph, self.x_decay, self.f_decay) for op in graph.ops)


pp_prop = ES_D_RTRL
