"""UORO: unbiased online recurrent optimisation (Tallec & Ollivier 2018, ICLR, arXiv:1702.05043).

RTRL's influence matrix ``M_t = J_t M_{t-1} + I_t`` (``I_t = ∂h_t/∂θ``, ``_rtrl``)
replaced by a rank-one estimate ``M_t ≈ s̃_t θ̃_tᵀ``, re-randomised every step with
random signs ``ν_t`` (±1, one per hidden value) so that it is right in expectation:

.. math::
    s̃_t = ρ_0 \\, J_t s̃_{t-1} + ρ_1 \\, ν_t, \\qquad
    θ̃_t = θ̃_{t-1} / ρ_0 + (ν_tᵀ I_t) / ρ_1,

    ρ_0 = \\sqrt{\\frac{‖θ̃_{t-1}‖ + ε}{‖J_t s̃_{t-1}‖ + ε}}, \\qquad
    ρ_1 = \\sqrt{\\frac{‖ν_tᵀ I_t‖ + ε}{‖ν_t‖ + ε}}.

Unbiased: ``s̃_t θ̃_tᵀ = J s̃ θ̃ᵀ + ν νᵀ I + (ρ_0/ρ_1) J s̃ (νᵀI) + (ρ_1/ρ_0) ν θ̃ᵀ``;
``E[ν νᵀ] = 1`` and the cross terms are odd in ``ν`` (``ρ_1`` is even), so
``E[s̃_t θ̃_tᵀ | past] = J_t s̃_{t-1} θ̃_{t-1}ᵀ + I_t`` and, by induction,
``E[s̃_t θ̃_tᵀ] = M_t``. The ρ's minimise the variance of the estimate (they balance
the norms of the two factors). The gradient of step t is RTRL's previous-hidden form
with the estimate,

.. math::
    g_t = (δ^{prev}_t · s̃_{t-1}) \\, θ̃_{t-1} + ∂L_t/∂θ|_{direct},

linear in the estimate, so unbiased for RTRL's (= BPTT's) gradient — for any model,
cross-neuron and cross-layer terms included. (braintrace 0.2.8's UORO estimates the
within-group influence only; this is the paper's, over the whole model.)

The batch is one system: ``h`` stacks the batch rows (B·H values), so one ``s̃``
(B, H) and one ``θ̃`` (|θ|) serve the whole batch (``M`` of the batch stacks the
rows' matrices; the estimate is unbiased for it, with a variance that grows with B).
Per step: one ``jax.linearize`` of the step, one JVP (``J s̃``) and its transpose
(``νᵀ I``). Memory O(B·H + |θ|) (``influence_bytes``) — less than one D-RTRL trace.

``ν`` is drawn from a key kept in the state (``state.m.key``, raw key data, split
every step), seeded by ``projection_key``: runs repeat bit for bit, a checkpoint
continues the same draws, and ``vmap`` over states with different keys averages
estimates. ``chunk_size`` is accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._eprop import key_data, raw_key
from disttrace.algorithms._rtrl import RTRL, RTRLLearner, influence_leaves
from disttrace.checks import non_negative_int, number
from disttrace.compiler import run_step

__all__ = ["UORO", "RandomProjectionVjpAlgorithm", "UOROLearner", "UOROTrace"]


class UOROTrace(NamedTuple):
    """The rank-one influence estimate (``RTRLState.m`` of a UORO learner).

    Attributes:
      s: one array per hidden state (graph order), (B, N_i): ``s̃``.
      theta: influence leaf name (as ``RTRLState.m``) -> (P_j,): ``θ̃``.
      key: (2,) uint32, raw key data of the next draw of ``ν``.
    """

    s: tuple
    theta: dict
    key: jax.Array

    sharding_roles = {"s": "x_trace", "theta": "replicated", "key": "rng"}


class UOROLearner(RTRLLearner):
    """RTRL with the rank-one UORO estimate of the influence matrix (see the module docstring).

    Use ``disttrace.compile(model, disttrace.UORO, ...)`` to make one.

    Raises:
      ValueError: as :class:`~disttrace.algorithms.RTRLLearner` (the budget applies to
        the estimate's bytes).
    """

    who = "UORO"

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        params = binding.values()[0]
        theta = jax.tree.leaves(params)
        self._leaf_dtypes = {name: jnp.result_type(theta[j]) for j, name in influence_leaves(graph, params)}
        super().__init__(model, graph, binding, spec, loss_fn)

    def influence_bytes(self) -> int:
        """Bytes of the estimate: ``s̃`` (B·H values), ``θ̃`` (|θ| values) and the key."""
        b = self.graph.batch_size
        s = sum(b * n * jnp.dtype(dt).itemsize for n, dt in zip(self._hidden_sizes, self._hidden_dtypes))
        theta = sum(math.prod(shape) * jnp.dtype(self._leaf_dtypes[name]).itemsize for name, shape in self._leaf_shapes.items())
        return s + theta + 8

    def _zero_m(self) -> UOROTrace:
        b = self.graph.batch_size
        s = tuple(jnp.zeros((b, n), dt) for n, dt in zip(self._hidden_sizes, self._hidden_dtypes))
        theta = {name: jnp.zeros((math.prod(shape),), self._leaf_dtypes[name]) for name, shape in self._leaf_shapes.items()}
        return UOROTrace(s, theta, raw_key(self.spec.projection_key))

    def _propagate(self, theta, hidden, aux_leaves, args, m: UOROTrace) -> UOROTrace:
        idx = [j for j, _ in self.leaves]
        names = [name for _, name in self.leaves]
        eps = self.spec.projection_eps

        def h_map(th_sub, h):
            th = list(theta)
            for k, j in enumerate(idx):
                th[j] = th_sub[k]
            return run_step(self.graph, th, h, aux_leaves, args)[1]

        th0 = [theta[j] for j in idx]
        _, lin = jax.linearize(h_map, th0, list(hidden))
        zeros_th = [jnp.zeros_like(t) for t in th0]
        zeros_h = [jnp.zeros_like(h) for h in hidden]
        js = [o.reshape(o.shape[0], -1) for o in lin(zeros_th, [s.reshape(h.shape) for s, h in zip(m.s, hidden)])]
        key, sub = jax.random.split(m.key)
        nu = [jax.random.rademacher(jax.random.fold_in(sub, i), s.shape, s.dtype) for i, s in enumerate(m.s)]
        (nu_i,) = jax.linear_transpose(lambda t: lin(t, zeros_h), th0)([v.reshape(h.shape) for v, h in zip(nu, hidden)])
        nu_i = [v.reshape(-1) for v in nu_i]
        norm = lambda xs: jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in xs))
        th_old = [m.theta[name] for name in names]
        rho0 = jnp.sqrt((norm(th_old) + eps) / (norm(js) + eps))
        rho1 = jnp.sqrt((norm(nu_i) + eps) / (norm(nu) + eps))
        s = tuple(rho0.astype(a.dtype) * a + rho1.astype(v.dtype) * v for a, v in zip(js, nu))
        new_theta = {
            name: t / rho0.astype(t.dtype) + (v / rho1.astype(v.dtype)).astype(t.dtype)
            for name, t, v in zip(names, th_old, nu_i)
        }
        return UOROTrace(s, new_theta, key)

    def _contract(self, theta, delta: list, m: UOROTrace) -> list:
        """``(Σ_b δ[b] · s̃[b]) θ̃`` per influence leaf (zeros for the others)."""
        b = self.graph.batch_size
        c = sum(jnp.sum(d.reshape(b, -1) * s) for d, s in zip(delta, m.s))
        grads = [jnp.zeros_like(p) for p in theta]
        for j, name in self.leaves:
            grads[j] = (c.astype(m.theta[name].dtype) * m.theta[name]).reshape(theta[j].shape).astype(theta[j].dtype)
        return grads


@dataclasses.dataclass(frozen=True, init=False)
class UORO:
    """UORO: an unbiased rank-one estimate of RTRL's influence matrix (see the module docstring).

    Args:
      projection_key: int seed or ``jax.random`` key of the random signs (default 42,
        as braintrace); two keys give two estimates of the same gradient.
      projection_eps: ``ε`` added to every norm of the ρ ratios (>= 0, default 1e-12).
      memory_budget: bytes the estimate may take, as for :class:`~disttrace.RTRL`.

    Raises:
      ValueError: on a bad argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.LIFLayer(3, 4, recurrent=True)
      >>> learner = dt.compile(net, dt.UORO(projection_key=0), jnp.zeros((2, 3)), batch_size=2)
      >>> learner.influence_bytes()  # s (2·4) + θ̃ ((3+4)·4) float32 values + the key
      152
    """

    projection_key: tuple[int, ...]
    projection_eps: float
    memory_budget: int

    def __init__(self, projection_key=42, projection_eps: float = 1e-12, memory_budget: int = 2**30):
        object.__setattr__(self, "projection_key", key_data("UORO", "projection_key", projection_key))
        object.__setattr__(self, "projection_eps", number("UORO", "projection_eps", projection_eps, low=0.0))
        object.__setattr__(self, "memory_budget", non_negative_int("UORO", "memory_budget", memory_budget))

    def learner(self, model, graph, binding, loss_fn=None) -> UOROLearner:
        """The learner ``disttrace.compile`` returns for this spec."""
        return UOROLearner(model, graph, binding, self, loss_fn)

    rules = RTRL.rules


RandomProjectionVjpAlgorithm = UORO
"""braintrace's name of the random-projection family UORO belongs to."""
