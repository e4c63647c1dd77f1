"""Grouped (block-diagonal) matmul trace op: ``y[b, g] = x[b, g] @ w[g]``.

Shapes: ``x`` (B, G, I), ``w`` (G, I, O), ``y`` (B, G, O). The hidden group the output
reaches has neuron shape (G, O): each group's outputs are their own neurons.

D-RTRL keeps ``E`` (B, K, G, I, O) — the block weights only, never the dense
(G·I, G·O) matrix — with

.. math::
    E_t[b,k,g,i,o] = Σ_{k'} D_t[b,k,k',g,o] E_{t-1}[b,k',g,i,o] + g_t[b,k,g,o]\\, x_t[b,g,i]

ES-D-RTRL keeps ``ε^x`` (B, G, I) and contracts ``Σ_b ε^x[b,g,i] s[b,g,o]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from disttrace.ops._blocks import apply_block
from disttrace.ops._registry import TraceOpRule, register, trace_op

__all__ = ["grouped_matmul"]


@dataclasses.dataclass(frozen=True)
class _GroupedRule(TraceOpRule):
    es_foldable: bool = True  # es_grad reads no operand

    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        g, i, o = operands[1].shape
        return (jnp.zeros((batch, k, g, i, o), dtype),)

    def dr_outer(self, g, operands):
        return (jnp.einsum("bgi,bkgo->bkgio", operands[0].astype(g.dtype), g),)

    def dr_decay(self, d, trace):
        # d (B,K,K,G,O), trace (B,K,G,I,O): I sits between the neuron axes G and O
        if d.shape[1] == 1:  # one state per neuron: a broadcast multiply, no transposes
            return (trace[0] * d[:, 0, 0][:, None, :, None, :],)
        return (jnp.moveaxis(apply_block(d, jnp.moveaxis(trace[0], 3, 2)), 2, 3),)

    def dr_contract(self, delta, trace):
        return (jnp.einsum("bkgo,bkgio->gio", delta, trace[0]),)

    def es_grad(self, x_trace, signal, operands):
        return (jnp.einsum("bgi,bgo->gio", x_trace.astype(signal.dtype), signal),)


register(_GroupedRule(name="grouped_matmul", input_argnum=0, weight_argnums=(1,)))


def _dt_grouped_matmul(x, w):
    return jnp.einsum("bgi,gio->bgo", x, w)


_grouped_op = trace_op("grouped_matmul", _dt_grouped_matmul)


def grouped_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """Block-diagonal matmul whose block weights learn online.

    Args:
      x: (B, G, I) or (G, I).
      w: (G, I, O).

    Returns:
      (B, G, O) (or (G, O) for an unbatched ``x``).

    Raises:
      ValueError: if ``x`` does not end in (G, I) or ``w`` is not 3-d.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.grouped_matmul(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5))).shape
      (2, 3, 5)
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    if w.ndim != 3:
        raise ValueError(f"grouped_matmul: argument 'w' must have shape (G, I, O); got {w.shape}")
    if x.shape[-2:] != w.shape[:2] or x.ndim not in (2, 3):
        raise ValueError(
            f"grouped_matmul: argument 'x' must have shape (B, {w.shape[0]}, {w.shape[1]}) or "
            f"({w.shape[0]}, {w.shape[1]}); got {x.shape}"
        )
    if x.ndim == 2:
        return _grouped_op(x[None], w)[0]
    return _grouped_op(x, w)
