"""Embedding trace op: ``y = table[idx]``.

Shapes: ``idx`` (B,) integers, ``table`` (V, O), ``y`` (B, O). In trace space this is a
matmul with one-hot features ``onehot(idx)`` (B, V), so D-RTRL keeps (B, K, V, O) and
ES-D-RTRL a smoothed one-hot (B, V).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.ops._aliases import one_name, transformed
from disttrace.ops._matmul import MatmulRule
from disttrace.ops._registry import register, trace_op
from disttrace.units import attach, split

__all__ = ["embedding"]


@dataclasses.dataclass(frozen=True)
class _EmbeddingRule(MatmulRule):
    def features(self, operands):
        idx, table = operands
        return jax.nn.one_hot(idx, table.shape[0], dtype=table.dtype)

    def to_weights(self, tgrad, operands, op_fn):
        return tuple(tgrad)


register(_EmbeddingRule(name="embedding", input_argnum=0, weight_argnums=(1,)))


def _dt_embedding(idx, table):
    return jnp.take(table, idx, axis=0)


_embedding_op = trace_op("embedding", _dt_embedding)


def embedding(
    idx: jax.Array | None = None,
    table: jax.Array | None = None,
    *,
    indices: jax.Array | None = None,
    weight: jax.Array | None = None,
    weight_fn: Callable | None = None,
) -> jax.Array:
    """Rows of ``table`` selected by integer ``idx``, with eligibility traces.

    Also accepts braintrace 0.2.8's signature ``embedding(indices, weight, *,
    weight_fn=None)``: ``indices`` and ``weight`` are ``idx`` and ``table`` by their
    braintrace names (give one of each pair); ``weight_fn`` transforms the table
    before the lookup, with the gradient taken with respect to the raw table.

    Args:
      idx: integer indices, shape (B,) or ().
      table: (V, O) embedding matrix.
      indices: braintrace's name for ``idx``.
      weight: braintrace's name for ``table``.
      weight_fn: optional shape-preserving transform of the table.

    Returns:
      (B, O) rows.

    Raises:
      ValueError: if ``idx`` is not integer or ``table`` is not a matrix, or a value is
        given under both names.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.embedding(jnp.array([0, 2]), jnp.eye(3)).shape
      (2, 3)
    """
    idx = jnp.asarray(one_name("embedding", ("idx", idx), ("indices", indices)))
    table, unit = split(one_name("embedding", ("table", table), ("weight", weight)))
    table = jnp.asarray(transformed("embedding", "weight_fn", weight_fn, table))
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"embedding: argument 'idx' must be integer; got dtype {idx.dtype}")
    if table.ndim != 2:
        raise ValueError(f"embedding: argument 'table' must be (V, O); got shape {table.shape}")
    return attach(_embedding_op(idx, table), unit)
