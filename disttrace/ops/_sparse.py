"""Sparse matmul trace op: ``y[b, o] = Σ_j x[b, rows_j] · data_j · [cols_j = o]``.

The learnable weight is the data vector (nnz,) of a COO matrix of shape (I, O) with
fixed ``rows``/``cols``. D-RTRL keeps (B, K, nnz), gathered per non-zero:

.. math::
    E_t[b,k,j] = Σ_{k'} D_t[b,k,k',c_j] E_{t-1}[b,k',j] + g_t[b,k,c_j]\\, x_t[b,r_j]

ES-D-RTRL keeps ``ε^x`` (B, I) and the gradient ``Σ_b ε^x[b, r_j] s[b, c_j]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from disttrace import checks
from disttrace.ops._blocks import apply_block
from disttrace.ops._registry import TraceOpRule, register, trace_op

__all__ = ["sparse_matmul"]


@dataclasses.dataclass(frozen=True)
class SparseRule(TraceOpRule):
    """Trace rule of :func:`sparse_matmul`: one trace entry per non-zero."""

    es_foldable: bool = True  # es_grad reads the constant rows/cols only

    def to_trace_neurons(self, hidden_like, operands):
        # Each non-zero j belongs to output neuron cols[j]: D and δ are gathered there.
        return hidden_like[..., operands[3]]

    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        return (jnp.zeros((batch, k, operands[1].shape[0]), dtype),)

    def dr_outer(self, g, operands):
        x, _, rows, cols = operands[:4]
        return (g[:, :, cols] * x[:, None, rows].astype(g.dtype),)

    def dr_decay(self, d, trace):
        return (apply_block(d, trace[0]),)

    def dr_contract(self, delta, trace):
        return (jnp.sum(delta * trace[0], axis=(0, 1)),)

    def es_grad(self, x_trace, signal, operands):
        _, _, rows, cols = operands[:4]
        return (jnp.sum(x_trace[:, rows].astype(signal.dtype) * signal[:, cols], axis=0),)


register(SparseRule(name="sparse_matmul", input_argnum=0, weight_argnums=(1,)))


def _dt_sparse_matmul(x, data, rows, cols, n_out):
    contrib = x[..., rows] * data
    out_shape = x.shape[:-1] + (n_out,)
    return jnp.zeros(out_shape, contrib.dtype).at[..., cols].add(contrib)


_sparse_op = trace_op("sparse_matmul", _dt_sparse_matmul, static_argnames=("n_out",))


def sparse_matmul(x: jax.Array, data: jax.Array, rows, cols, n_out: int) -> jax.Array:
    """``x @ S`` for a COO sparse matrix ``S`` (I, n_out) whose values ``data`` learn online.

    Args:
      x: input, (B, I) or (I,).
      data: (nnz,) learnable values.
      rows: (nnz,) integer row (input) indices.
      cols: (nnz,) integer column (output) indices.
      n_out: number of output columns O.

    Returns:
      (B, O) output.

    Raises:
      ValueError: on inconsistent shapes or out-of-range indices, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.sparse_matmul(jnp.ones((2, 3)), jnp.ones(2), [0, 2], [1, 1], 2)
      Array([[0., 2.],
             [0., 2.]], dtype=float32)
    """
    x, data = jnp.asarray(x), jnp.asarray(data)
    rows_np, cols_np = np.asarray(rows), np.asarray(cols)
    n_out = checks.positive_int("sparse_matmul", "n_out", n_out)
    if data.ndim != 1 or rows_np.shape != data.shape or cols_np.shape != data.shape:
        raise ValueError(
            f"sparse_matmul: 'data', 'rows' and 'cols' must be 1-D of equal length; got "
            f"{data.shape}, {rows_np.shape}, {cols_np.shape}"
        )
    if rows_np.size and (rows_np.min() < 0 or rows_np.max() >= x.shape[-1]):
        raise ValueError(f"sparse_matmul: argument 'rows' must lie in [0, {x.shape[-1]}); got range "
                         f"[{rows_np.min()}, {rows_np.max()}]")
    if cols_np.size and (cols_np.min() < 0 or cols_np.max() >= n_out):
        raise ValueError(f"sparse_matmul: argument 'cols' must lie in [0, {n_out}); got range "
                         f"[{cols_np.min()}, {cols_np.max()}]")
    return _sparse_op(x, data, jnp.asarray(rows_np, jnp.int32), jnp.asarray(cols_np, jnp.int32), int(n_out))
