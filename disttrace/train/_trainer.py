"""``Trainer``: online gradients from a learner, an optax update, metrics.

Each :meth:`Trainer.train_batch` resets the model's hidden states and traces (one
trial per batch), runs ``etrace_grad`` over the trial and applies the optimizer to
the model's ``ParamState``s. Parameters and optimizer state are plain pytrees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["Trainer", "masked_cross_entropy"]


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch, times ``mask`` (a scalar for this step).

    Shapes: logits (B, C), labels (B,) int, mask ().
    """
    return mask * optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass
class Trainer:
    """Online training of a compiled learner.

    Attributes:
      learner: from :func:`disttrace.compile`.
      optimizer: an optax gradient transformation.
      chunk_size: passed to ``etrace_grad``.
    """

    learner: Any
    optimizer: optax.GradientTransformation
    chunk_size: int | None = None

    def __post_init__(self):
        self.opt_state = self.optimizer.init(self.learner.params())
        self.step_count = 0
        self._update = jax.jit(self._apply)
        self._step_fn = lambda x, label, m: masked_cross_entropy(self.learner(x), label, m)

    def _apply(self, params, opt_state, grads):
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def train_batch(self, xs, labels, mask) -> float:
        """One trial: reset, online gradient over the sequence, optimizer update.

        Args:
          xs: (T, B, I) inputs; labels: (B,) ints; mask: (T,) loss weights.

        Returns:
          The mean loss over the trial's steps.
        """
        self.learner.reset_state()
        labels_t = jnp.broadcast_to(labels, (xs.shape[0],) + labels.shape)
        grads, losses = self.learner.etrace_grad(
            xs, labels_t, mask, step_fn=self._step_fn, return_value=True, chunk_size=self.chunk_size
        )
        params, self.opt_state = self._update(self.learner.params(), self.opt_state, grads)
        self.learner.binding.write(params=params)
        self.step_count += 1
        return float(losses.mean())

    def save(self, checkpointer, extra: dict | None = None, meta: dict | None = None, *, force: bool = False) -> bool:
        """Saves parameters, optimizer state and ``extra`` arrays as step :attr:`step_count`.

        Each trial starts from reset hidden states and traces, so between trials this
        is the whole training state.

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          extra: more arrays to save with it (e.g. the data RNG key), restored by
            :meth:`restore` given a template of the same structure.
          meta: JSON-serialisable host-side values.
          force: save even off the checkpointer's interval.
        """
        state = {"params": self.learner.params(), "opt_state": self.opt_state, "extra": extra or {}}
        return checkpointer.save(self.step_count, state, meta, force=force)

    def restore(self, checkpointer, extra: dict | None = None, step: int | None = None) -> tuple[dict, dict]:
        """Restores what :meth:`save` wrote (default: the latest step).

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          extra: a template (arrays) of the ``extra`` given to :meth:`save`.
          step: which step.

        Returns:
          ``(extra, meta)`` as saved.

        Raises:
          FileNotFoundError, ValueError: from ``Checkpointer.restore``; nothing changes then.
        """
        target = {"params": self.learner.params(), "opt_state": self.opt_state, "extra": extra or {}}
        target = jax.tree.map(jnp.asarray, target)
        state, meta = checkpointer.restore(target, step)
        self.learner.binding.write(params=state["params"])
        self.opt_state = state["opt_state"]
        self.step_count = checkpointer.latest_step() if step is None else step
        return state["extra"], meta

    def accuracy(self, xs, labels, mask) -> float:
        """Accuracy of the mask-weighted mean logits against ``labels``."""
        self.learner.reset_state()
        logits = self.learner.predict(xs)  # (T, B, C)
        pooled = jnp.einsum("t,tbc->bc", mask.astype(logits.dtype), logits)
        return float(jnp.mean(jnp.argmax(pooled, -1) == labels))
