"""Copy (recall): see a sequence of symbols, then, after a delimiter, repeat it in order.

A trial shows ``memory_length`` symbols (each one of ``n_symbols``, one per step), then
``delay`` blank steps, then the delimiter for one step; in the ``memory_length`` steps
after it the model must output the symbols in the order they came (the copy task of
Hochreiter & Schmidhuber, 1997, and Graves et al., 2014, in its per-step-answer form).
The answer varies per step, so the labels are (T, B).

Input channels: ``[symbol one-hot (n_symbols) | delimiter (1)]``; the recall steps are
blank (the model counts them itself). No downloads: every batch is drawn from a
``jax.random`` key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.tasks._trial_task import TrialTask

__all__ = ["CopyTask"]


@dataclasses.dataclass(frozen=True)
class CopyTask(TrialTask):
    """Task parameters; :meth:`sample` draws a batch (module docstring).

    Attributes:
      n_symbols: alphabet size (>= 2); chance is ``1 / n_symbols`` per recall step.
      memory_length: symbols to remember and recall (>= 1).
      delay: blank steps between the sequence and the delimiter (>= 0).

    Shapes: ``length`` T = 2·memory_length + delay + 1; ``n_in`` = n_symbols + 1;
    ``n_out`` = n_symbols; ``kind`` = "classification".

    Raises:
      ValueError: on a bad argument (named, with the value and what is allowed).

    Example:
      >>> import jax
      >>> task = CopyTask(n_symbols=3, memory_length=2, delay=1)
      >>> xs, labels, mask = task.sample(jax.random.PRNGKey(0), 4)
      >>> xs.shape, labels.shape, mask.tolist()
      ((6, 4, 4), (6, 4), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
      >>> bool((labels[4:] == xs[:2, :, :3].argmax(-1)).all())
      True
    """

    n_symbols: int = 4
    memory_length: int = 5
    delay: int = 0

    kind = "classification"

    def __post_init__(self):
        who = "CopyTask"
        checks.positive_int(who, "n_symbols", self.n_symbols)
        if self.n_symbols < 2:
            raise ValueError(f"{who}: argument 'n_symbols' must be an int >= 2; got {self.n_symbols!r}")
        checks.positive_int(who, "memory_length", self.memory_length)
        checks.non_negative_int(who, "delay", self.delay)

    @property
    def n_in(self) -> int:
        return self.n_symbols + 1

    @property
    def n_out(self) -> int:
        return self.n_symbols

    @property
    def length(self) -> int:
        return 2 * self.memory_length + self.delay + 1

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compile per (task, batch): eager calls are fast
    def sample(self, key: jax.Array, batch: int):
        """Draws a batch.

        Args:
          key: a ``jax.random`` key; batch: trials B.

        Returns:
          ``(xs, labels, mask)``: inputs (T, B, n_in) float32 (0/1), labels (T, B) int32
          (the symbol to recall at each recall step, 0 elsewhere), mask (T,) float32, 1
          on the recall steps.

        Raises:
          ValueError: if ``batch`` is not a positive int.
        """
        batch = checks.positive_int("CopyTask.sample", "batch", batch)
        m, blank = self.memory_length, self.memory_length + self.delay
        symbols = jax.random.randint(key, (m, batch), 0, self.n_symbols)  # (M, B)
        shown = jax.nn.one_hot(symbols, self.n_symbols, dtype=jnp.float32)  # (M, B, n)
        rest = jnp.zeros((self.length - m, batch, self.n_symbols), jnp.float32)
        delimiter = (jnp.arange(self.length) == blank).astype(jnp.float32)
        xs = jnp.concatenate(
            [jnp.concatenate([shown, rest]), jnp.broadcast_to(delimiter[:, None, None], (self.length, batch, 1))],
            axis=-1,
        )
        labels = jnp.concatenate([jnp.zeros((blank + 1, batch), jnp.int32), symbols.astype(jnp.int32)])
        mask = (jnp.arange(self.length) > blank).astype(jnp.float32)
        return xs, labels, mask
