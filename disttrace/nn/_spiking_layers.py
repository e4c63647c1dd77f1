"""Spiking and leaky-rate layers that own their weights (input and optional recurrent).

For neurons without weights of their own (brainpy/braintrace style, driven by a
separate ``Linear``/``Conv``) see ``IF``, ``LIF``, ``ALIF`` in ``_spiking``.

Every layer owns its input weight (and optionally a recurrent weight), applied with
``ops.matmul`` to ``[x_t, s_{t-1}]``, and learnable per-neuron parameters go through
``ops.element_wise``. State is the membrane potential *before* the reset, so the
previous spikes are recomputed from it and a soft or hard reset is applied at the
start of the next step; the hidden dynamics are element-wise per neuron, which makes
D-RTRL exact for layers without recurrent weights.

LIF (one state V, threshold ``θ``, ``α = exp(-dt/τ)``):

.. math::
    s_{t-1} = H(V_{t-1} - θ),\\quad
    V_t = α\\,(V_{t-1} - θ s_{t-1}) + [x_t, s_{t-1}] W \\quad(\\text{soft}),\\quad
    V_t = α V_{t-1}(1 - s_{t-1}) + [x_t, s_{t-1}] W \\quad(\\text{hard})

ALIF (two states V, a; threshold ``θ + β a``; a 2-state hidden group):

.. math::
    s_{t-1} = H(V_{t-1} - θ - β a_{t-1}),\\quad a_t = ρ a_{t-1} + s_{t-1},\\quad
    V_t = α\\,(V_{t-1} - (θ + β a_{t-1}) s_{t-1}) + [x_t, s_{t-1}] W

The layer output is ``s_t = H(V_t - θ_t)``.
"""

from __future__ import annotations

import math

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._surrogate import spike
from disttrace.ops import element_wise, matmul

__all__ = ["ALIFLayer", "LIFLayer", "LeakyRate"]


class _SpikingLayer(brainstate.nn.Module):
    def __init__(self, who, n_in, n_rec, tau, v_th, recurrent, reset, surrogate, surrogate_scale, w_scale, name):
        super().__init__(name=name)
        check.positive_int(who, "n_in", n_in), check.positive_int(who, "n_rec", n_rec)
        if reset not in ("soft", "hard"):
            raise ValueError(f"{who}: argument 'reset' must be 'soft' or 'hard'; got {reset!r}")
        if not tau > 0:
            raise ValueError(f"{who}: argument 'tau' must be > 0 (time steps); got {tau!r}")
        self.who, self.n_in, self.n_rec = who, n_in, n_rec
        self.alpha = math.exp(-1.0 / tau)
        self.v_th, self.recurrent, self.reset = float(v_th), bool(recurrent), reset
        self.surrogate, self.surrogate_scale = surrogate, surrogate_scale
        fan_in = n_in + (n_rec if recurrent else 0)
        self.weight = brainstate.ParamState(
            brainstate.random.normal(0.0, w_scale / math.sqrt(fan_in), (fan_in, n_rec))
        )

    def _drive(self, x, s_prev):
        check.features(self.who, x, self.n_in)
        inp = jnp.concatenate([x, s_prev.astype(x.dtype)], axis=-1) if self.recurrent else x
        return matmul(inp, self.weight.value)

    def _spike(self, dist):
        return spike(dist / self.v_th, self.surrogate, self.surrogate_scale)


class LIFLayer(_SpikingLayer):
    """Leaky integrate-and-fire layer (see the module docstring).

    Args:
      n_in: input size I.
      n_rec: number of neurons N.
      tau: membrane time constant in steps.
      v_th: threshold.
      recurrent: add a recurrent weight (N, N) from the previous spikes.
      reset: ``"soft"`` (subtract) or ``"hard"`` (to zero).
      surrogate, surrogate_scale: surrogate gradient (``nn.spike``).
      w_scale: weights are normal with std ``w_scale / sqrt(fan_in)``.

    State: ``V`` (B, N), a ``HiddenState``. Input (B, I); output spikes (B, N).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> lif = dt.nn.LIFLayer(3, 5)
      >>> brainstate.nn.init_all_states(lif, batch_size=2)
      LIFLayer(...)
      >>> lif(jnp.ones((2, 3))).shape
      (2, 5)
    """

    def __init__(self, n_in, n_rec, tau=10.0, v_th=1.0, recurrent=False, reset="soft",
                 surrogate="fast_sigmoid", surrogate_scale=4.0, w_scale=1.0, name=None):
        super().__init__("LIFLayer", n_in, n_rec, tau, v_th, recurrent, reset, surrogate, surrogate_scale, w_scale, name)

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, self.n_rec)))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``V`` back to zero in the existing state (``brainstate.nn.reset_all_states``)."""
        self.V.value = jnp.zeros((batch_size, self.n_rec))

    def update(self, x):
        v = self.V.value
        s_prev = self._spike(v - self.v_th)
        if self.reset == "soft":
            v = self.alpha * (v - self.v_th * s_prev)
        else:
            v = self.alpha * v * (1.0 - jax.lax.stop_gradient(s_prev))
        v = v + self._drive(x, s_prev)
        self.V.value = v
        return self._spike(v - self.v_th)


class ALIFLayer(_SpikingLayer):
    """Adaptive LIF: the threshold rises by ``beta`` per spike and decays with ``tau_a``.

    Args: as :class:`LIFLayer`, plus ``tau_a`` (adaptation time constant, steps) and
      ``beta`` (adaptation strength).

    State: ``V`` and ``a`` (B, N), one 2-state hidden group.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> alif = dt.nn.ALIFLayer(3, 5)
      >>> brainstate.nn.init_all_states(alif, batch_size=2)
      ALIFLayer(...)
      >>> alif(jnp.ones((2, 3))).shape
      (2, 5)
    """

    def __init__(self, n_in, n_rec, tau=10.0, tau_a=50.0, beta=0.5, v_th=1.0, recurrent=False,
                 surrogate="fast_sigmoid", surrogate_scale=4.0, w_scale=1.0, name=None):
        super().__init__("ALIFLayer", n_in, n_rec, tau, v_th, recurrent, "soft", surrogate, surrogate_scale, w_scale, name)
        if not tau_a > 0:
            raise ValueError(f"ALIFLayer: argument 'tau_a' must be > 0 (time steps); got {tau_a!r}")
        self.rho, self.beta = math.exp(-1.0 / tau_a), float(beta)

    def init_state(self, batch_size=None, **kwargs):
        dt = jnp.zeros(()).dtype
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, self.n_rec), dt))
        self.a = brainstate.HiddenState(jnp.zeros((batch_size, self.n_rec), dt))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``V`` and the adaptation ``a`` back to zero in the existing states."""
        dt = jnp.zeros(()).dtype
        self.V.value = jnp.zeros((batch_size, self.n_rec), dt)
        self.a.value = jnp.zeros((batch_size, self.n_rec), dt)

    def update(self, x):
        v, a = self.V.value, self.a.value
        th = self.v_th + self.beta * a
        s_prev = self._spike(v - th)
        a = self.rho * a + s_prev
        v = self.alpha * (v - th * s_prev) + self._drive(x, s_prev)
        self.V.value, self.a.value = v, a
        return self._spike(v - (self.v_th + self.beta * a))


class LeakyRate(brainstate.nn.Module):
    """Leaky rate units with a learnable per-neuron decay.

    .. math::
        h_t = σ(d) ∘ h_{t-1} + \\tanh(x_t W + b)

    ``d`` (N,) is learned through ``ops.element_wise``; without recurrent weights
    the dynamics are element-wise, so D-RTRL is exact.

    State: ``h`` (B, N). Input (B, I); output ``h_t``.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> layer = dt.nn.LeakyRate(3, 4)
      >>> brainstate.nn.init_all_states(layer, batch_size=2)
      LeakyRate(...)
      >>> layer(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(self, n_in, n_rec, name=None):
        super().__init__(name=name)
        check.positive_int("LeakyRate", "n_in", n_in), check.positive_int("LeakyRate", "n_rec", n_rec)
        self.n_in, self.n_rec = n_in, n_rec
        self.weight = brainstate.ParamState(
            {
                "weight": brainstate.random.normal(0.0, 1.0 / math.sqrt(n_in), (n_in, n_rec)),
                "bias": jnp.zeros((n_rec,)),
            }
        )
        self.decay = brainstate.ParamState(jnp.linspace(-1.0, 3.0, n_rec))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, self.n_rec)))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``h`` back to zero in the existing state."""
        self.h.value = jnp.zeros((batch_size, self.n_rec))

    def update(self, x):
        check.features("LeakyRate", x, self.n_in)
        w = self.weight.value
        alpha = element_wise(self.decay.value, jax.nn.sigmoid)
        self.h.value = alpha * self.h.value + jnp.tanh(matmul(x, w["weight"], w["bias"]))
        return self.h.value
