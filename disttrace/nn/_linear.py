"""``Linear``: a dense layer whose weight and bias learn online (via ``ops.matmul``)."""

from __future__ import annotations

import brainstate
import jax.numpy as jnp

from disttrace.ops import matmul

__all__ = ["Linear"]


class Linear(brainstate.nn.Module):
    """``y = x @ W + b`` with ``weight.value == {'weight': (in, out), 'bias': (out,)}``.

    Args:
      in_size: input features I.
      out_size: output features O.
      w_init: initializer for W (default Kaiming normal).
      b_init: initializer for b (default zeros); ``None`` for no bias.
      name: module name.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.Linear(3, 4)(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(self, in_size: int, out_size: int, w_init=None, b_init=None, name: str | None = None, *, bias=True):
        super().__init__(name=name)
        for arg, v in (("in_size", in_size), ("out_size", out_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Linear: argument {arg!r} must be a positive int; got {v!r}")
        self.n_inputs, self.n_outputs = in_size, out_size
        w_init = brainstate.nn.init.KaimingNormal() if w_init is None else w_init
        value = {"weight": brainstate.nn.init.param(w_init, (in_size, out_size))}
        if bias:
            b_init = brainstate.nn.init.ZeroInit() if b_init is None else b_init
            value["bias"] = brainstate.nn.init.param(b_init, (out_size,))
        self.weight = brainstate.ParamState(value)

    def update(self, x):
        x = jnp.asarray(x)
        if x.shape[-1] != self.n_inputs:
            raise ValueError(f"Linear: argument 'x' must end in {self.n_inputs} features; got shape {x.shape}")
        w = self.weight.value
        return matmul(x, w["weight"], w.get("bias"))
