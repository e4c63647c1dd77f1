"""e-prop: eligibility propagation (Bellec et al. 2020, Nat. Commun. 11:3625).

For op ``y = op(x, W)`` reaching hidden group ``G`` (K states per neuron), e-prop
keeps D-RTRL's eligibility trace ``E`` (B, K, *W-layout) and contracts it with a
*learning signal* ``L_t`` of this step only:

.. math::
    E_t = D_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t, \\qquad
    \\bar E_t = κ \\bar E_{t-1} + E_t,

    g_t(W) = \\sum_b \\sum_k L_t[b,k] ∘ \\bar E_t[b,k]
             \\;+\\; \\sum_b \\sum_k L^{bypass}_t[b,k] ∘ \\bar E_{t-1}[b,k]
             \\;+\\; \\sum_b x_t[b] ⊗ ∂L_t/∂y_t[b]\\big|_{\\text{skipping G}}

with ``D_t`` the per-neuron K×K Jacobian block (recurrent input cut, as D-RTRL),
``κ = kappa_filter_decay`` (``κ = 0``: no filter, ``\\bar E = E``) and the learning
signal ``L_t`` from ``δ^{new}_t = ∂L_t/∂h_t`` (this step's loss, the group's other
new values held, see ``_factors``):

- ``feedback='symmetric'``: ``L_t = δ^{new}_t`` — for a readout ``out = z W_out`` this
  is ``ψ_t ∘ W_outᵀ (∂L_t/∂out)``, Bellec's ``L_t = B (y_t - y^*_t)`` with ``B = W_outᵀ``
  (MSE loss) times the pseudo-derivative, which e-prop puts in the trace and this
  form in the signal: the product is the same;
- ``feedback='random'`` (braintrace 0.2.8's semantics): per group and state, the
  signal normalised over the neurons and projected through a fixed random matrix
  ``B_G`` (N×N, entries ``0.1·N(0,1)`` drawn from ``random_feedback_key`` folded with
  the group index): ``L_t = B_Gᵀ δ_t / (‖δ_t‖ + 1e-8)``, the same map for the bypass
  signal (with the norm of both together). disttrace's rules see ``∂L/∂h`` per
  hidden group, not the output error, so ``B`` acts on the hidden signal (square), as
  in braintrace, and not on ``y - y^*`` as in the paper.

The last two terms are exact same-step paths that skip the group's new values (an
output read before a reset; ``_factors``' bypass signals); the first is all of the
rest. The bypass signal ``L^{bypass}`` is transformed like ``L_t``.

What is approximate, precisely:

1. the trace drops every cross-neuron term of the hidden Jacobian (``D_t`` is the
   per-neuron block with the recurrent input cut): the diagonal approximation;
2. the learning signal is this step's ``∂L_t/∂h_t``: no credit flows through a
   later step — including, unlike D-RTRL's previous-hidden form
   (``δ^{prev}_t · E_{t-1}``, ``_d_rtrl``), the one step of cross-neuron credit
   ``∂L_t/∂h_{t-1}`` carries through the recurrent weights. So e-prop equals
   D-RTRL (and BPTT) where the hidden Jacobian is block-diagonal and the readout
   memoryless, and is slightly further from BPTT than D-RTRL on recurrent layers
   (``tests/algorithms/test_eprop.py`` checks both; braintrace's ``EProp`` "reduces
   exactly to D_RTRL" because its D-RTRL uses this same current-step form);
3. ``κ > 0``: the filter is applied to ``E = ∂h/∂W``, as braintrace does; Bellec
   filters ``e = ψ·E`` (with the pseudo-derivative). It stands in for a leaky
   readout's memory (``κ`` = the readout's decay), which D-RTRL's per-layer trace
   does not see; the two agree where ``ψ`` is constant (a linear rate output);
4. ``feedback='random'``: not a gradient (feedback alignment).

``element_wise`` ops (no input) keep D-RTRL's exact rule, as in ES-D-RTRL.

Memory: O(B·K·|W|) per (op, group) for ``E``, twice that with ``κ > 0`` (``\\bar E``);
random feedback adds an N×N constant per group. Time per step: D-RTRL's.
Chunked form: none (``chunk_size`` runs step by step).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._d_rtrl import DRTRLRule
from disttrace.algorithms._rule import OpFactors, tree_add
from disttrace.checks import one_of, unit_interval

__all__ = ["EProp", "EPropRule", "EPropTrace", "key_data"]

_FEEDBACK = ("symmetric", "random")
# braintrace 0.2.8's FixedRandomFeedback scale and normalisation guard
_FEEDBACK_SCALE = 0.1
_NORM_EPS = 1e-8


def key_data(who: str, arg: str, key) -> tuple[int, ...]:
    """An int seed or a JAX PRNG key (raw or typed) as a hashable tuple of raw key words.

    Raises:
      ValueError: on anything else.
    """
    if isinstance(key, bool):
        raise ValueError(f"{who}: argument {arg!r} must be an int seed or a jax.random key; got {key!r}")
    if isinstance(key, int):
        return tuple(int(v) for v in jax.random.key_data(jax.random.key(key)).reshape(-1))
    try:
        arr = jnp.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    except (AttributeError, TypeError) as err:
        raise ValueError(f"{who}: argument {arg!r} must be an int seed or a jax.random key; got {key!r}") from err
    if arr.dtype != jnp.uint32 or arr.shape != (2,):
        raise ValueError(
            f"{who}: argument {arg!r} must be an int seed or a jax.random key (raw uint32 (2,) or typed); "
            f"got an array of dtype {arr.dtype} and shape {arr.shape}"
        )
    return tuple(int(v) for v in arr)


def raw_key(data: tuple[int, ...]) -> jax.Array:
    """The raw uint32 key of :func:`key_data`'s words."""
    return jnp.asarray(data, jnp.uint32)


class EPropTrace(NamedTuple):
    """e-prop state of one op.

    Attributes:
      e: TraceKey string -> the op rule's trace tuple for that group (as
        ``DRTRLTrace.e``), e.g. for a matmul ``((B, K, I, O),)``.
      e_bar: the κ-filtered traces, same keys and shapes; empty without a filter.
    """

    e: dict
    e_bar: dict

    sharding_roles = {"e": "trace", "e_bar": "trace"}


class EPropRule(DRTRLRule):
    """e-prop for one op (see the module docstring).

    Args:
      op, graph: the op and its graph.
      kappa: the filter's decay ``κ`` in [0, 1).
      feedback: per group of the op, ``None`` (symmetric) or its N×N random matrix.
    """

    name = "e_prop"
    dimension = "io"
    chunk_direct = False
    chunk_reads_weights = False

    def __init__(self, op, graph, kappa: float = 0.0, feedback: tuple | None = None):
        super().__init__(op, graph)
        self.chunked = False
        self.kappa = kappa
        self.feedback = (None,) * len(self.keys) if feedback is None else tuple(feedback)

    def init(self) -> EPropTrace:
        e = super().init().e
        return EPropTrace(e, dict(e) if self.kappa > 0 else {})

    def _signals(self, i: int, f: OpFactors):
        """(signal meeting ``Ē_t``, signal meeting ``Ē_{t-1}`` or ``None``) of group ``i``."""
        new, byp = f.delta_new[i], f.delta_bypass[i]
        mat = self.feedback[i]
        if mat is None:
            return new, byp
        b, k = new.shape[:2]
        flat = lambda s: s.reshape(b, k, -1)
        sq = jnp.sum(flat(new) ** 2, axis=-1, keepdims=True)
        if byp is not None:
            sq = sq + jnp.sum(flat(byp) ** 2, axis=-1, keepdims=True)
        scale = 1.0 / (jnp.sqrt(sq) + _NORM_EPS)
        project = lambda s: jnp.einsum("bkl,lm->bkm", flat(s) * scale, mat.astype(s.dtype)).reshape(s.shape)
        return project(new), None if byp is None else project(byp)

    def update(self, state: EPropTrace, f: OpFactors) -> tuple[tuple, EPropTrace]:
        rule = self.op.rule
        to_n = functools.partial(rule.to_trace_neurons, operands=f.operands)
        grad, e, e_bar = None, dict(state.e), dict(state.e_bar)
        for i, key in enumerate(self.keys):
            prev = state.e_bar[key] if self.kappa > 0 else state.e[key]
            e[key] = tree_add(rule.dr_decay(to_n(f.jac[i]), state.e[key]), rule.dr_outer(f.g[i], f.operands))
            now = e[key]
            if self.kappa > 0:
                now = e_bar[key] = tuple(self.kappa * a + b for a, b in zip(prev, e[key]))
            sig, byp = self._signals(i, f)
            gk = rule.dr_contract(to_n(sig), now)
            if byp is not None:  # the part of δ^prev that skips h_t meets the previous trace
                gk = tree_add(gk, rule.dr_contract(to_n(byp), prev))
            grad = gk if grad is None else tree_add(grad, gk)
        if f.y_bypass is not None:  # same-step paths that skip the op's groups: exact
            grad = tree_add(grad, rule.es_grad(rule.es_input(f.operands), f.y_bypass, f.operands))
        return grad, EPropTrace(e, e_bar)


def feedback_matrices(graph, key: tuple[int, ...]) -> dict:
    """Group index -> its fixed random feedback matrix (N, N), N the group's neurons."""
    mats = {}
    for grp in graph.groups:
        n = math.prod(grp.neuron_shape)
        sub = jax.random.fold_in(raw_key(key), grp.index)
        mats[grp.index] = _FEEDBACK_SCALE * jax.random.normal(sub, (n, n), grp.dtype)
    return mats


@dataclasses.dataclass(frozen=True, init=False)
class EProp:
    """e-prop (Bellec et al. 2020): D-RTRL's eligibility traces times this step's learning signal.

    Args:
      feedback: ``'symmetric'`` (the loss gradient) or ``'random'`` (a fixed random
        projection of it, see the module docstring).
      kappa_filter_decay: ``κ`` in [0, 1) of the eligibility traces' low-pass filter
        (0: none).
      random_feedback_key: int seed or ``jax.random`` key of the random matrices;
        required with ``feedback='random'``, not allowed otherwise.

    Raises:
      ValueError: on a bad argument, or a missing or superfluous key.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.LIFLayer(3, 4, recurrent=True)
      >>> learner = dt.compile(net, dt.EProp(kappa_filter_decay=0.5), jnp.zeros((2, 3)), batch_size=2)
      >>> learner.modes
      ('io',)
    """

    feedback: str
    kappa_filter_decay: float
    random_feedback_key: tuple[int, ...] | None

    def __init__(self, feedback: str = "symmetric", kappa_filter_decay: float = 0.0, random_feedback_key=None):
        feedback = one_of("EProp", "feedback", feedback, _FEEDBACK)
        kappa = unit_interval("EProp", "kappa_filter_decay", kappa_filter_decay)
        if feedback == "random" and random_feedback_key is None:
            raise ValueError("EProp: feedback='random' needs random_feedback_key=<int seed or jax.random key>")
        if feedback == "symmetric" and random_feedback_key is not None:
            raise ValueError("EProp: argument 'random_feedback_key' is only used with feedback='random'; got feedback='symmetric'")
        key = None if random_feedback_key is None else key_data("EProp", "random_feedback_key", random_feedback_key)
        object.__setattr__(self, "feedback", feedback)
        object.__setattr__(self, "kappa_filter_decay", kappa)
        object.__setattr__(self, "random_feedback_key", key)

    def rules(self, graph) -> tuple:
        """An :class:`EPropRule` per op with an input, D-RTRL for ``element_wise`` ops."""
        mats = feedback_matrices(graph, self.random_feedback_key) if self.feedback == "random" else None
        rules = []
        for op in graph.ops:
            if not op.groups:
                rules.append(None)
            elif op.rule.input_argnum is None:
                rules.append(DRTRLRule(op, graph))
            else:
                fb = None if mats is None else tuple(mats[g] for g in op.groups)
                rules.append(EPropRule(op, graph, self.kappa_filter_decay, fb))
        return tuple(rules)
