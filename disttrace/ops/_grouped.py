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
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.ops._aliases import one_name, transformed
from disttrace.ops._blocks import apply_block
from disttrace.ops._element_wise import element_wise
from disttrace.ops._registry import TraceOpRule, register, trace_op
from disttrace.units import attach, in_unit, split

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


def grouped_matmul(
    x: jax.Array,
    w: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    weight: jax.Array | None = None,
    weight_fn: Callable | None = None,
    bias_fn: Callable | None = None,
) -> jax.Array:
    """Block-diagonal matmul whose block weights learn online.

    Also accepts braintrace 0.2.8's signature ``grouped_matmul(x, weight, bias=None,
    *, weight_fn=None, bias_fn=None)``: ``weight`` is ``w`` by its braintrace name;
    the result is ``x[..., g, :] @ weight_fn(w)[g] + bias_fn(bias)[g]`` with gradients
    taken with respect to the raw ``w`` and ``bias``. The bias is an
    :func:`~disttrace.ops.element_wise` term (as in :func:`~disttrace.ops.conv`), so
    its trace is exact under every algorithm.

    Args:
      x: (B, G, I) or (G, I).
      w: (G, I, O) (braintrace: ``weight``; give one of the two).
      bias: optional (G, O) per-block bias.
      weight: braintrace's name for ``w``.
      weight_fn: optional shape-preserving transform of ``w``.
      bias_fn: optional element-wise transform of ``bias`` (hashable: a module-level
        function).

    Returns:
      (B, G, O) (or (G, O) for an unbatched ``x``).

    Raises:
      ValueError: if ``x`` does not end in (G, I), ``w`` is not 3-d, ``bias`` is not
        (G, O), or ``w`` and ``weight`` are both or neither given.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.grouped_matmul(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5))).shape
      (2, 3, 5)
    """
    (w, w_unit), (x, x_unit) = split(one_name("grouped_matmul", ("w", w), ("weight", weight))), split(x)
    x, w = jnp.asarray(x), jnp.asarray(transformed("grouped_matmul", "weight_fn", weight_fn, w))
    unit = x_unit * w_unit
    if w.ndim != 3:
        raise ValueError(f"grouped_matmul: argument 'w' must have shape (G, I, O); got {w.shape}")
    if x.shape[-2:] != w.shape[:2] or x.ndim not in (2, 3):
        raise ValueError(
            f"grouped_matmul: argument 'x' must have shape (B, {w.shape[0]}, {w.shape[1]}) or "
            f"({w.shape[0]}, {w.shape[1]}); got {x.shape}"
        )
    if bias is not None and jnp.shape(bias) != (w.shape[0], w.shape[2]):
        raise ValueError(
            f"grouped_matmul: argument 'bias' must have shape ({w.shape[0]}, {w.shape[2]}); got {jnp.shape(bias)}"
        )
    y = _grouped_op(x[None], w)[0] if x.ndim == 2 else _grouped_op(x, w)
    if bias is not None:
        y = y + element_wise(jnp.asarray(in_unit("grouped_matmul", "bias", bias, unit)), bias_fn)
    return attach(y, unit)
