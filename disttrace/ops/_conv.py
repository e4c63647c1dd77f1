"""Convolution trace op (channels-last, any number of spatial dims).

Shapes: ``x`` (B, *S_in, C), ``w`` (*window, C, O), ``y`` (B, *S_out, O). Every output
position is its own neuron, so the hidden group's neuron shape is (*S_out, O).

In trace space the op is a per-position matmul of the input patches
``P[b, p, f]`` (f runs over (C, *window)) with the kernel reshaped to (F, O):

.. math::
    E_t[b,k,p,f,o] = Σ_{k'} D_t[b,k,k',p,o] E_{t-1}[b,k',p,f,o] + g_t[b,k,p,o] P_t[b,p,f]

D-RTRL therefore keeps (B, K, P, F, O) — exact, but large; ES-D-RTRL keeps the
smoothed patches (B, P, F) and contracts ``Σ_{b,p} ε^P[b,p,f] s[b,p,o]``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from disttrace.ops._blocks import apply_block
from disttrace.ops._element_wise import element_wise
from disttrace.ops._registry import OpBody, TraceOpRule, register, trace_op

__all__ = ["conv"]


def _dimension_numbers(nd: int):
    spatial = "".join("DHW"[3 - nd :]) if nd <= 3 else None
    if spatial is None:
        raise ValueError(f"conv: only 1-3 spatial dimensions are supported; got {nd}")
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


@dataclasses.dataclass(frozen=True)
class _ConvRule(TraceOpRule):
    es_foldable: bool = True  # es_grad reads only the kernel rank

    def specialize(self, body: OpBody):
        # Strides and padding are static jit arguments, baked into the body's one convolution.
        (window,) = body.convs
        return dataclasses.replace(self, static=(window.strides, window.padding))

    def _patches(self, operands):
        x, w = operands[:2]
        nd = w.ndim - 2
        strides, padding = self.static
        p = lax.conv_general_dilated_patches(
            x, w.shape[:nd], strides, padding, dimension_numbers=_dimension_numbers(nd)
        )
        return p.reshape(p.shape[0], -1, p.shape[-1])  # (B, P, F) with f = (C, *window)

    def _kernel_matrix_shape(self, w):
        return (w.shape[-2] * math.prod(w.shape[:-2]), w.shape[-1])

    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        w = operands[1]
        n_pos = math.prod(neuron_shape[:-1])
        f, o = self._kernel_matrix_shape(w)
        return (jnp.zeros((batch, k, n_pos, f, o), dtype),)

    def to_trace_neurons(self, hidden_like, operands):
        # (..., *S_out, O) -> (..., P, O)
        nd = operands[1].ndim - 2
        return hidden_like.reshape(hidden_like.shape[: hidden_like.ndim - nd - 1] + (-1, hidden_like.shape[-1]))

    def dr_outer(self, g, operands):
        g = self.to_trace_neurons(g, operands)
        return (jnp.einsum("bpf,bkpo->bkpfo", self._patches(operands).astype(g.dtype), g),)

    def dr_decay(self, d, trace):
        # d (B,K,K,P,O), trace (B,K,P,F,O): F sits between the neuron axes P and O
        if d.shape[1] == 1:  # one state per neuron: a broadcast multiply, no transposes
            return (trace[0] * d[:, 0, 0][:, None, :, None, :],)
        return (jnp.moveaxis(apply_block(d, jnp.moveaxis(trace[0], 3, 2)), 2, 3),)

    def dr_contract(self, delta, trace):
        return (jnp.einsum("bkpo,bkpfo->fo", delta, trace[0]),)

    # ---- chunked D-RTRL: the per-position matmul of patches with the (F, O) kernel
    def chunk_input(self, operands):
        return self._patches(operands)  # (B, P, F)

    def outer_sum(self, gs, xs, operands):
        # Σ_u patches_u ⊗ g_u: (U,B,P,F) x (U,B,K,P,O) -> (B,K,P,F,O)
        return (jnp.einsum("ubpf,ubkpo->bkpfo", xs.astype(gs.dtype), gs),)

    def input_vjp_sum(self, xs, cs, operands):
        # Σ_u Σ_b Σ_p patches ⊗ c: (U,B,P,F) x (U,B,P,O) -> (F, O)
        return (jnp.einsum("ubpf,ubpo->fo", xs.astype(cs.dtype), cs),)

    def es_input(self, operands):
        return self._patches(operands)

    def es_grad(self, x_trace, signal, operands):
        signal = self.to_trace_neurons(signal, operands)
        return (jnp.einsum("bpf,bpo->fo", x_trace.astype(signal.dtype), signal),)

    def to_weights(self, tgrad, operands, op_fn):
        (g,) = tgrad
        w = operands[1]
        nd = w.ndim - 2
        # rows of g are ordered (C, *window): back to (*window, C, O)
        g = g.reshape((w.shape[-2], *w.shape[:nd], w.shape[-1]))
        return (jnp.moveaxis(g, 0, nd).astype(w.dtype),)


register(_ConvRule(name="conv", input_argnum=0, weight_argnums=(1,), chunkable=True))


def _dt_conv(x, w, strides, padding):
    nd = w.ndim - 2
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_dimension_numbers(nd))


_conv_op = trace_op("conv", _dt_conv, static_argnames=("strides", "padding"))


def conv(x: jax.Array, w: jax.Array, bias: jax.Array | None = None, *, strides=None, padding="SAME") -> jax.Array:
    """Channels-last convolution whose kernel takes part in eligibility traces.

    Args:
      x: input (B, *spatial, C).
      w: kernel (*window, C, O).
      bias: optional (O,) bias (an element-wise trace op).
      strides: per-spatial-dim strides (default 1).
      padding: ``"SAME"``, ``"VALID"`` or explicit pairs.

    Returns:
      (B, *spatial_out, O).

    Raises:
      ValueError: on mismatched ranks or channels, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4))).shape
      (2, 8, 4)
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    nd = w.ndim - 2
    if nd < 1 or x.ndim != nd + 2:
        raise ValueError(
            f"conv: argument 'x' must have shape (B, *spatial, C) with {max(nd, 1)} spatial dims for a "
            f"kernel of shape {w.shape}; got {x.shape}"
        )
    if x.shape[-1] != w.shape[-2]:
        raise ValueError(f"conv: argument 'x' has {x.shape[-1]} channels but 'w' expects {w.shape[-2]}")
    strides = (1,) * nd if strides is None else tuple(int(s) for s in strides)
    if not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    y = _conv_op(x, w, strides=strides, padding=padding)
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (w.shape[-1],):
            raise ValueError(f"conv: argument 'bias' must have shape ({w.shape[-1]},); got {bias.shape}")
        y = y + element_wise(bias)
    return y
