"""Heaviside spike with a surrogate gradient (brainstate ships none).

``spike(x)`` is ``1[x > 0]`` forward; backward uses the derivative of a smooth
function of ``x``:

- ``"sigmoid"``: ``σ'(s·x)·s``;
- ``"fast_sigmoid"`` (SuperSpike): ``1 / (1 + s|x|)^2``;
- ``"triangle"``: ``s·max(0, 1 - |x|)`` (e-prop's pseudo-derivative with ``s = 0.3``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["SURROGATES", "spike"]

SURROGATES = ("sigmoid", "fast_sigmoid", "triangle")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _spike(x, kind: str, scale: float):
    return (x > 0).astype(x.dtype)


@_spike.defjvp
def _spike_jvp(kind, scale, primals, tangents):
    (x,), (dx,) = primals, tangents
    if kind == "sigmoid":
        sg = jax.nn.sigmoid(scale * x)
        grad = scale * sg * (1.0 - sg)
    elif kind == "fast_sigmoid":
        grad = 1.0 / (1.0 + scale * jnp.abs(x)) ** 2
    else:
        grad = scale * jnp.maximum(0.0, 1.0 - jnp.abs(x))
    return _spike(x, kind, scale), grad.astype(x.dtype) * dx


def spike(x: jax.Array, surrogate: str = "fast_sigmoid", scale: float = 4.0) -> jax.Array:
    """Heaviside step ``1[x > 0]`` with a surrogate derivative.

    Args:
      x: membrane distance to threshold (any shape).
      surrogate: one of ``SURROGATES``.
      scale: steepness of the surrogate.

    Raises:
      ValueError: for an unknown ``surrogate``.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.spike(jnp.array([-1.0, 0.5]))
      Array([0., 1.], dtype=float32)
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"spike: argument 'surrogate' must be one of {SURROGATES}; got {surrogate!r}")
    return _spike(x, surrogate, float(scale))
