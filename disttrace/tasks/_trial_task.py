"""``TrialTask``: the one interface of the built-in tasks, and ``TrialStream``, a task as
an endless, seedable, seekable stream of steps.

A task is a frozen dataclass of plain parameters that draws whole trials of ``length``
steps from a ``jax.random`` key. It supplies ``length`` (T), ``n_in``, ``n_out``, ``kind``
(``"classification"`` or ``"regression"``) and ``sample(key, batch)``; this mixin adds the
rest from those alone:

- :meth:`TrialTask.sample` ``-> (xs (T, B, n_in) float32, targets, mask (T,) float32)``,
  ``targets`` one of
    * labels ``(B,)`` int32: one answer per trial, read where ``mask`` is 1 (a
      classification task with a single answer: evidence accumulation, delayed match);
    * labels ``(T, B)`` int32: an answer per step, read where ``mask`` is 1 (copy,
      drifting classification);
    * targets ``(T, B, n_out)`` float32: a regression target per step (integrator,
      drifting regression);
- :meth:`TrialTask.trials` ``-> (xs, ys)``: the same draw in the form
  ``Trainer.train_trial(xs, ys)`` takes (per-step targets, time-major);
- :meth:`TrialTask.stream` ``-> TrialStream``: step ``s`` of partition ``p`` is step
  ``s mod T`` of trial ``k = s // T``, drawn from ``fold_in(fold_in(PRNGKey(seed), p),
  k)`` — the keys of ``disttrace.streaming.TaskStream``, so with one partition both
  streams give the same inputs, step by step;
- :meth:`TrialTask.held_out`: a fixed set of trials from a key no stream uses (the key of
  ``TaskStream(task, ..., seed=seed).held_out(batch)``);
- :meth:`TrialTask.metric`: accuracy for classification, masked MSE for regression.

Both streams and both held-out sets draw through :func:`trial_sampler`, the jitted key
schedule ``(key, partition, index) -> sample(fold_in(fold_in(key, partition), index))``.

Why whole trials from one key: a step is found again by regenerating one trial (O(1) to
seek), and the data of a partition does not depend on which other partitions exist.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from disttrace import checks

__all__ = ["TrialStream", "TrialTask", "per_step_targets", "trial_sampler"]

KINDS = ("classification", "regression")
_MAX_FOLD = 2**32  # fold_in takes a uint32; PRNGKey keeps the low 32 bits of a seed without x64
_HELD_OUT_PARTITION = _MAX_FOLD - 1  # the "partition" TaskStream.held_out folds in
_HELD_OUT_INDEX = 1  # TaskStream.held_out's default set


@functools.lru_cache(maxsize=64)
def _sampler(task, rows: int):
    def trial(key, partition, index):
        return task.sample(jax.random.fold_in(jax.random.fold_in(key, partition), index), rows)

    return jax.jit(trial)


def trial_sampler(task, rows: int):
    """The key schedule of every stream of trials, jitted: ``(key, partition, index) ->
    task.sample(fold_in(fold_in(key, partition), index), rows)``.

    :class:`TrialStream`, :meth:`TrialTask.held_out` and ``disttrace.streaming.TaskStream``
    all draw through it, so their trials agree key for key. It is compiled once per
    ``(task, rows)`` and shared by the whole process (a stream is often rebuilt — on each
    seek of a new stream, each restart — and a compile takes a while); an unhashable task
    is compiled for this call alone.

    Args:
      task: anything with ``sample(key, batch)``, e.g. a :class:`TrialTask`.
      rows: the batch B of each draw.

    Returns:
      ``trial(key, partition, index)``, ``partition`` and ``index`` uint32 scalars, giving
      ``task.sample``'s ``(xs (T, rows, n_in), targets, mask (T,))`` as jax arrays.

    Example:
      >>> import jax, numpy as np
      >>> from disttrace.tasks import DelayedMatchToSample, trial_sampler
      >>> task = DelayedMatchToSample(delay=2)
      >>> xs, labels, mask = trial_sampler(task, 4)(jax.random.PRNGKey(0), np.uint32(0), np.uint32(0))
      >>> xs.shape[1:], labels.shape
      ((4, 3), (4,))
    """
    try:
        return _sampler(task, rows)
    except TypeError:  # an unhashable task
        return _sampler.__wrapped__(task, rows)


def _seed(who: str, seed, arg: str = "seed") -> int:
    seed = checks.non_negative_int(who, arg, seed)
    if seed >= _MAX_FOLD:  # PRNGKey would silently keep only the low 32 bits
        raise ValueError(f"{who}: argument {arg!r} must be an int in [0, 2**32); got {seed!r}")
    return seed


def per_step_targets(kind: str, targets, mask):
    """The per-step targets of a batch of trials from a task's ``sample`` (time-major, the
    form ``Trainer.train_trial`` takes; :meth:`TrialTask.trials` is ``sample`` then this):
    ``{"label": (T, B), "mask": (T,)}`` for classification (a per-trial label repeated at
    every step), the targets ``(T, B, n_out)`` unchanged for regression.

    Args:
      kind: ``"classification"`` or ``"regression"``.
      targets, mask: as ``sample`` returns them.
    """
    if kind == "regression":
        return targets
    labels = jnp.asarray(targets)
    if labels.ndim == 1:  # one answer per trial: repeated at every step
        labels = jnp.broadcast_to(labels, (mask.shape[0], *labels.shape))
    return {"label": labels, "mask": mask}


class TrialTask:
    """Mixin of the built-in tasks: everything but ``sample`` (module docstring).

    A subclass is a frozen dataclass (hashable: its jitted sampler is cached per task)
    with ``length``, ``n_in``, ``n_out``, ``kind`` and ``sample(key, batch) -> (xs (T,
    B, n_in), targets, mask (T,))``.
    """

    kind: str  # "classification" | "regression"

    def trials(self, key: jax.Array, batch: int):
        """One batch of trials in the form of ``Trainer.train_trial(xs, ys)``.

        Args:
          key: a ``jax.random`` key; batch: trials B.

        Returns:
          ``(xs (T, B, n_in), ys)``: the draw of ``sample(key, batch)`` with ``ys`` per
          step: ``{"label": (T, B) int32, "mask": (T,) float32}`` for classification
          (a per-trial label repeated at every step, as ``disttrace.train.label_targets``
          does; the layout of ``disttrace.train.masked_cross_entropy``), the targets
          ``(T, B, n_out)`` float32 for regression (for ``disttrace.train.mse``; the
          regression tasks here weight every step, ``mask`` is all ones).
        """
        xs, targets, mask = self.sample(key, batch)
        return xs, per_step_targets(self.kind, targets, mask)

    def stream(self, batch_size: int, seed: int = 0, partition: int = 0) -> TrialStream:
        """This task as an endless stream of steps (:class:`TrialStream`).

        Raises:
          ValueError: on a bad argument (named, with what is allowed).
        """
        return TrialStream(self, batch_size, seed=seed, partition=partition)

    def held_out(self, batch: int, seed: int = 0):
        """A fixed held-out set: the same trials for the same ``(batch, seed)``, from a key
        no stream of any seed uses (stream partitions are < 2**32 - 1).

        It equals ``disttrace.streaming.TaskStream(task, ..., seed=seed).held_out(batch)``.

        Returns:
          ``(xs (T, batch, n_in), targets, mask (T,))`` as :meth:`sample` gives them.

        Raises:
          ValueError: if ``batch`` is not a positive int or ``seed`` not in [0, 2**32).
        """
        who = f"{type(self).__name__}.held_out"
        batch = checks.positive_int(who, "batch", batch)
        key = jax.random.PRNGKey(_seed(who, seed))
        return trial_sampler(self, batch)(key, np.uint32(_HELD_OUT_PARTITION), np.uint32(_HELD_OUT_INDEX))

    def metric(self, outputs, targets, mask) -> float:
        """The task's score of a model's outputs on trials from :meth:`sample`.

        - classification, labels (B,): accuracy of the argmax of the ``mask``-weighted
          sum of the outputs over time (as ``disttrace.train.Trainer.evaluate``);
        - classification, labels (T, B): accuracy per step, averaged over the steps
          where ``mask`` > 0 (weighted by ``mask``) and the batch;
        - regression: mean squared error over the batch and the outputs, averaged over
          the steps weighted by ``mask``.

        Args:
          outputs: (T, B, n_out) logits or predictions (``learner.predict(xs)``).
          targets, mask: as :meth:`sample` returns them.

        Returns:
          A float: accuracy in [0, 1] (higher is better) or MSE (lower is better).

        Raises:
          ValueError: if the shapes do not fit together.
        """
        outputs, targets, mask = jnp.asarray(outputs), jnp.asarray(targets), jnp.asarray(mask)
        who = f"{type(self).__name__}.metric"
        if outputs.ndim != 3 or mask.ndim != 1 or outputs.shape[0] != mask.shape[0]:
            raise ValueError(
                f"{who}: outputs must be (T, B, n_out) and mask (T,); got outputs {outputs.shape}, mask {mask.shape}"
            )
        t_len, batch = outputs.shape[:2]
        allowed = {(batch,), (t_len, batch)} if self.kind == "classification" else {outputs.shape}
        if targets.shape not in allowed:
            raise ValueError(
                f"{who}: targets must have shape {' or '.join(map(str, sorted(allowed)))} for outputs "
                f"{outputs.shape}; got {targets.shape}"
            )
        weights = mask.astype(outputs.dtype)
        if self.kind == "regression":
            per_step = jnp.mean((outputs - targets.astype(outputs.dtype)) ** 2, axis=(1, 2))
            return float(jnp.sum(weights * per_step) / jnp.sum(weights))
        if targets.ndim == 1:
            pooled = jnp.einsum("t,tbc->bc", weights, outputs)
            return float(jnp.mean(jnp.argmax(pooled, -1).astype(targets.dtype) == targets))
        correct = (jnp.argmax(outputs, -1).astype(targets.dtype) == targets).astype(outputs.dtype)  # (T, B)
        return float(jnp.sum(weights * correct.mean(1)) / jnp.sum(weights))


class TrialStream:
    """A task's trials, one step at a time, without end: an iterator with ``seek``.

    Step ``s`` is step ``t = s mod T`` of trial ``k = s // T``, and trial ``k`` is
    ``task.sample(fold_in(fold_in(PRNGKey(seed), partition), k), batch_size)`` (module
    docstring). Every row starts a new trial at the same step (``boundary``), so one
    ``Trainer.reset_state()`` on each boundary starts all of them.

    Args:
      task: a :class:`TrialTask`.
      batch_size: rows B of each step.
      seed: the stream's seed, in [0, 2**32).
      partition: which partition's trials, in [0, 2**32 - 1) (the last is held out).

    Each ``next()`` gives ``(x (B, n_in) float32, y, boundary)`` as numpy values, ``y``
    this step of :meth:`TrialTask.trials`'s targets: ``{"label": (B,) int32, "mask": ()
    float32}`` for classification (the layout of ``disttrace.train.masked_cross_entropy``
    and of ``TaskStream``'s batches), ``(B, n_out)`` float32 for regression; ``boundary``
    is True on the first step of a trial.

    Raises:
      ValueError: on a bad argument (named, with what is allowed).
      OverflowError: from ``next()`` past trial 2**32 - 1 (the last foldable index).

    Example:
      >>> from disttrace.tasks import DelayedMatchToSample
      >>> stream = DelayedMatchToSample(delay=2).stream(batch_size=4, seed=0)
      >>> x, y, boundary = next(stream)
      >>> x.shape, y["label"].shape, boundary, stream.position
      ((4, 3), (4,), True, 1)
      >>> stream.seek(0)
      >>> bool((next(stream)[0] == x).all())
      True
    """

    def __init__(self, task: TrialTask, batch_size: int, *, seed: int = 0, partition: int = 0):
        who = "TrialStream"
        for attr in ("length", "n_in", "kind", "sample"):
            if not hasattr(task, attr):
                raise checks.ArgumentTypeError(
                    f"{who}: argument 'task' must have 'length', 'n_in', 'kind' and 'sample(key, batch)' (a "
                    f"disttrace.tasks task); got {type(task).__name__} without {attr!r}"
                )
        checks.one_of(who, "task.kind", task.kind, KINDS)
        self.task = task
        self.batch_size = checks.positive_int(who, "batch_size", batch_size)
        self.seed = _seed(who, seed)
        self.partition = checks.non_negative_int(who, "partition", partition)
        if self.partition >= _HELD_OUT_PARTITION:
            raise ValueError(
                f"{who}: argument 'partition' must be an int in [0, 2**32 - 1) (the last is the held-out "
                f"set's); got {partition!r}"
            )
        self._key = jax.random.PRNGKey(self.seed)
        self._trial = trial_sampler(task, self.batch_size)
        self._length = int(task.length)
        self._step = 0
        self._cached: tuple | None = None  # (trial index, xs, per-step targets)

    @property
    def position(self) -> int:
        """The next step's index (steps taken since step 0, after a :meth:`seek`)."""
        return self._step

    @property
    def trial_length(self) -> int:
        """T: steps per trial."""
        return self._length

    def seek(self, step: int) -> None:
        """Moves to ``step`` in O(1): the next ``next()`` gives that step (bitwise what an
        uninterrupted stream gives there).

        Raises:
          ValueError: if ``step`` is not an int >= 0.
        """
        self._step = checks.non_negative_int("TrialStream.seek", "step", step)

    def _load(self, index: int):
        if self._cached is None or self._cached[0] != index:
            if index >= _MAX_FOLD:
                raise OverflowError(f"TrialStream: trial {index} is past the last foldable trial index {_MAX_FOLD - 1}")
            xs, targets, mask = self._trial(self._key, np.uint32(self.partition), np.uint32(index))
            ys = jax.tree.map(np.asarray, per_step_targets(self.task.kind, targets, mask))
            self._cached = (index, np.asarray(xs, np.float32), ys)
        return self._cached[1:]

    def __iter__(self) -> TrialStream:
        return self

    def __next__(self):
        index, t = divmod(self._step, self._length)
        xs, ys = self._load(index)
        self._step += 1
        return xs[t], jax.tree.map(lambda a: a[t], ys), t == 0

    def __repr__(self) -> str:
        return (
            f"TrialStream({self.task!r}, batch_size={self.batch_size}, seed={self.seed}, "
            f"partition={self.partition}, position={self._step})"
        )
