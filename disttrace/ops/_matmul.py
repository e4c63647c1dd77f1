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


def _pair_levels(x: jax.Array) -> list[jax.Array]:
    """``[x, x', x'', ...]``: ``x`` (B, ...) and, while the row count is even, the next
    level's adjacent rows added pairwise; the last level has an odd row count R and every
    level the same sum over its leading axis.

    The order of the additions depends on B alone, never on the devices: a run on one
    device, on a mesh, or split over processes adds the same numbers in the same order
    (a stream's sync mode equals one process bitwise, and a replay in a process with
    another device count equals the run). Under a batch sharding the pairs stay on one
    device until one row per device is left; the last rounds add those partials across
    devices (arrays of one row per device, small beside the trace).
    """
    levels = [x]
    while x.shape[0] % 2 == 0:
        pairs = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
        x = pairs[:, 0] + pairs[:, 1]
        levels.append(x)
    return levels


def _local_rows(x: jax.Array) -> jax.Array:
    """The last of :func:`_pair_levels`: (R, ...), R odd."""
    return _pair_levels(x)[-1]


def _sum_rows(rows: jax.Array) -> jax.Array:
    """The sum over the leading axis of :func:`_local_rows`' result (an odd row count: the
    product with a vector of ones)."""
    if rows.shape[0] == 1:
        return rows[0]
    return jnp.tensordot(jnp.ones((rows.shape[0],), rows.dtype), rows, axes=1)


def batch_sum(x: jax.Array) -> jax.Array:
    """``x.sum(0)`` for a batch-leading ``x`` (B, ...), written so that XLA's CPU backend
    makes it one fused pass over ``x`` and a batch-sharded ``x`` is summed where it lies
    (pairwise sums of adjacent rows while their count is even, then a product with a
    vector of ones), in an order fixed by B alone (:func:`_local_rows`).

    Why not ``x.sum(0)``: XLA's CPU backend (jax 0.10) hands a reduction over the
    leading axis to a library kernel that is slow for a large trailing size: (64, 612,
    512) float32 took 90-190 ms, the pairwise form 4-8 ms (2-core CPU).

    Args:
      x: (B, ...).

    Returns:
      (...): the sum over the leading axis.
    """
    return _sum_rows(_local_rows(x))


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
        # a broadcast product, which XLA fuses into the trace update; the einsum became a dot
        # with an (B, K, O, I) output that was transposed into a second trace-sized buffer
        ew = x[:, None, :, None] * g[:, :, None, :]
        return (ew, g) if self.has_bias(operands) else (ew,)

    def dr_decay(self, d, trace):
        return tuple(apply_block(d, e) for e in trace)

    def dr_contract(self, delta, trace):
        return self._contract(delta, trace)[0]

    def _contract(self, delta, trace):
        # Σ_{b,k} δ[b,k,o] E[b,k,i,o] as one elementwise pass and a pairwise sum over the batch
        # (batch_sum), not an einsum: XLA made the einsum a dot batched over o, which first copies
        # the whole trace into an (O, I, B) layout. Nor a scan over the batch, which gathered a
        # batch-sharded trace every step (a 2-process sync stream ran 26x slower).
        k = delta.shape[1]
        weighted = sum(delta[:, j, None, :] * trace[0][:, j] for j in range(k))  # (B, I, O)
        levels = _pair_levels(weighted)
        out = [_sum_rows(levels[-1])]
        if len(trace) > 1:
            out.append(jnp.einsum("bko,bko->o", delta, trace[1]))
        # the level with one row per device or fewer (the partials a device sums alone): what
        # dr_contract_decay orders each block's decay after; it only orders, never changes a value
        blocks = next((lv for lv in levels[1:] if lv.shape[0] <= jax.device_count()), levels[-1])
        return tuple(out), blocks

    def dr_contract_decay(self, delta, d, trace):
        """``(dr_contract(delta, trace), dr_decay(d, trace))``, with the decay ordered after
        the contraction's read of the trace, so that XLA writes it in place.

        XLA cannot tell that the contraction reads a loop-carried trace before the decay
        overwrites it, and then copies the whole trace at every update (an
        ``optimization_barrier`` does not help on CPU: it is removed before XLA inserts its
        copies). Here each batch block's ``d`` is multiplied by a factor that is exactly 1
        (``max(isnan(t), 1)``, which XLA cannot fold away) computed from ``t``, the sum of
        the block's partial contraction: the decay then depends on the pass that read the
        trace. Under a batch sharding ``t`` lies where the block's decay is applied (with
        the neurons split over a model axis, ``t`` is one all-reduce of a number per block);
        the decay does not wait for the gradient's all-reduce. When the batch has fewer than
        two rows per device there are no partial blocks and ``t`` is the contraction's sum.
        Measured on CPU, (64, 1, 612, 512) float32 traces: no trace copy per update (one
        update 18 -> 8 ms in a loop; chunked D-RTRL at H = 512: ~10 % of a call).

        Args:
          delta: (B, K, O) learning signal.
          d: (B, K, K, O) per-neuron decay blocks.
          trace: the trace tuple.

        Returns:
          ``(contracted, decayed_trace)``.
        """
        if type(self).dr_contract is not MatmulRule.dr_contract or type(self).dr_decay is not MatmulRule.dr_decay:
            return self.dr_contract(delta, trace), self.dr_decay(d, trace)  # a subclass's own forms
        out, rows = self._contract(delta, trace)
        r = rows.shape[0]
        if r < d.shape[0]:
            t = jnp.sum(rows, axis=(1, 2))  # (R,): one number per batch block
        else:  # summing the unreduced rows would read the trace once more (XLA fuses the product in)
            r, t = 1, jnp.sum(out[0])
        one = jnp.maximum(jnp.isnan(t).astype(d.dtype), 1)  # exactly 1, NaN or not
        blocks = d.reshape((r, d.shape[0] // r) + d.shape[1:]) * one.reshape((r,) + (1,) * d.ndim)
        return out, self.dr_decay(blocks.reshape(d.shape), trace)

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
        if not self.has_bias(operands):
            return (ew,)
        # sums over U as products with ones: XLA's CPU reduction over a leading axis is slow (batch_sum)
        return ew, jnp.tensordot(jnp.ones((u,), gs.dtype), gs, axes=1)

    def input_vjp_sum(self, xs, cs, operands):
        # contracted over (U, B) as two axes, not over a reshaped (U·B) one: merging the axes of
        # a batch-sharded array made XLA gather the chunk's factors on every device
        gw = jax.lax.dot_general(xs.astype(cs.dtype), cs, (((0, 1), (0, 1)), ((), ())))
        if not self.has_bias(operands):
            return (gw,)
        return gw, jnp.tensordot(jnp.ones(cs.shape[:2], cs.dtype), cs, axes=2)

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
    defers_direct: bool = True  # features are the op input itself

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
