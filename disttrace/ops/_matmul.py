"""Dense matmul trace op: ``y = x @ w (+ b)``.

Shapes: ``x`` (B, I), ``w`` (I, O), ``b`` (O,), ``y`` (B, O). The hidden group the
output reaches has neuron shape (O,).

D-RTRL trace (per group of K states): ``E_w`` (B, K, I, O) and ``E_b`` (B, K, O) with

.. math::
    E^w_t[b,k,i,o] = Σ_{k'} D_t[b,k,k',o] E^w_{t-1}[b,k',i,o] + g_t[b,k,o]\\, x_t[b,i]

and gradient ``Σ_{b,k} δ[b,k,o] E^w[b,k,i,o]``. ES-D-RTRL keeps ``ε^x`` (B, I) and
contracts ``Σ_b ε^x[b,i] s[b,o]`` with the smoothed learning signal ``s``; the bias
uses ``Σ_b s[b,o]`` (as braintrace's pp_prop does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.ops._aliases import one_name, transformed
from disttrace.ops._blocks import apply_block
from disttrace.ops._registry import TraceOpRule, register, trace_op
from disttrace.units import attach, in_unit, split

__all__ = ["MatmulRule", "matmul"]


@dataclasses.dataclass(frozen=True)
class MatmulRule(TraceOpRule):
    """Trace rule of every op that is a dense matmul in trace space.

    Subclasses change how the input features are formed (:meth:`features`) and how
    the trace-space gradient maps to weights (:meth:`to_weights`).
    """

    chunkable: bool = True
    es_foldable: bool = True  # es_grad reads only parameter shapes

    def features(self, operands):
        """The (B, I) input features multiplying the (I, O) trace-space weight."""
        return operands[self.input_argnum]

    def has_bias(self, operands) -> bool:
        return False

    def _dims(self, operands):
        x = self.features(operands)
        return x.shape[-1], x.dtype

    # ---- D-RTRL
    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        (n_out,) = neuron_shape
        n_in, _ = self._dims(operands)
        ew = jnp.zeros((batch, k, n_in, n_out), dtype)
        if self.has_bias(operands):
            return (ew, jnp.zeros((batch, k, n_out), dtype))
        return (ew,)

    def dr_outer(self, g, operands):
        x = self.features(operands).astype(g.dtype)
        ew = jnp.einsum("bi,bko->bkio", x, g)
        return (ew, g) if self.has_bias(operands) else (ew,)

    def dr_decay(self, d, trace):
        return tuple(apply_block(d, e) for e in trace)

    def dr_contract(self, delta, trace):
        # einsum, not a scan over the batch: the scan was 3x faster on one CPU device but gathered
        # a batch-sharded trace every step (a 2-process sync stream ran 26x slower)
        out = [jnp.einsum("bko,bkio->io", delta, trace[0])]
        if len(trace) > 1:
            out.append(jnp.einsum("bko,bko->o", delta, trace[1]))
        return tuple(out)

    # ---- chunked D-RTRL
    def chunk_input(self, operands):
        return self.features(operands)

    def outer_sum(self, gs, xs, operands):
        # (U,B,I) x (U,B,K,O) -> (B,K,I,O): one matrix product over U per batch element,
        # written so that its output is (B, I, K·O): for K = 1 that is the trace's own
        # layout, where einsum's dot came out (B, O, I) on CPU and cost one more
        # transposing pass over the trace.
        u, b, n_in = xs.shape
        k, n_out = gs.shape[2], gs.shape[3]
        x_b = jnp.swapaxes(xs.astype(gs.dtype), 0, 1)  # (B, U, I)
        g_b = jnp.swapaxes(gs, 0, 1).reshape(b, u, k * n_out)  # (B, U, K·O)
        ew = jax.lax.dot_general(x_b, g_b, (((1,), (1,)), ((0,), (0,))))  # (B, I, K·O)
        ew = jnp.swapaxes(ew.reshape(b, n_in, k, n_out), 1, 2)
        return (ew, gs.sum(0)) if self.has_bias(operands) else (ew,)

    def input_vjp_sum(self, xs, cs, operands):
        u, b, n_in = xs.shape
        flat_x = xs.reshape(u * b, n_in).astype(cs.dtype)
        flat_c = cs.reshape(u * b, cs.shape[-1])
        gw = flat_x.T @ flat_c
        return (gw, flat_c.sum(0)) if self.has_bias(operands) else (gw,)

    # ---- ES-D-RTRL
    def es_input(self, operands):
        return self.features(operands)

    def es_grad(self, x_trace, signal, operands):
        gw = x_trace.astype(signal.dtype).T @ signal
        return (gw, signal.sum(0)) if self.has_bias(operands) else (gw,)

    def trace_space_like(self, operands):
        n_in, dtype = self._dims(operands)
        n_out = self._n_out(operands)
        out = [jax.ShapeDtypeStruct((n_in, n_out), dtype)]
        if self.has_bias(operands):
            out.append(jax.ShapeDtypeStruct((n_out,), dtype))
        return tuple(out)

    def _n_out(self, operands):
        return operands[self.weight_argnums[0]].shape[-1]


@dataclasses.dataclass(frozen=True)
class _DenseRule(MatmulRule):
    def has_bias(self, operands) -> bool:
        return len(operands) == 3

    def to_weights(self, tgrad, operands, op_fn):
        return tuple(tgrad)


def _dt_matmul(x, w):
    return jnp.matmul(x, w)


def _dt_matmul_bias(x, w, b):
    return jnp.matmul(x, w) + b


register(_DenseRule(name="matmul", input_argnum=0, weight_argnums=(1,)))
register(_DenseRule(name="matmul_bias", input_argnum=0, weight_argnums=(1, 2)))
_matmul_op = trace_op("matmul", _dt_matmul)
_matmul_bias_op = trace_op("matmul_bias", _dt_matmul_bias)


def matmul(
    x: jax.Array,
    w: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    weight: jax.Array | None = None,
    weight_fn: Callable | None = None,
    bias_fn: Callable | None = None,
) -> jax.Array:
    """Dense product ``x @ w + bias`` whose weights take part in eligibility traces.

    Also accepts braintrace 0.2.8's signature ``matmul(x, weight, bias=None, *,
    weight_fn=None, bias_fn=None)``: ``weight`` is ``w`` by its braintrace name, and
    the transforms give ``x @ weight_fn(w) + bias_fn(bias)`` with gradients taken with
    respect to the raw ``w`` and ``bias``.

    Args:
      x: input, shape (B, I) or (I,).
      w: weight, shape (I, O) (braintrace: ``weight``; give one of the two).
      bias: optional bias, shape (O,).
      weight: braintrace's name for ``w``.
      weight_fn: optional shape-preserving transform of ``w``.
      bias_fn: optional shape-preserving transform of ``bias``.

    Returns:
      ``y`` of shape (B, O) (or (O,) for an unbatched ``x``).

    Raises:
      ValueError: if the shapes do not match, or ``w`` and ``weight`` are both or
        neither given; the message names the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.matmul(jnp.ones((2, 3)), jnp.ones((3, 4))).shape
      (2, 4)
      >>> dt.matmul(jnp.ones((2, 3)), weight=jnp.ones((3, 4)), weight_fn=jnp.abs).shape
      (2, 4)
    """
    (x, x_unit), (w, w_unit) = split(x), split(one_name("matmul", ("w", w), ("weight", weight)))
    x = jnp.asarray(x)
    w = jnp.asarray(transformed("matmul", "weight_fn", weight_fn, w))
    unit = x_unit * w_unit
    if w.ndim != 2:
        raise ValueError(f"matmul: argument 'w' must be a matrix (I, O); got shape {w.shape}")
    if x.ndim not in (1, 2) or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"matmul: argument 'x' must have shape (B, {w.shape[0]}) or ({w.shape[0]},) to match "
            f"'w' of shape {w.shape}; got {x.shape}"
        )
    if bias is None:
        return attach(_matmul_op(x, w), unit)
    bias = jnp.asarray(transformed("matmul", "bias_fn", bias_fn, in_unit("matmul", "bias", bias, unit)))
    if bias.shape != (w.shape[1],):
        raise ValueError(f"matmul: argument 'bias' must have shape ({w.shape[1]},); got {bias.shape}")
    return attach(_matmul_bias_op(x, w, bias), unit)
