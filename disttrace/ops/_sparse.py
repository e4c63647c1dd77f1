"""Sparse matmul trace op: ``y[b, o] = Σ_j x[b, rows_j] · data_j · [cols_j = o]``.

The learnable weight is the data vector (nnz,) of a COO matrix of shape (I, O) with
fixed ``rows``/``cols``. D-RTRL keeps (B, K, nnz), gathered per non-zero:

.. math::
    E_t[b,k,j] = Σ_{k'} D_t[b,k,k',c_j] E_{t-1}[b,k',j] + g_t[b,k,c_j]\\, x_t[b,r_j]

ES-D-RTRL keeps ``ε^x`` (B, I) and the gradient ``Σ_b ε^x[b, r_j] s[b, c_j]``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

from disttrace import checks
from disttrace.ops._aliases import one_name, transformed
from disttrace.ops._blocks import apply_block
from disttrace.ops._element_wise import element_wise
from disttrace.ops._registry import TraceOpRule, register, trace_op
from disttrace.units import attach, in_unit, split

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


def _format_of(spar_mat) -> str | None:
    """``"COO"``, ``"CSR"`` or ``"CSC"`` for a brainunit.sparse or brainevent matrix, else
    ``None``. brainevent's classes are looked up only when brainevent is already loaded (a
    brainevent matrix cannot exist otherwise; it is no dependency); its ``CSR``/``CSC``
    do not subclass brainunit's."""
    modules = [u.sparse, sys.modules.get("brainevent")]
    for name in ("COO", "CSR", "CSC"):
        for module in modules:
            cls = None if module is None else _public_class(module, name)
            if cls is not None and isinstance(spar_mat, cls):
                return name
    return None


def _public_class(module, name: str):
    try:
        cls = getattr(module, name)
    except AttributeError:  # brainevent raises on a name it removed (its COO, in 0.1.0)
        return None
    return cls if isinstance(cls, type) else None


def sparse_coordinates(spar_mat) -> tuple[np.ndarray, np.ndarray, int]:
    """The (row, column) of every stored value of a sparse (I, O) matrix, in the order of
    its ``data``, and its number of columns O.

    Args:
      spar_mat: a ``brainunit.sparse`` COO/CSR/CSC or a ``brainevent`` CSR/CSC matrix.

    Returns:
      ``(rows, cols, n_out)``: two (nnz,) int arrays and an int.

    Raises:
      ValueError: for any other object, naming the accepted classes.
    """
    fmt = _format_of(spar_mat)
    if fmt is None:
        raise ValueError(
            "sparse_matmul: argument 'sparse_mat' must be a brainunit.sparse COO/CSR/CSC or a brainevent "
            f"CSR/CSC matrix; got {type(spar_mat).__module__}.{type(spar_mat).__qualname__}"
        )
    n_in, n_out = (int(n) for n in spar_mat.shape)
    if fmt == "COO":
        return np.asarray(spar_mat.row), np.asarray(spar_mat.col), n_out
    # compressed: indptr runs over the rows (CSR) or the columns (CSC), indices over the other
    runs = np.repeat(np.arange(n_in if fmt == "CSR" else n_out), np.diff(np.asarray(spar_mat.indptr)))
    other = np.asarray(spar_mat.indices)
    return (runs, other, n_out) if fmt == "CSR" else (other, runs, n_out)


def sparse_matmul(
    x: jax.Array,
    data: jax.Array | None = None,
    rows=None,
    cols=None,
    n_out: int | None = None,
    *,
    weight: jax.Array | None = None,
    sparse_mat=None,
    bias: jax.Array | None = None,
    weight_fn: Callable | None = None,
    bias_fn: Callable | None = None,
) -> jax.Array:
    """``x @ S`` for a COO sparse matrix ``S`` (I, n_out) whose values ``data`` learn online.

    Two ways to give the fixed sparsity pattern:

    - ours: ``sparse_matmul(x, data, rows, cols, n_out)``;
    - braintrace 0.2.8's: ``sparse_matmul(x, weight, *, sparse_mat, bias=None,
      weight_fn=None, bias_fn=None)``, where ``sparse_mat`` is a sparse (I, O) matrix
      whose ``data`` order ``weight`` follows (its own values are not used) and
      ``weight`` is ``data`` by its braintrace name. The result is
      ``x @ S(weight_fn(data)) + bias_fn(bias)``, with gradients taken with respect to
      the raw ``data`` and ``bias``.

    ``bias``, ``weight_fn`` and ``bias_fn`` work with either form. The bias is an
    :func:`~disttrace.ops.element_wise` term, so its trace is exact under every
    algorithm.

    Args:
      x: input, (B, I) or (I,).
      data: (nnz,) learnable values (braintrace: ``weight``; give one of the two).
      rows: (nnz,) integer row (input) indices.
      cols: (nnz,) integer column (output) indices.
      n_out: number of output columns O.
      weight: braintrace's name for ``data``.
      sparse_mat: a ``brainunit.sparse`` COO/CSR/CSC or ``brainevent`` CSR/CSC matrix
        of shape (I, O), instead of ``rows``, ``cols`` and ``n_out``.
      bias: optional (O,) bias.
      weight_fn: optional element-wise transform of ``data``.
      bias_fn: optional element-wise transform of ``bias`` (hashable: a module-level
        function).

    Returns:
      (B, O) output.

    Raises:
      ValueError: on inconsistent shapes or out-of-range indices, on a pattern given
        both ways or neither, or on ``data`` and ``weight`` both or neither given,
        naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.sparse_matmul(jnp.ones((2, 3)), jnp.ones(2), [0, 2], [1, 1], 2)
      Array([[0., 2.],
             [0., 2.]], dtype=float32)
    """
    (data, w_unit), (x, x_unit) = split(one_name("sparse_matmul", ("data", data), ("weight", weight))), split(x)
    x, unit = jnp.asarray(x), x_unit * w_unit
    if sparse_mat is not None:
        if rows is not None or cols is not None or n_out is not None:
            raise ValueError(
                "sparse_matmul: give the sparsity pattern as 'rows', 'cols' and 'n_out' or as 'sparse_mat', not both"
            )
        rows, cols, n_out = sparse_coordinates(sparse_mat)
        if x.shape[-1] != sparse_mat.shape[0]:
            raise ValueError(
                f"sparse_matmul: argument 'x' must end in {sparse_mat.shape[0]} (the rows of 'sparse_mat' of shape "
                f"{tuple(sparse_mat.shape)}); got shape {x.shape}"
            )
    elif rows is None or cols is None or n_out is None:
        raise ValueError("sparse_matmul: arguments 'rows', 'cols' and 'n_out' (or braintrace's 'sparse_mat') are required")
    data = jnp.asarray(transformed("sparse_matmul", "weight_fn", weight_fn, data))
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
    if bias is not None and jnp.shape(bias) != (n_out,):
        raise ValueError(f"sparse_matmul: argument 'bias' must have shape ({n_out},); got {jnp.shape(bias)}")
    y = _sparse_op(x, data, jnp.asarray(rows_np, jnp.int32), jnp.asarray(cols_np, jnp.int32), int(n_out))
    if bias is not None:
        y = y + element_wise(jnp.asarray(in_unit("sparse_matmul", "bias", bias, unit)), bias_fn)
    return attach(y, unit)
