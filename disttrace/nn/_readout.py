"""``LeakyRateReadout``: a leaky integrator read out of spikes or rates.

.. math::
    r_t = κ\\, r_{t-1} + x_t W, \\qquad κ = \\exp(-1/τ)

State: ``r`` (B, O), a ``HiddenState``. With ``tau=0`` the readout is memoryless
(``r_t = x_t W``) and has no hidden state, which keeps D-RTRL exact for the layer
before it.
"""

from __future__ import annotations

import math

import brainstate
import jax.numpy as jnp

from disttrace.ops import matmul

__all__ = ["LeakyRateReadout"]


class LeakyRateReadout(brainstate.nn.Module):
    """Leaky (or, with ``tau=0``, memoryless) linear readout.

    Args:
      in_size: input size I.
      out_size: output size O.
      tau: time constant in steps; 0 for no memory.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> ro = dt.nn.LeakyRateReadout(4, 2, tau=5.0)
      >>> brainstate.nn.init_all_states(ro, batch_size=3)
      LeakyRateReadout(...)
      >>> ro(jnp.ones((3, 4))).shape
      (3, 2)
    """

    def __init__(self, in_size: int, out_size: int, tau: float = 5.0, w_scale: float = 1.0, name=None):
        super().__init__(name=name)
        for arg, v in (("in_size", in_size), ("out_size", out_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LeakyRateReadout: argument {arg!r} must be a positive int; got {v!r}")
        if tau < 0:
            raise ValueError(f"LeakyRateReadout: argument 'tau' must be >= 0 (steps); got {tau!r}")
        self.n_inputs, self.n_outputs = in_size, out_size
        self.kappa = math.exp(-1.0 / tau) if tau > 0 else 0.0
        self.weight = brainstate.ParamState(
            brainstate.random.normal(0.0, w_scale / math.sqrt(in_size), (in_size, out_size))
        )

    def init_state(self, batch_size=None, **kwargs):
        if self.kappa > 0:
            self.r = brainstate.HiddenState(jnp.zeros((batch_size, self.n_outputs)))

    def update(self, x):
        if jnp.shape(x)[-1:] != (self.n_inputs,):
            raise ValueError(f"LeakyRateReadout: argument 'x' must have shape (B, {self.n_inputs}); got {jnp.shape(x)}")
        y = matmul(x.astype(self.weight.value.dtype), self.weight.value)
        if self.kappa == 0.0:
            return y
        self.r.value = self.kappa * self.r.value + y
        return self.r.value
