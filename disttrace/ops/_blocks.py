"""Per-neuron K×K Jacobian blocks applied to K-stacked arrays.

A hidden group of K states has, per neuron, a K×K block ``D`` (B, K, K, *N). Traces
and learning signals stack the K states on axis 1 and may carry extra axes before the
neuron axes (a matmul trace is (B, K, I, O) with neuron shape (O,)). For the usual
K = 1 (one state per neuron) the product is a broadcast multiply; for small K (an
LSTM's c and h, an ALIF's V and a) it is K² broadcast multiply-adds, which XLA fuses
into one pass over the trace, where an einsum would become a batched matmul with a
tiny contraction (slow on CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["apply_block"]

_SMALL_K = 4


def apply_block(d: jax.Array, e: jax.Array) -> jax.Array:
    """``out[:, k] = Σ_j d[:, k, j] ∘ e[:, j]`` per neuron.

    Args:
      d: (B, K, K, *N) blocks.
      e: (B, K, *X, *N): K-stacked values with extra axes X before the neuron axes.

    Returns:
      (B, K, *X, *N).

    Example:
      >>> import jax.numpy as jnp
      >>> from disttrace.ops import apply_block
      >>> apply_block(jnp.ones((2, 2, 2, 3)), jnp.ones((2, 2, 5, 3))).shape
      (2, 2, 5, 3)
    """
    k = d.shape[1]
    n_extra = e.ndim - d.ndim + 1
    expand = lambda v: v.reshape(v.shape[:1] + (1,) * n_extra + v.shape[1:])  # (B, *N) -> (B, 1.., *N)
    if k == 1:
        return expand(d[:, 0, 0])[:, None] * e
    if k <= _SMALL_K:
        return jnp.stack([sum(expand(d[:, a, b]) * e[:, b] for b in range(k)) for a in range(k)], axis=1)
    d_full = d.reshape(d.shape[:3] + (1,) * n_extra + d.shape[3:])  # (B, K, K, 1.., *N)
    return jnp.sum(d_full * e[:, None], axis=2)
