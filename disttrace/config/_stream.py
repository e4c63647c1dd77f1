"""``StreamConfig``: a continuous online-learning run on a stream, locally or on Ray workers.

With a ``stream`` section, ``launch.train`` runs ``steps`` *stream steps* of the global
batch ``batch_size`` (one update per step, or per ``update_every`` steps), instead of
``steps`` trials: see ``disttrace.streaming.ray.run`` for the modes and the failure
handling. Cross-field checks (the batch against the partitions, workers and devices; the
checkpoint interval against the averaging interval) are made by ``TrainConfig``, which
sees both sections.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from disttrace.config._schema import ConfigError, positive_int

__all__ = ["StreamConfig"]


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """How a stream run is spread over workers, and where its data comes from.

    Attributes:
      mode: ``local`` (one process, no Ray), ``sync`` (``num_workers`` Ray actors forming
        one ``jax.distributed`` job: one global step, collective checkpoints, a group
        restart on any failure) or ``async`` (independent learners whose parameters are
        averaged every ``average_every`` steps; a rollback of every worker on a failure).
      num_workers: W (``local``: 1).
      num_partitions: P, fixed for the run's lifetime (null: W); a multiple of W that
        divides ``batch_size``. Worker ``r`` serves partitions ``r, r+W, ...``.
      devices_per_worker: CPU devices of each Ray actor (``XLA_FLAGS``); 1 is the safe
        default (``jax.distributed`` deadlocked with 2 CPU devices per process).
      address: a Ray cluster ``host:port`` (checked within 5 s); null: ``RAY_ADDRESS``
        (set by ``ray job submit``), else a new local cluster on 127.0.0.1.
      num_cpus: CPUs of a local cluster started here (null: Ray's default).
      average_every: K, steps between parameter averages (``async``).
      update_every: optimizer updates every this many steps (``optax.MultiSteps``; the
        trial length reproduces one update per trial; 1 is a true per-step update).
      checkpoint_every: steps between checkpoints (null: ``checkpoint.every``); ``async``:
        a multiple of ``average_every``.
      max_failures: group restarts / rollbacks tolerated before the run fails (exit 1).
      stall_timeout_s: a worker that reports nothing for this long has failed.
      source: ``task`` (the task, streamed), or data on disk — then the task section only
        gives the model's input and output sizes (``n_in``, ``n_out``) — ``directory`` (npz chunk files under
        ``directory``, see ``disttrace.streaming.DirectoryStream``) or ``ray_data``
        (``disttrace.streaming.ray.RayDataStream``: the Parquet files under
        ``directory/p<partition>``, columns ``x`` and ``y``, read in order with Ray Data;
        needs ``pip install disttrace[data]``).
      directory: the data directory of the ``directory`` and ``ray_data`` sources.
      follow: ``directory``: wait for new files instead of ending after the last one.
      resources_per_worker: ``.options(...)`` of each Ray actor (null: one CPU).
      tpu_slice: ``{topology, accelerator_version}``: one worker per host of a TPU slice,
        placed with ``ray.util.tpu.slice_placement_group``.
      metrics_file: a JSONL file: one object per progress line and per event (and a
        learning-curve PNG beside it when matplotlib is installed).
    """

    mode: Literal["local", "sync", "async"] = "local"
    num_workers: int = 1
    num_partitions: int | None = None
    devices_per_worker: int = 1
    address: str | None = None
    num_cpus: int | None = None
    average_every: int = 10
    update_every: int = 1
    checkpoint_every: int | None = None
    max_failures: int = 3
    stall_timeout_s: float = 300.0
    source: Literal["task", "directory", "ray_data"] = "task"
    directory: str | None = None
    follow: bool = False
    resources_per_worker: dict | None = None
    tpu_slice: dict | None = None
    metrics_file: str | None = None

    def __post_init__(self):
        for k in ("num_workers", "devices_per_worker", "average_every", "update_every"):
            positive_int(k, getattr(self, k))
        for k in ("num_partitions", "num_cpus", "checkpoint_every"):
            positive_int(k, getattr(self, k), allow_none=True)
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ConfigError("max_failures", f"must be an int >= 0; got {self.max_failures!r}")
        if not self.stall_timeout_s > 0:
            raise ConfigError("stall_timeout_s", f"must be a number > 0; got {self.stall_timeout_s!r}")
        if self.mode == "local" and self.num_workers != 1:
            raise ConfigError(
                "num_workers", f"must be 1 in mode 'local' (one process); got {self.num_workers} (use mode sync or async)"
            )
        p = self.partitions
        if p % self.num_workers:
            lower, upper = max(self.num_workers, p - p % self.num_workers), p - p % self.num_workers + self.num_workers
            raise ConfigError(
                "num_partitions", f"must be a multiple of num_workers ({self.num_workers}), so that every worker "
                f"serves as many partitions; got {p} (e.g. {lower} or {upper})",
            )
        if self.source in ("directory", "ray_data") and not self.directory:
            raise ConfigError("directory", f"must be set for source {self.source!r} (the data directory); got null")
        if self.tpu_slice is not None:
            missing = sorted({"topology", "accelerator_version"} - set(self.tpu_slice))
            if missing:
                raise ConfigError("tpu_slice", f"needs keys ['accelerator_version', 'topology']; missing {missing}")

    @property
    def partitions(self) -> int:
        """P: ``num_partitions``, or W when null."""
        return self.num_workers if self.num_partitions is None else self.num_partitions
