"""``Embedding``: a lookup table whose rows learn online (via ``ops.embedding``)."""

from __future__ import annotations

import math
import numbers

import brainstate
import jax
import jax.numpy as jnp

from disttrace.checks import ArgumentTypeError
from disttrace.nn import _validation as check
from disttrace.ops import embedding

__all__ = ["Embedding"]

_LECUN_UNIFORM = brainstate.nn.init.LecunUniform()


class Embedding(brainstate.nn.Module):
    """Rows of a table ``W`` (V, F) selected by integer indices.

    Args:
      num_embeddings: V.
      embedding_size: F (an int or a tuple; the table is (V, *F)).
      embedding_init: initializer or array (default LeCun uniform).
      padding_idx: a row that starts at zero and never learns (its gradient is zero).
      max_norm: rows looked up are rescaled to at most this norm (the table itself
        is not rewritten; the rescaling is part of the differentiated forward pass).
      norm_type: the p of the p-norm for ``max_norm``.
      scale_grad_by_freq: not supported (ValueError if True).
      freeze: hold the table in a non-learned state: no trace, no gradient.
      name, param_type: as brainstate.

    ``weight.value`` is the table (V, *F). Input: integer indices of any shape (...)
    -> (..., *F). Under D-RTRL the trace is (B, K, V, F) (dense in V). A pretrained
    table: :meth:`from_pretrained`. Attributes ``freeze`` and ``scale_grad_by_freq``
    hold the arguments, as brainstate's.

    Raises:
      ValueError: for bad sizes or a non-integer input (naming ``'x'``).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.Embedding(10, 4)(jnp.array([[1, 2], [3, 4]])).shape
      (2, 2, 4)
    """

    def __init__(self, num_embeddings: int, embedding_size, embedding_init=_LECUN_UNIFORM, padding_idx=None,
                 max_norm=None, norm_type: float = 2.0, scale_grad_by_freq: bool = False, freeze: bool = False,
                 name=None, param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        self.num_embeddings = check.positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_size = check.size("Embedding", "embedding_size", embedding_size)
        self.out_size = self.embedding_size
        if padding_idx is not None:
            n = self.num_embeddings
            check.number("Embedding", "padding_idx", padding_idx, low=-n, high=n, high_open=True)
            if not isinstance(padding_idx, numbers.Integral):  # number() also takes floats
                raise ArgumentTypeError(
                    f"Embedding: argument 'padding_idx' must be an int in [-{n}, {n}) or None; got {padding_idx!r}"
                )
        if max_norm is not None:
            check.number("Embedding", "max_norm", max_norm, low=0.0, low_open=True)
        check.number("Embedding", "norm_type", norm_type, low=0.0, low_open=True)
        if scale_grad_by_freq:
            raise ValueError("Embedding: argument 'scale_grad_by_freq' must be False (not supported by online learning)")
        self.padding_idx = None if padding_idx is None else padding_idx % self.num_embeddings
        self.max_norm, self.norm_type = max_norm, float(norm_type)
        self.freeze = check.boolean("Embedding", "freeze", freeze)
        self.scale_grad_by_freq = False
        table = brainstate.nn.init.param(embedding_init, (self.num_embeddings, *self.embedding_size))
        if self.padding_idx is not None:
            table = table.at[self.padding_idx].set(0.0)
        self.weight = (brainstate.State if freeze else param_type)(table)

    @classmethod
    def from_pretrained(cls, embeddings, padding_idx=None, max_norm=None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, freeze: bool = True, name=None,
                        param_type: type = brainstate.ParamState):
        """An ``Embedding`` whose table is ``embeddings`` (brainstate's/braintrace's
        ``from_pretrained``; unlike the constructor, ``freeze`` defaults to True).

        Args:
          embeddings: the table (V, *F), at least 2-d: V = ``num_embeddings``, F =
            ``embedding_size``.
          padding_idx, max_norm, norm_type, scale_grad_by_freq, name, param_type: as the
            constructor (the ``padding_idx`` row is set to zero, as brainstate does).
          freeze: hold the table in a non-learned state (default True).

        Raises:
          ValueError: if ``embeddings`` is not an array of at least 2 dims, or as the
            constructor.

        Example:
          >>> import jax.numpy as jnp, disttrace as dt
          >>> emb = dt.nn.Embedding.from_pretrained(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
          >>> emb(jnp.array([1])).tolist()
          [[3.0, 4.0]]
        """
        table = jnp.asarray(embeddings)
        if table.ndim < 2:
            raise ValueError(
                f"Embedding.from_pretrained: argument 'embeddings' must be at least 2-d (num_embeddings, "
                f"*embedding_size); got shape {table.shape}"
            )
        return cls(table.shape[0], table.shape[1:], embedding_init=table, padding_idx=padding_idx, max_norm=max_norm,
                   norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, freeze=freeze, name=name,
                   param_type=param_type)

    def _table(self):
        table = self.weight.value
        if self.padding_idx is not None:
            row = jax.lax.stop_gradient(table[self.padding_idx])
            table = table.at[self.padding_idx].set(row)
        if self.max_norm is not None:
            axes = tuple(range(1, table.ndim))
            power = jnp.sum(jnp.abs(table) ** self.norm_type, axis=axes, keepdims=True)
            # the p-th root has an infinite derivative at 0: keep all-zero rows off it
            safe = jnp.where(power > 0, power, 1.0)
            norm = jnp.where(power > 0, safe ** (1.0 / self.norm_type), 0.0)
            table = table * jnp.minimum(1.0, self.max_norm / jnp.maximum(norm, 1e-12))
        return table.reshape(self.num_embeddings, -1)

    def update(self, x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"Embedding: argument 'x' must hold integer indices; got dtype {x.dtype}")
        idx = x.reshape((math.prod(x.shape),)) if x.ndim != 1 else x
        rows = embedding(idx, self._table())
        return rows.reshape((*x.shape, *self.embedding_size))
