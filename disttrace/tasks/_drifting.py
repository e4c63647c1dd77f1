"""A drifting stream: the input-to-target mapping switches every ``switch_every`` steps.

Every step is a fresh input ``x_t ~ N(0, I)`` (``n_features``) and a target given by the
mapping of the current context ``c``: the label ``argmax(x_t W_c)`` (classification) or
the value ``x_t W_c / √n_features`` (regression), with ``W_c`` (n_features, n_out) ~
N(0, 1) fixed by ``mapping_seed`` (the same in every trial and every stream). The
context cycles through ``n_contexts`` mappings, one every ``switch_every`` steps; a trial
is one full cycle (T = n_contexts·switch_every), so on a stream of such trials the
context of step ``s`` is ``(s // switch_every) mod n_contexts`` whatever the trial.

Without a cue (the default) nothing in the input says that the mapping changed: a model
trained online on the stream (one update per step, no reset) must notice the switch from
its errors and re-adapt, which is what the task is for (continual learning under
non-stationary statistics; contexts recur, so forgetting and relearning are visible).
With ``cue=True`` a one-hot of the context is appended to the input, and the task
becomes a stationary context-dependent mapping that trials can teach. Independent random
mappings of two classes disagree on a fraction ``angle / π`` of inputs, where ``angle`` is
the angle between their weight differences (about half on average in high dimension).
No downloads: every batch is drawn from a ``jax.random`` key.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.tasks._trial_task import KINDS, TrialTask, _seed

__all__ = ["DriftingTask"]


@dataclasses.dataclass(frozen=True)
class DriftingTask(TrialTask):
    """Task parameters; :meth:`sample` draws a batch (module docstring).

    Attributes:
      n_features: input features (>= 1).
      n_out: classes (>= 2) for classification, target size (>= 1) for regression.
      n_contexts: mappings cycled through (>= 1; 1 is a stationary task).
      switch_every: steps each mapping lasts (>= 1).
      kind: "classification" (labels (T, B)) or "regression" (targets (T, B, n_out)).
      cue: append a one-hot of the current context to the input.
      mapping_seed: seed of the mappings ``W_c``, in [0, 2**32).

    Shapes: ``length`` T = n_contexts·switch_every; ``n_in`` = n_features (+ n_contexts
    with ``cue``); mask all ones (every step is scored).

    Raises:
      ValueError: on a bad argument (named, with the value and what is allowed).

    Example:
      >>> import jax
      >>> task = DriftingTask(n_features=3, switch_every=4)
      >>> xs, labels, mask = task.sample(jax.random.PRNGKey(0), 5)
      >>> xs.shape, labels.shape, mask.shape, task.context(6)
      ((8, 5, 3), (8, 5), (8,), 1)
    """

    n_features: int = 8
    n_out: int = 2
    n_contexts: int = 2
    switch_every: int = 100
    kind: str = "classification"
    cue: bool = False
    mapping_seed: int = 0

    def __post_init__(self):
        who = "DriftingTask"
        for name in ("n_features", "n_out", "n_contexts", "switch_every"):
            checks.positive_int(who, name, getattr(self, name))
        checks.one_of(who, "kind", self.kind, KINDS)
        if self.kind == "classification" and self.n_out < 2:
            raise ValueError(f"{who}: argument 'n_out' must be an int >= 2 (classes) for kind 'classification'; "
                             f"got {self.n_out!r}")
        checks.boolean(who, "cue", self.cue)
        _seed(who, self.mapping_seed, "mapping_seed")

    @property
    def n_in(self) -> int:
        return self.n_features + (self.n_contexts if self.cue else 0)

    @property
    def length(self) -> int:
        return self.n_contexts * self.switch_every

    def context(self, step: int) -> int:
        """The context (mapping index) of stream step ``step``, or of step ``step`` of a trial."""
        return (checks.non_negative_int("DriftingTask.context", "step", step) // self.switch_every) % self.n_contexts

    def mappings(self) -> jax.Array:
        """The mappings ``W`` (n_contexts, n_features, n_out) float32."""
        return jax.random.normal(
            jax.random.PRNGKey(self.mapping_seed), (self.n_contexts, self.n_features, self.n_out), jnp.float32
        )

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compile per (task, batch): eager calls are fast
    def sample(self, key: jax.Array, batch: int):
        """Draws a batch: one cycle through every context.

        Args:
          key: a ``jax.random`` key; batch: trials B.

        Returns:
          ``(xs, targets, mask)``: inputs (T, B, n_in) float32; labels (T, B) int32
          (classification) or targets (T, B, n_out) float32 (regression); mask (T,)
          float32 of ones.

        Raises:
          ValueError: if ``batch`` is not a positive int.
        """
        batch = checks.positive_int("DriftingTask.sample", "batch", batch)
        features = jax.random.normal(key, (self.length, batch, self.n_features), jnp.float32)
        context = jnp.arange(self.length) // self.switch_every  # (T,)
        w = self.mappings()[context]  # (T, n_features, n_out)
        scores = jnp.einsum("tbf,tfo->tbo", features, w)
        if self.kind == "classification":
            targets = jnp.argmax(scores, -1).astype(jnp.int32)
        else:
            targets = scores / jnp.float32(math.sqrt(self.n_features))
        xs = features
        if self.cue:
            cue = jax.nn.one_hot(context, self.n_contexts, dtype=jnp.float32)[:, None, :]
            xs = jnp.concatenate([features, jnp.broadcast_to(cue, (self.length, batch, self.n_contexts))], axis=-1)
        return xs, targets, jnp.ones((self.length,), jnp.float32)
