"""Readouts: a leaky rate integrator and a leaky spiking readout, each with its weight
going through ``ops.matmul``.

.. math::
    \\text{LeakyRateReadout:}\\quad r_t = κ r_{t-1} + x_t W, \\qquad κ = \\exp(-1/τ)

    \\text{LeakySpikeReadout:}\\quad V_t = α V'_{t-1} + (1-α)\\, x_t W,\\quad s_t = H(V_t - V_{th})

With ``tau=0`` the rate readout is memoryless (``r_t = x_t W``) and has no hidden
state, which keeps D-RTRL exact for the layer before it.
"""

from __future__ import annotations

import math

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._spiking import _spike_fn
from disttrace.ops import matmul

__all__ = ["LeakyRateReadout", "LeakySpikeReadout"]

_ZERO = brainstate.nn.init.ZeroInit()


def _weight(who, in_size, out_size, w_init, w_scale):
    n_in = check.size(who, "in_size", in_size)[-1]
    n_out = check.size(who, "out_size", out_size)[-1]
    if w_init is None:  # normal with std w_scale / sqrt(fan_in)
        return n_in, n_out, brainstate.random.normal(0.0, w_scale / math.sqrt(n_in), (n_in, n_out))
    return n_in, n_out, brainstate.nn.init.param(w_init, (n_in, n_out))


class LeakyRateReadout(brainstate.nn.Module):
    """Leaky (or, with ``tau=0``, memoryless) linear readout.

    Args:
      in_size: input size I.
      out_size: output size O.
      tau: time constant (steps or a time quantity); 0 for no memory.
      w_init: initializer of W (I, O); default normal with std ``w_scale / sqrt(I)``.
      r_init: initializer of the state ``r``.
      name: module name.
      w_scale: see ``w_init``.

    State: ``r`` (B, O) (none when ``tau=0``). Input (B, I) -> (B, O).

    Attributes (braintrace's names): ``tau`` (the time constant as given), ``decay``
    (κ, a float; 0 when ``tau=0``), ``W`` (the weight's ``ParamState``, the same object
    as ``weight``: the compiler and checkpoints see it under ``weight`` only).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> ro = dt.nn.LeakyRateReadout(4, 2, tau=5.0)
      >>> brainstate.nn.init_all_states(ro, batch_size=3)
      LeakyRateReadout(...)
      >>> ro(jnp.ones((3, 4))).shape
      (3, 2)
    """

    def __init__(self, in_size, out_size, tau=5.0, w_init=None, r_init=_ZERO, name=None, *, w_scale: float = 1.0):
        super().__init__(name=name)
        self.n_inputs, self.n_outputs, w = _weight("LeakyRateReadout", in_size, out_size, w_init, w_scale)
        self.in_size, self.out_size = (self.n_inputs,), (self.n_outputs,)
        self.tau = tau
        steps = check.steps("LeakyRateReadout", "tau", tau, allow_zero=True)
        self.kappa = math.exp(-1.0 / steps) if steps > 0 else 0.0
        self.r_init = r_init
        self.weight = brainstate.ParamState(w)

    # braintrace's names, as properties: an instance attribute would be a second path to
    # the same state in brainstate's graph (which sorts names, so 'W' would win).
    @property
    def decay(self) -> float:
        """κ = exp(-1/τ), braintrace's name (0 for ``tau=0``)."""
        return self.kappa

    @property
    def W(self) -> brainstate.ParamState:
        """The weight (I, O), braintrace's name for ``weight``."""
        return self.weight

    def _r0(self, batch_size):
        shape = self.out_size if batch_size is None else (batch_size, *self.out_size)
        return brainstate.nn.init.param(self.r_init, shape)

    def init_state(self, batch_size=None, **kwargs):
        if self.kappa > 0:
            self.r = brainstate.HiddenState(self._r0(batch_size))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``r`` back to ``r_init`` (shape (batch_size, O) or (O,)); no-op for ``tau=0``."""
        if self.kappa > 0:
            self.r.value = self._r0(batch_size)

    def update(self, x):
        x = jnp.asarray(x)
        check.features("LeakyRateReadout", x, self.n_inputs)
        y = matmul(x.astype(self.weight.value.dtype), self.weight.value)
        if self.kappa == 0.0:
            return y
        self.r.value = self.kappa * self.r.value + y
        return self.r.value


class LeakySpikeReadout(brainstate.nn.Module):
    """A layer of LIF output neurons driven by ``x W`` (see the module docstring).

    Args:
      in_size: input size I.
      out_size: number of output neurons O.
      tau: membrane time constant (steps or a time quantity).
      V_th: threshold (reset to 0).
      w_init: initializer of W (I, O); default normal with std ``w_scale / sqrt(I)``.
      V_initializer: initializer of ``V``.
      spk_fun: surrogate name or callable; spk_reset: ``'soft'`` or ``'hard'``.
      name: module name; w_scale: see ``w_init``.

    State: ``V`` (B, O). Input (B, I) -> output spikes (B, O).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> ro = dt.nn.LeakySpikeReadout(4, 2)
      >>> brainstate.nn.init_all_states(ro, batch_size=3)
      LeakySpikeReadout(...)
      >>> ro(jnp.ones((3, 4))).shape
      (3, 2)
    """

    def __init__(self, in_size, out_size, tau=5.0, V_th=1.0, w_init=None, V_initializer=_ZERO,
                 spk_fun="fast_sigmoid", spk_reset="soft", name=None, *, w_scale: float = 1.0):
        super().__init__(name=name)
        who = "LeakySpikeReadout"
        self.n_inputs, self.n_outputs, w = _weight(who, in_size, out_size, w_init, w_scale)
        self.in_size, self.out_size = (self.n_inputs,), (self.n_outputs,)
        self.alpha = math.exp(-1.0 / check.steps(who, "tau", tau))
        if not V_th > 0:
            raise ValueError(f"{who}: argument 'V_th' must be > 0; got {V_th!r}")
        if spk_reset not in ("soft", "hard"):
            raise ValueError(f"{who}: argument 'spk_reset' must be 'soft' or 'hard'; got {spk_reset!r}")
        self.V_th, self.spk_reset, self.V_initializer = float(V_th), spk_reset, V_initializer
        self.spk_fun = _spike_fn(who, spk_fun)
        self.weight = brainstate.ParamState(w)

    def _v0(self, batch_size):
        shape = self.out_size if batch_size is None else (batch_size, *self.out_size)
        return brainstate.nn.init.param(self.V_initializer, shape)

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(self._v0(batch_size))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``V`` back to ``V_initializer`` (shape (batch_size, O) or (O,))."""
        self.V.value = self._v0(batch_size)

    def update(self, x):
        x = jnp.asarray(x)
        check.features("LeakySpikeReadout", x, self.n_inputs)
        v = self.V.value
        s = self.spk_fun(v / self.V_th - 1.0)
        v = v - self.V_th * s if self.spk_reset == "soft" else v * (1.0 - jax.lax.stop_gradient(s))
        self.V.value = self.alpha * v + (1.0 - self.alpha) * matmul(x.astype(v.dtype), self.weight.value)
        return self.spk_fun(self.V.value / self.V_th - 1.0)
