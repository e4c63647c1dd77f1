"""``WorkerSpec``: everything a streaming run needs, as one frozen, picklable value.

The driver sends the same spec to every worker actor; a worker builds its trainer, its
source (its own partitions) and its checkpointer from it, so nothing but plain values
crosses a process boundary. The model comes from ``trainer_factory``
(``"module:function"``, called as ``function(spec, batch_size, mesh) -> Trainer``, where
``batch_size`` is the batch the learner is compiled for — the worker's local batch, or
the global one in sync mode, where ``mesh`` spans every worker's devices — and ``mesh``
is ``None`` otherwise); the data from ``source_factory`` (``function(spec, rank) ->
StreamSource`` over the worker's partitions). The defaults are :func:`counting_trainer`,
a small leaky-rate regression net, and :func:`counting_source`, the
:class:`~disttrace.streaming.CountingStream`; ``disttrace.jobs`` builds both from a
``TrainConfig`` carried in ``config``. Every worker builds the model with the same seed,
so all start from the same parameters.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from typing import Any

from disttrace import checks

__all__ = [
    "MODES",
    "WorkerSpec",
    "build_source",
    "build_trainer",
    "counting_source",
    "counting_trainer",
    "worker_directory",
]

MODES = ("local", "sync", "async")


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """A streaming run (by default on a :class:`~disttrace.streaming.CountingStream`).

    Attributes:
      mode: ``"local"`` (no Ray: one ``run_worker`` in this process), ``"sync"``
        (``num_workers`` Ray actors forming one ``jax.distributed`` job: one global step
        on a mesh of every worker's devices, collective checkpoints in ``checkpoint_dir``)
        or ``"async"`` (``num_workers`` Ray actors, parameters averaged every
        ``average_every`` steps).
      num_workers: W (``local``: must be 1).
      num_partitions: P (default W); a multiple of W; worker ``r`` serves ``r, r+W, …``.
      batch_size: the global batch B; a multiple of P.
      n_records: records per partition of the counting stream (a multiple of B / P).
      n_in, n_out, hidden: sizes of the stream and of the default model.
      seed: seeds the stream and the model (the same in every worker).
      lr, momentum: SGD of the default model.
      max_steps: stream steps to run in total (``None``: to the end of the stream);
        async: a multiple of ``average_every``.
      average_every: K, steps between parameter averages (async).
      checkpoint_every: steps between checkpoints (``None``: the final one only);
        async: a multiple of ``average_every``.
      checkpoint_dir: ``local``: the checkpoint directory; ``async``: one directory per
        worker, ``<checkpoint_dir>/rank-<r>`` (see :func:`worker_directory`). ``None``:
        no checkpoints (and no recovery: async then needs it).
      max_to_keep: checkpoints kept per directory (>= 2, so that a step common to every
        rank survives a crash in the middle of a save).
      max_failures: worker failures (rollbacks) tolerated before the run fails.
      devices_per_worker: CPU devices of each actor (``XLA_FLAGS``); 1 by default.
      address: a Ray cluster ``host:port`` (or ``"auto"``); ``None``: ``RAY_ADDRESS``,
        else a new local cluster.
      num_cpus: CPUs of a local cluster the driver starts (``None``: Ray's default).
      resources_per_worker: ``.options(...)`` of each actor (default ``{"num_cpus": 1}``).
      log_every: steps between progress lines (``None``: none).
      stall_timeout_s: a worker that reports nothing for this long is a failure.
      trainer_factory: ``"module:function"`` building the trainer (module docstring).
      source_factory: ``"module:function"`` building a worker's source (module docstring).
      reset_every: steps per trial of a trial stream: hidden states and traces are reset
        every this many steps (``None``: never).
      evaluate_every_log: evaluate held-out trials at every progress line (local and
        async modes, when the source has ``held_out``).
      tpu_slice: ``{"topology", "accelerator_version"}``: place one worker per host of a
        TPU slice (``ray.util.tpu.slice_placement_group``).
      config: the ``TrainConfig`` (plain data) the factories read, or ``None``.
      keep_freed_memory: each worker's process keeps the memory XLA frees for the next
        step (:func:`disttrace.allocator.keep_freed_memory`); in ``local`` mode that is
        the calling process, hence off by default.
    """

    mode: str = "local"
    num_workers: int = 1
    num_partitions: int | None = None
    batch_size: int = 8
    n_records: int = 400
    n_in: int = 4
    n_out: int = 2
    hidden: int = 8
    seed: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    max_steps: int | None = None
    average_every: int = 10
    checkpoint_every: int | None = 20
    checkpoint_dir: str | None = None
    max_to_keep: int = 3
    max_failures: int = 3
    devices_per_worker: int = 1
    address: str | None = None
    num_cpus: int | None = None
    resources_per_worker: Mapping[str, Any] | None = None
    log_every: int | None = 100
    stall_timeout_s: float = 300.0
    trainer_factory: str = "disttrace.streaming.ray._spec:counting_trainer"
    source_factory: str = "disttrace.streaming.ray._spec:counting_source"
    reset_every: int | None = None
    evaluate_every_log: bool = False
    tpu_slice: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    keep_freed_memory: bool = False

    def __post_init__(self):
        who = "WorkerSpec"
        checks.one_of(who, "mode", self.mode, MODES)
        w = checks.positive_int(who, "num_workers", self.num_workers)
        if self.mode == "local" and w != 1:
            raise ValueError(f"{who}: mode 'local' runs one worker; argument 'num_workers' must be 1, got {w}")
        p = w if self.num_partitions is None else checks.positive_int(who, "num_partitions", self.num_partitions)
        if p % w:
            raise ValueError(
                f"{who}: argument 'num_partitions' ({p}) must be a multiple of num_workers ({w}), so that every "
                f"worker serves the same number of partitions; e.g. {max(w, p - p % w)} or {p - p % w + w}"
            )
        object.__setattr__(self, "num_partitions", p)
        b = checks.positive_int(who, "batch_size", self.batch_size)
        if b % p:
            raise ValueError(
                f"{who}: argument 'batch_size' ({b}) must be a multiple of num_partitions ({p}); "
                f"e.g. {max(p, b - b % p)} or {b - b % p + p}"
            )
        for name in ("n_records", "n_in", "n_out", "hidden", "average_every", "max_to_keep", "devices_per_worker"):
            checks.positive_int(who, name, getattr(self, name))
        checks.non_negative_int(who, "seed", self.seed)
        checks.non_negative_int(who, "max_failures", self.max_failures)
        checks.number(who, "lr", self.lr)
        checks.number(who, "momentum", self.momentum)
        checks.number(who, "stall_timeout_s", self.stall_timeout_s)
        if self.stall_timeout_s <= 0:
            raise ValueError(f"{who}: argument 'stall_timeout_s' must be > 0; got {self.stall_timeout_s}")
        for name in ("max_steps", "checkpoint_every", "log_every", "num_cpus", "reset_every"):
            if getattr(self, name) is not None:
                checks.positive_int(who, name, getattr(self, name))
        if self.mode == "sync" and b % (w * self.devices_per_worker):
            n = w * self.devices_per_worker
            raise ValueError(
                f"{who}: argument 'batch_size' ({b}) must be divisible by the global device count (num_workers * "
                f"devices_per_worker = {w} * {self.devices_per_worker} = {n}) and by num_partitions ({p}) in sync mode"
            )
        if self.mode == "async":
            k = self.average_every
            for name in ("checkpoint_every", "max_steps"):
                value = getattr(self, name)
                if value is not None and value % k:
                    raise ValueError(
                        f"{who}: argument '{name}' ({value}) must be a multiple of average_every ({k}) in async "
                        f"mode (checkpoints and the end fall on averaging rounds); e.g. {max(k, value - value % k)}"
                    )
            if self.max_to_keep < 2:
                raise ValueError(
                    f"{who}: argument 'max_to_keep' must be >= 2 in async mode (a step common to every rank must "
                    f"survive a crash in the middle of a save); got {self.max_to_keep}"
                )
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, str | os.PathLike):
                raise checks.ArgumentTypeError(
                    f"{who}: argument 'checkpoint_dir' must be a path or None; got {self.checkpoint_dir!r}"
                )
            object.__setattr__(self, "checkpoint_dir", os.fspath(self.checkpoint_dir))
        if self.address is not None and not isinstance(self.address, str):
            raise checks.ArgumentTypeError(f"{who}: argument 'address' must be a str or None; got {self.address!r}")
        if self.resources_per_worker is not None and not isinstance(self.resources_per_worker, Mapping):
            raise checks.ArgumentTypeError(
                f"{who}: argument 'resources_per_worker' must be a dict of actor options or None; "
                f"got {type(self.resources_per_worker).__name__}"
            )
        for name in ("trainer_factory", "source_factory"):
            value = getattr(self, name)
            if not isinstance(value, str) or value.count(":") != 1:
                raise ValueError(f"{who}: argument {name!r} must be 'module:function'; got {value!r}")
        checks.boolean(who, "keep_freed_memory", self.keep_freed_memory)
        for name in ("tpu_slice", "config"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise checks.ArgumentTypeError(
                    f"{who}: argument {name!r} must be a dict or None; got {type(value).__name__}"
                )
        if self.tpu_slice is not None and not {"topology", "accelerator_version"} <= set(self.tpu_slice):
            raise ValueError(
                f"{who}: argument 'tpu_slice' needs keys 'topology' and 'accelerator_version'; got {dict(self.tpu_slice)}"
            )

    def partitions_of(self, rank: int) -> tuple[int, ...]:
        """The partitions worker ``rank`` serves: ``rank, rank+W, …``."""
        return tuple(range(rank, self.num_partitions, self.num_workers))

    @property
    def local_batch(self) -> int:
        """Rows per worker: ``B / W``."""
        return self.batch_size // self.num_workers

    @property
    def learner_batch(self) -> int:
        """The batch a worker's learner is compiled for: the global B in sync mode (one
        job), the local ``B / W`` otherwise."""
        return self.batch_size if self.mode == "sync" else self.local_batch


def worker_directory(spec: WorkerSpec, rank: int) -> str | None:
    """The checkpoint directory of worker ``rank``: ``checkpoint_dir`` itself in local
    and sync mode (sync checkpoints are collective: one directory), ``<checkpoint_dir>/rank-<rank>``
    in async mode."""
    if spec.checkpoint_dir is None:
        return None
    if spec.mode in ("local", "sync"):
        return spec.checkpoint_dir
    return os.path.join(spec.checkpoint_dir, f"rank-{rank}")


def _load(spec: WorkerSpec, name: str):
    path = getattr(spec, name)
    module, attr = path.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"WorkerSpec: argument {name!r} {path!r} cannot be loaded: {e}") from e


def build_source(spec: WorkerSpec, rank: int):
    """Worker ``rank``'s source (its partitions ``rank, rank+W, …``) from ``spec.source_factory``."""
    return _load(spec, "source_factory")(spec, rank)


def build_trainer(spec: WorkerSpec, mesh=None):
    """The trainer ``spec.trainer_factory`` builds for :attr:`WorkerSpec.learner_batch`
    (on ``mesh`` in sync mode)."""
    return _load(spec, "trainer_factory")(spec, spec.learner_batch, mesh)


def counting_source(spec: WorkerSpec, rank: int):
    """Worker ``rank``'s :class:`~disttrace.streaming.CountingStream` (its partitions)."""
    from disttrace.streaming import CountingStream

    return CountingStream(
        spec.n_records, spec.batch_size, spec.partitions_of(rank), spec.num_partitions,
        n_in=spec.n_in, n_out=spec.n_out, seed=spec.seed,
    )


def counting_trainer(spec: WorkerSpec, batch_size: int, mesh=None):
    """``LeakyRate(n_in, hidden) → LeakyRateReadout(hidden, n_out)``, D-RTRL, MSE, SGD with
    momentum; seeded by ``spec.seed`` (identical in every worker)."""
    import brainstate
    import jax.numpy as jnp
    import optax

    import disttrace as dt

    brainstate.random.seed(spec.seed)
    net = brainstate.nn.Sequential(dt.nn.LeakyRate(spec.n_in, spec.hidden),
                                   dt.nn.LeakyRateReadout(spec.hidden, spec.n_out, tau=0))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((batch_size, spec.n_in)), batch_size=batch_size,
                         loss_fn=dt.train.mse)
    example = (jnp.zeros((batch_size, spec.n_in)), jnp.zeros((batch_size, spec.n_out)))
    return dt.train.Trainer(learner, optax.sgd(spec.lr, momentum=spec.momentum), example, mesh=mesh)
