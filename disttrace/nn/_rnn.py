"""``GRUCell`` built on trace ops (brainstate's gating; one weight per gate).

.. math::
    r = σ([x, h] W_r + b_r),\\quad z = σ([x, h] W_z + b_z),\\quad
    n = \\tanh([x, r ∘ h] W_n + b_n),\\quad h' = (1 - z) ∘ n + z ∘ h

``W_z`` and ``W_n`` reach ``h`` element-wise and keep traces. ``W_r`` reaches ``h``
only through ``W_n``'s op (``r ∘ h`` is its input), so its online gradient is its
exact same-step term; braintrace 0.2.8 gives it exactly zero.
"""

from __future__ import annotations

import math

import brainstate
import jax
import jax.numpy as jnp

from disttrace.ops import matmul

__all__ = ["GRUCell"]


class GRUCell(brainstate.nn.Module):
    """Gated recurrent unit.

    Args:
      in_size: input size I.
      out_size: hidden size N.

    State: ``h`` (B, N). Input (B, I); output ``h'``.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> gru = dt.nn.GRUCell(3, 4)
      >>> brainstate.nn.init_all_states(gru, batch_size=2)
      GRUCell(...)
      >>> gru(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(self, in_size: int, out_size: int, name=None):
        super().__init__(name=name)
        for arg, v in (("in_size", in_size), ("out_size", out_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GRUCell: argument {arg!r} must be a positive int; got {v!r}")
        self.n_inputs, self.n_outputs = in_size, out_size
        fan_in = in_size + out_size
        init = lambda: {
            "weight": brainstate.random.normal(0.0, 1.0 / math.sqrt(fan_in), (fan_in, out_size)),
            "bias": jnp.zeros((out_size,)),
        }
        self.Wr = brainstate.ParamState(init())
        self.Wz = brainstate.ParamState(init())
        self.Wn = brainstate.ParamState(init())

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, self.n_outputs)))

    def update(self, x):
        if jnp.shape(x)[-1:] != (self.n_inputs,):
            raise ValueError(f"GRUCell: argument 'x' must have shape (B, {self.n_inputs}); got {jnp.shape(x)}")
        h = self.h.value
        xh = jnp.concatenate([x, h], axis=-1)
        lin = lambda p, inp: matmul(inp, p.value["weight"], p.value["bias"])
        r = jax.nn.sigmoid(lin(self.Wr, xh))
        z = jax.nn.sigmoid(lin(self.Wz, xh))
        n = jnp.tanh(lin(self.Wn, jnp.concatenate([x, r * h], axis=-1)))
        self.h.value = (1.0 - z) * n + z * h
        return self.h.value
