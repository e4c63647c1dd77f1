"""Per-step losses ``loss_fn(out, y) -> scalar`` for the :class:`~disttrace.train.Trainer`.

Every loss takes one step's model output and one step's target (any pytree) and
returns a scalar; the Trainer averages it over the steps of a trial, or applies it
to each step of a stream. Any callable of that form works: these are the provided ones
(the configuration registry ``disttrace.config`` names them).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

__all__ = ["cross_entropy", "masked_cross_entropy", "mse"]


def mse(out: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error over every element. Shapes: out, y (B, ...)."""
    return jnp.mean((out - y) ** 2)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch. Shapes: logits (B, C), labels (B,) int."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def masked_cross_entropy(logits: jax.Array, labels, mask: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy over the batch, times ``mask`` (a scalar for this step).

    Two spellings: ``masked_cross_entropy(logits, y)`` with the target
    ``y = {"label": (B,) int, "mask": ()}`` (the form the Trainer passes), or
    ``masked_cross_entropy(logits, labels, mask)``.

    Shapes: logits (B, C), labels (B,) int, mask ().

    Raises:
      ValueError: if the target is neither form.

    Example:
      >>> import jax.numpy as jnp
      >>> float(masked_cross_entropy(jnp.zeros((2, 2)), {"label": jnp.array([0, 1]), "mask": jnp.array(0.0)}))
      0.0
    """
    if mask is None:
        if not isinstance(labels, Mapping) or set(labels) != {"label", "mask"}:
            raise ValueError(
                "masked_cross_entropy: the target must be {'label': (B,) int, 'mask': ()} or given as "
                f"(labels, mask); got {type(labels).__name__}"
            )
        labels, mask = labels["label"], labels["mask"]
    return mask * cross_entropy(logits, labels)
