"""``TaskStream``: a built-in trial task (``EvidenceAccumulation``) as an endless stream.

Trial boundaries are aligned: every row starts a new trial every ``T = task.length``
steps, so one ``Trainer.reset_state()`` every T steps (``run_worker(...,
reset_every=stream.trial_length)``) starts all of them; per-row resets are out of scope
(the learner's step count is one scalar for the batch).

Random access in O(1): partition ``p``'s trial ``k`` is drawn from the key
``fold_in(fold_in(PRNGKey(seed), p), k)`` (all R rows of the partition at once), so
seeking to any step regenerates only the current trial, and the data of a partition does
not depend on which other partitions a source serves.

Record ids: partition ``p``'s step ``s`` (``s = k·T + t``: trial ``k``, step ``t`` of
the trial) has R rows, whose records are ids ``s·R + j`` (``j`` the row within the
partition, ``R = batch_size / num_partitions``). After ``n`` steps a partition has used
records ``0 … n·R-1``, each once. The offset of a partition is its next step ``s`` (an
int); the partitions of a source move together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from disttrace import checks
from disttrace.streaming._partitions import lockstep_offset, offsets_for, rows_per_partition, served_partitions
from disttrace.streaming._source import Batch, fingerprint_of
from disttrace.tasks import per_step_targets, trial_sampler

__all__ = ["TaskStream"]

_MAX_FOLD = 2**32  # fold_in takes a uint32


def _per_step(leaf: np.ndarray, partition_leaves: list[np.ndarray], t: int) -> np.ndarray:
    """Step ``t`` of one target leaf across the served partitions: a (T,)-leaf (the loss
    weights of a step, the same in every partition) is one scalar; a (T, R, ...)-leaf is
    the partitions' rows, concatenated."""
    if leaf.ndim == 1:
        return leaf[t]
    return np.concatenate([a[t] for a in partition_leaves], axis=0)


class TaskStream:
    """A trial task streamed step by step, with aligned trials (see the module docstring).

    Args:
      task: a task with ``length`` (T), ``n_in`` and ``sample(key, batch) -> (xs (T, B,
        n_in), labels (B,), mask (T,))``, e.g. ``disttrace.tasks.EvidenceAccumulation``;
        a frozen dataclass, so that its ``repr`` names every parameter (fingerprint).
      batch_size: the global batch B (all partitions).
      partitions: the partitions this source serves (default: all).
      num_partitions: P; it must divide ``batch_size``.
      seed: the stream's seed.

    Each :meth:`next` gives ``Batch(x (B_local, n_in) float32, y, ids (B_local,) int64)``
    with ``y`` step t of the task's per-step targets (``disttrace.tasks.per_step_targets``
    of its ``sample``; a task without ``kind`` is a classification task) — ``{"label":
    (B_local,) int32, "mask": () float32}`` for classification (the target layout of
    :func:`disttrace.train.masked_cross_entropy`; the mask is 1 where the answer is read;
    a per-trial label at every step) or ``(B_local, n_out)`` float32 for regression
    (:func:`disttrace.train.mse`).

    Raises:
      ValueError: on a bad argument (named, with what is allowed).

    Example:
      >>> import disttrace as dt
      >>> from disttrace.tasks import EvidenceAccumulation
      >>> task = EvidenceAccumulation(n_cues=1, cue_len=2, gap=1, delay=1, recall=2, n_per_group=2)
      >>> stream = TaskStream(task, batch_size=4, partitions=[1], num_partitions=2, seed=0)
      >>> batch = stream.next()
      >>> batch.x.shape, batch.y["label"].shape, batch.y["mask"].shape, batch.ids.tolist()
      ((2, 8), (2,), (), [0, 1])
      >>> stream.offsets(), stream.trial_length
      ({1: 1}, 6)
    """

    def __init__(self, task, batch_size: int, partitions=None, num_partitions: int = 1, seed: int = 0):
        who = "TaskStream"
        for attr in ("length", "n_in", "sample"):
            if not hasattr(task, attr):
                raise checks.ArgumentTypeError(
                    f"{who}: argument 'task' must have 'length', 'n_in' and 'sample(key, batch)' (e.g. "
                    f"disttrace.tasks.EvidenceAccumulation); got {type(task).__name__} without {attr!r}"
                )
        self.task = task
        self.num_partitions = checks.positive_int(who, "num_partitions", num_partitions)
        self.rows = rows_per_partition(who, batch_size, num_partitions)
        self.batch_size = batch_size
        self.partitions = served_partitions(who, partitions, num_partitions)
        self.seed = checks.non_negative_int(who, "seed", seed)
        self._key = jax.random.PRNGKey(self.seed)
        self._trial = trial_sampler(task, self.rows)
        self._step = 0
        self._cache: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def trial_length(self) -> int:
        """T: steps per trial (pass it as ``run_worker(..., reset_every=T)``)."""
        return int(self.task.length)

    def _load(self, partition: int, index: int):
        cached = self._cache.get(partition)
        if cached is None or cached[0] != index:
            if index >= _MAX_FOLD:
                raise OverflowError(f"TaskStream: trial {index} is past the last foldable trial index {_MAX_FOLD - 1}")
            xs, targets, mask = self._trial(self._key, np.uint32(partition), np.uint32(index))
            # from `sample` (a task that only overrides `sample` streams what it samples)
            ys = per_step_targets(getattr(self.task, "kind", "classification"), targets, np.asarray(mask, np.float32))
            cached = (index, np.asarray(xs, np.float32), jax.tree.map(np.asarray, ys))
            self._cache[partition] = cached
        return cached[1:]

    def trial(self, partition: int, index: int):
        """Trial ``index`` of ``partition``: ``(xs (T, R, n_in), labels (R,), mask (T,))``, numpy
        (the task's ``sample``)."""
        partition = checks.non_negative_int("TaskStream.trial", "partition", partition)
        if partition >= self.num_partitions:
            raise ValueError(
                f"TaskStream.trial: argument 'partition' must be < num_partitions ({self.num_partitions}); got {partition}"
            )
        index = checks.non_negative_int("TaskStream.trial", "index", index)
        xs, labels, mask = self._trial(self._key, np.uint32(partition), np.uint32(index))
        return np.asarray(xs, np.float32), np.asarray(labels), np.asarray(mask, np.float32)

    def next(self) -> Batch:
        """The next step: row ``j`` of partition ``p`` sees step ``t`` of its trial."""
        index, t = divmod(self._step, self.trial_length)
        xs, ys = zip(*(self._load(p, index) for p in self.partitions))
        ids = self._step * self.rows + np.arange(self.rows, dtype=np.int64)
        x = np.concatenate([a[t] for a in xs], axis=0)
        y = jax.tree.map(lambda leaf, *each: _per_step(leaf, list(each), t), ys[0], *ys)
        self._step += 1
        return Batch(x, y, np.tile(ids, len(self.partitions)))

    def offsets(self) -> dict[int, int]:
        """``{partition: next step}``."""
        return {p: self._step for p in self.partitions}

    def seek(self, offsets) -> None:
        """Moves to the steps ``offsets`` gives (equal for every served partition)."""
        self._step = lockstep_offset("TaskStream.seek", offsets_for("TaskStream.seek", offsets, self.partitions))

    def fingerprint(self) -> str:
        """Task, global batch, P and seed (not the partitions served)."""
        return fingerprint_of(
            "TaskStream", task=repr(self.task), batch_size=self.batch_size, num_partitions=self.num_partitions,
            seed=self.seed,
        )

    def held_out(self, batch: int, seed: int = 1):
        """Trials for ``Trainer.evaluate``, from keys the stream never uses.

        Returns:
          ``(xs (T, batch, n_in), labels (batch,), mask (T,))`` as jax arrays.
        """
        batch = checks.positive_int("TaskStream.held_out", "batch", batch)
        seed = checks.non_negative_int("TaskStream.held_out", "seed", seed)
        # the stream folds partitions < P into the key; held-out trials take "partition" 2**32-1
        xs, labels, mask = trial_sampler(self.task, batch)(self._key, np.uint32(_MAX_FOLD - 1), np.uint32(seed))
        return jnp.asarray(xs), jnp.asarray(labels), jnp.asarray(mask)

    def close(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return (
            f"TaskStream({self.task!r}, batch_size={self.batch_size}, partitions={list(self.partitions)}, "
            f"num_partitions={self.num_partitions}, seed={self.seed})"
        )
