"""Convolution trace op (channels-last, 1-3 spatial dims, with strides, padding, input
and kernel dilation and feature groups).

Shapes: ``x`` (B, *S_in, C), ``w`` (*window, C/G, O) for G feature groups, ``y``
(B, *S_out, O). Every output position is its own neuron, so the hidden group's neuron
shape is (*S_out, O).

In trace space the op is a per-position matmul of the input patches
``P[b, p, g, f]`` (f runs over (C/G, *window) of group g's input channels) with the
kernel reshaped to (F, O), output channel o reading the patches of its group g(o):

.. math::
    E_t[b,k,p,f,o] = Σ_{k'} D_t[b,k,k',p,o] E_{t-1}[b,k',p,f,o] + g_t[b,k,p,o] P_t[b,p,g(o),f]

D-RTRL therefore keeps (B, K, P, F, O) — exact, but large; ES-D-RTRL keeps the
smoothed patches (B, P, G·F) and contracts ``Σ_{b,p} ε^P[b,p,g(o),f] s[b,p,o]``.
Dilation only changes which input values form a patch (``conv_general_dilated_patches``
takes the same dilations), not the trace layout.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from disttrace.ops._aliases import one_name, transformed
from disttrace.ops._blocks import apply_block
from disttrace.ops._element_wise import element_wise
from disttrace.ops._registry import OpBody, TraceOpRule, register, trace_op
from disttrace.units import attach, in_unit, split

__all__ = ["conv"]


def _dimension_numbers(nd: int):
    spatial = "".join("DHW"[3 - nd :]) if nd <= 3 else None
    if spatial is None:
        raise ValueError(f"conv: only 1-3 spatial dimensions are supported; got {nd}")
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


@dataclasses.dataclass(frozen=True)
class _ConvRule(TraceOpRule):
    es_foldable: bool = True  # es_grad reads only the kernel rank and the (static) group count

    def specialize(self, body: OpBody):
        # Strides, padding, dilations and groups are static jit arguments, baked into the
        # body's one convolution.
        (window,) = body.convs
        return dataclasses.replace(
            self,
            static=(
                window.strides,
                window.padding,
                window.lhs_dilation or None,
                window.rhs_dilation or None,
                window.feature_group_count,
            ),
        )

    @property
    def _groups(self) -> int:
        return self.static[4]

    def _patches(self, operands):
        x, w = operands[:2]
        nd = w.ndim - 2
        strides, padding, lhs_dilation, rhs_dilation, _ = self.static
        p = lax.conv_general_dilated_patches(
            x, w.shape[:nd], strides, padding, lhs_dilation, rhs_dilation, dimension_numbers=_dimension_numbers(nd)
        )
        return p.reshape(p.shape[0], -1, p.shape[-1])  # (B, P, C·window) with f = (C, *window)

    def _split(self, a, axis):
        """Splits ``axis`` of ``a`` into (G, size / G): channels of one group are contiguous
        both in the patches' (C, *window) rows and in the output channels."""
        axis = axis % a.ndim
        return a.reshape(a.shape[:axis] + (self._groups, -1) + a.shape[axis + 1 :])

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
        patches = self._patches(operands).astype(g.dtype)
        if self._groups == 1:
            return (jnp.einsum("bpf,bkpo->bkpfo", patches, g),)
        e = jnp.einsum("bpgf,bkpgo->bkpfgo", self._split(patches, -1), self._split(g, -1))
        return (e.reshape(e.shape[:4] + (-1,)),)

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
        # Σ_u patches_u ⊗ g_u: (U,B,P,G·F) x (U,B,K,P,O) -> (B,K,P,F,O)
        xs = xs.astype(gs.dtype)
        if self._groups == 1:
            return (jnp.einsum("ubpf,ubkpo->bkpfo", xs, gs),)
        e = jnp.einsum("ubpgf,ubkpgo->bkpfgo", self._split(xs, -1), self._split(gs, -1))
        return (e.reshape(e.shape[:4] + (-1,)),)

    def input_vjp_sum(self, xs, cs, operands):
        # Σ_u Σ_b Σ_p patches ⊗ c: (U,B,P,G·F) x (U,B,P,O) -> (F, O)
        xs = xs.astype(cs.dtype)
        if self._groups == 1:
            return (jnp.einsum("ubpf,ubpo->fo", xs, cs),)
        g = jnp.einsum("ubpgf,ubpgo->fgo", self._split(xs, -1), self._split(cs, -1))
        return (g.reshape(g.shape[0], -1),)

    def es_input(self, operands):
        return self._patches(operands)

    def es_grad(self, x_trace, signal, operands):
        signal = self.to_trace_neurons(signal, operands)
        x_trace = x_trace.astype(signal.dtype)
        if self._groups == 1:
            return (jnp.einsum("bpf,bpo->fo", x_trace, signal),)
        g = jnp.einsum("bpgf,bpgo->fgo", self._split(x_trace, -1), self._split(signal, -1))
        return (g.reshape(g.shape[0], -1),)

    def to_weights(self, tgrad, operands, op_fn):
        (g,) = tgrad
        w = operands[1]
        nd = w.ndim - 2
        # rows of g are ordered (C, *window): back to (*window, C, O)
        g = g.reshape((w.shape[-2], *w.shape[:nd], w.shape[-1]))
        return (jnp.moveaxis(g, 0, nd).astype(w.dtype),)


register(_ConvRule(name="conv", input_argnum=0, weight_argnums=(1,), chunkable=True))


def _dt_conv(x, w, strides, padding, lhs_dilation, rhs_dilation, feature_group_count):
    nd = w.ndim - 2
    return lax.conv_general_dilated(
        x, w, strides, padding, lhs_dilation, rhs_dilation, _dimension_numbers(nd),
        feature_group_count=feature_group_count,
    )


_conv_op = trace_op(
    "conv", _dt_conv, static_argnames=("strides", "padding", "lhs_dilation", "rhs_dilation", "feature_group_count")
)


def _per_dim(arg, value, nd):
    """``None`` (1 everywhere) or one positive int per spatial dim, as a tuple."""
    if value is None:
        return (1,) * nd
    value = tuple(value)
    if len(value) != nd or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value):
        raise ValueError(f"conv: argument {arg!r} must be {nd} positive ints (one per spatial dim); got {value!r}")
    return tuple(int(v) for v in value)


def conv(
    x: jax.Array,
    w: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    strides=None,
    padding="SAME",
    lhs_dilation=None,
    rhs_dilation=None,
    feature_group_count: int = 1,
    kernel: jax.Array | None = None,
    batch_group_count: int = 1,
    dimension_numbers=None,
    kernel_fn: Callable | None = None,
    bias_fn: Callable | None = None,
) -> jax.Array:
    """Channels-last convolution whose kernel takes part in eligibility traces.

    ``y = lax.conv_general_dilated(x, w, strides, padding, lhs_dilation, rhs_dilation,
    feature_group_count=G) + bias`` with (N, *spatial, C) / (*window, I, O) layouts.

    Also accepts braintrace 0.2.8's keywords: ``kernel`` (``w`` by its braintrace
    name), ``kernel_fn``/``bias_fn`` (``conv(x, kernel_fn(w)) + bias_fn(bias)``, with
    gradients taken with respect to the raw kernel and bias), ``batch_group_count``
    (1 only) and ``dimension_numbers`` (the channels-last layout only). One difference
    is not reconciled: braintrace's default layout (``dimension_numbers=None``) is
    JAX's channels-first one, ours is channels-last; a braintrace call on
    channels-first arrays must be rewritten for channels-last ones.

    Args:
      x: input (B, *spatial, C).
      w: kernel (*window, C/G, O); O must be a multiple of G (braintrace: ``kernel``;
        give one of the two).
      bias: optional (O,) bias (an element-wise trace op).
      strides: per-spatial-dim strides (default 1).
      padding: ``"SAME"``, ``"VALID"`` or explicit pairs.
      lhs_dilation: per-spatial-dim input dilation (default 1: none).
      rhs_dilation: per-spatial-dim kernel dilation (default 1: none).
      feature_group_count: G; input channel group g feeds output channel group g only.
      kernel: braintrace's name for ``w``.
      batch_group_count: must be 1 (accepted for braintrace's signature).
      dimension_numbers: ``None`` or the channels-last layout, e.g.
        ``("NHWC", "HWIO", "NHWC")`` for 2 spatial dims; any other layout is refused.
      kernel_fn: optional shape-preserving transform of the kernel.
      bias_fn: optional element-wise transform of ``bias`` (hashable: a module-level
        function).

    Returns:
      (B, *spatial_out, O).

    Raises:
      ValueError: on mismatched ranks, channels or groups, or bad dilations, naming the
        argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4))).shape
      (2, 8, 4)
    """
    w = one_name("conv", ("w", w), ("kernel", kernel))
    (x, x_unit), (w, w_unit) = split(x), split(w)
    x, w = jnp.asarray(x), jnp.asarray(transformed("conv", "kernel_fn", kernel_fn, w))
    unit = x_unit * w_unit
    nd = w.ndim - 2
    if nd < 1 or x.ndim != nd + 2:
        raise ValueError(
            f"conv: argument 'x' must have shape (B, *spatial, C) with {max(nd, 1)} spatial dims for a "
            f"kernel of shape {w.shape}; got {x.shape}"
        )
    if batch_group_count != 1 or isinstance(batch_group_count, bool):
        raise ValueError(f"conv: argument 'batch_group_count' must be 1 (batch groups are not supported); got "
                         f"{batch_group_count!r}")
    _check_layout(x, w, dimension_numbers)
    groups = feature_group_count
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"conv: argument 'feature_group_count' must be a positive int; got {groups!r}")
    groups = int(groups)
    if w.shape[-1] % groups:
        raise ValueError(
            f"conv: argument 'w' must have a multiple of feature_group_count={groups} output channels; got {w.shape}"
        )
    if x.shape[-1] != w.shape[-2] * groups:
        raise ValueError(
            f"conv: argument 'x' has {x.shape[-1]} channels but 'w' expects {w.shape[-2]} x {groups} groups "
            f"= {w.shape[-2] * groups}"
        )
    strides = (1,) * nd if strides is None else tuple(int(s) for s in strides)
    if not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    y = _conv_op(
        x, w, strides=strides, padding=padding, lhs_dilation=_per_dim("lhs_dilation", lhs_dilation, nd),
        rhs_dilation=_per_dim("rhs_dilation", rhs_dilation, nd), feature_group_count=groups,
    )
    if bias is not None:
        bias = jnp.asarray(in_unit("conv", "bias", bias, unit))
        if bias.shape != (w.shape[-1],):
            raise ValueError(f"conv: argument 'bias' must have shape ({w.shape[-1]},); got {bias.shape}")
        y = y + element_wise(bias, bias_fn)
    return attach(y, unit)


def _check_layout(x, w, dimension_numbers) -> None:
    """Refuses any layout but channels-last (the only one the trace rule reads)."""
    if dimension_numbers is None:
        return
    ours = _dimension_numbers(w.ndim - 2)
    try:
        same = lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers) == lax.conv_dimension_numbers(
            x.shape, w.shape, ours
        )
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ValueError(
            f"conv: argument 'dimension_numbers' must be None or the channels-last layout {ours!r} (input "
            f"(B, *spatial, C), kernel (*window, C/G, O)); got {dimension_numbers!r}. Transpose channels-first "
            "arrays to channels-last"
        )
