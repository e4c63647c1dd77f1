"""``TrainConfig``: one training run (the root of a YAML file), and its checkpoint and
mesh sections.

The defaults are the default job (``python -m launch.train`` with no ``--config``; the
same as ``configs/evidence_lif.yaml``, a test checks it), so an installed package runs
it without any file.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from disttrace.config._schema import ConfigError, positive_int
from disttrace.config._sections import (
    LOSSES,
    AlgorithmConfig,
    DRTRLConfig,
    EvidenceConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    SpikingNetConfig,
    TaskConfig,
)
from disttrace.config._stream import StreamConfig

__all__ = ["CheckpointConfig", "MeshConfig", "TrainConfig"]


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often to checkpoint (``directory: null``: no checkpoints).

    A rerun with the same ``directory`` resumes from its newest good step.
    """

    directory: str | None = None
    every: int = 50
    max_to_keep: int = 2
    async_save: bool = True

    def __post_init__(self):
        if self.directory is not None and not self.directory:
            raise ConfigError("directory", "must be a path or null; got ''")
        positive_int("every", self.every)
        positive_int("max_to_keep", self.max_to_keep)

    def build(self):
        """A ``disttrace.checkpoint.Checkpointer`` on :attr:`directory`, or ``None``."""
        if self.directory is None:
            return None
        from disttrace.checkpoint import Checkpointer

        return Checkpointer(self.directory, max_to_keep=self.max_to_keep, async_save=self.async_save)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The ``('data', 'model')`` device mesh: ``data * model`` devices (the first ones)."""

    data: int = 1
    model: int = 1

    def __post_init__(self):
        positive_int("data", self.data)
        positive_int("model", self.model)

    def build(self):
        """``disttrace.distributed.make_mesh`` over the first ``data * model`` devices.

        Raises:
          ConfigError: if there are fewer devices (the message says how many there are).
        """
        import jax

        from disttrace import distributed as dd

        n = self.data * self.model
        devices = jax.devices()
        if n > len(devices):
            raise ConfigError(
                "mesh", f"data * model = {self.data} * {self.model} = {n} devices, but there are {len(devices)} "
                "(on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting)"
            )
        return dd.make_mesh(self.data, self.model, devices=devices[:n])


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run: trials of ``task`` for ``steps`` optimizer updates of ``batch_size`` trials;
    or, with a ``stream`` section, ``steps`` stream steps of the global batch ``batch_size``.

    Attributes:
      algorithm, model, task, loss, optimizer, checkpoint, mesh: the sections.
      batch_size: trials per update (B).
      steps: optimizer updates (trials of ``batch_size``) in total, resumed ones included.
      chunk_size: trace contraction chunk of ``etrace_grad`` (null: step by step;
        ``auto``: the fastest of a few sizes, measured at the first trial).
      eval_batch: held-out trials for the final accuracy.
      seed: model initialisation and data.
      log_every: print the running loss every this many steps.
      nonfinite: what a trial with a non-finite input, loss or gradient does: ``skip``
        (its update is not applied), ``raise`` (stop at the first) or ``ignore`` (no check)
        (``disttrace.train.Trainer``).
      max_skips: ``skip`` stops the run after this many consecutive skipped trials.
      stream: null (trials) or a :class:`StreamConfig`: a continuous run on the task as
        a stream (``steps`` counts stream steps then, ``batch_size`` is the global batch).
      keep_freed_memory: the processes that train (this one, or each Ray worker) keep
        the memory XLA frees for the next call instead of returning it to the kernel
        (:func:`disttrace.allocator.keep_freed_memory`; glibc only, elsewhere nothing
        changes): no first-touch page faults at every call of a step whose working set is
        above 32 MiB, at the cost of a resident size that stays at its peak.
    """

    algorithm: AlgorithmConfig = dataclasses.field(default_factory=DRTRLConfig)
    model: ModelConfig = dataclasses.field(default_factory=SpikingNetConfig)
    task: TaskConfig = dataclasses.field(default_factory=EvidenceConfig)
    loss: LossConfig = dataclasses.field(default_factory=lambda: LOSSES.lookup("masked_cross_entropy", "loss")())
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    batch_size: int = 32
    steps: int = 400
    chunk_size: int | Literal["auto"] | None = 32
    eval_batch: int = 256
    seed: int = 0
    log_every: int = 10
    nonfinite: str = "skip"
    max_skips: int = 10
    stream: StreamConfig | None = None
    keep_freed_memory: bool = True

    def __post_init__(self):
        if self.nonfinite not in ("skip", "raise", "ignore"):
            raise ConfigError("nonfinite", f"must be one of ['skip', 'raise', 'ignore']; got {self.nonfinite!r}")
        for k in ("batch_size", "steps", "eval_batch", "log_every", "max_skips"):
            positive_int(k, getattr(self, k))
        if self.chunk_size != "auto" and self.chunk_size is not None and (
            isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1
        ):
            raise ConfigError("chunk_size", f"must be a positive int, 'auto' or null; got {self.chunk_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be an int >= 0; got {self.seed!r}")
        if self.batch_size % self.mesh.data:
            raise ConfigError(
                "batch_size", f"must be divisible by mesh.data = {self.mesh.data}; got {self.batch_size}"
            )
        if self.stream is None:
            if getattr(self.task, "is_stream", False):
                raise ConfigError(
                    "task.name", f"{type(self.task).name!r} is a stream, not a trial task: add a stream section "
                    "(e.g. --set stream.mode=local) or choose a trial task such as evidence_accumulation",
                )
        else:
            self._check_stream(self.stream)

    def _check_stream(self, s: StreamConfig) -> None:
        """The checks of a stream run that need more than the stream section."""
        b, p, w = self.batch_size, s.partitions, s.num_workers
        devices = w * s.devices_per_worker if s.mode == "sync" else s.devices_per_worker * self.mesh.data
        if b % p or (s.mode == "sync" and b % devices):
            step = p * devices // _gcd(p, devices) if s.mode == "sync" else p
            suggestion = max(step, b - b % step)
            raise ConfigError(
                "batch_size",
                f"{b} must be divisible by stream.num_partitions ({p})"
                + (f" and by the global device count (num_workers * devices_per_worker = {w} * "
                   f"{s.devices_per_worker} = {devices})" if s.mode == "sync" else "")
                + f" (num_partitions {p} is a multiple of num_workers {w}); e.g. batch_size {suggestion} or "
                f"{suggestion + step}",
            )
        every = s.checkpoint_every if s.checkpoint_every is not None else self.checkpoint.every
        if s.mode == "async":
            k = s.average_every
            if every % k:
                name = "stream.checkpoint_every" if s.checkpoint_every is not None else "checkpoint.every"
                raise ConfigError(
                    name, f"{every} must be a multiple of stream.average_every ({k}) in async mode (checkpoints are "
                    f"taken right after an averaging round); e.g. {max(k, every - every % k)}",
                )
            if self.steps % k:
                raise ConfigError(
                    "steps", f"{self.steps} must be a multiple of stream.average_every ({k}) in async mode (the run "
                    f"ends on an averaging round); e.g. {max(k, self.steps - self.steps % k)}",
                )
            if self.checkpoint.max_to_keep < 2:
                raise ConfigError(
                    "checkpoint.max_to_keep", f"must be >= 2 in async mode (a step common to every rank must "
                    f"survive a crash in the middle of a save); got {self.checkpoint.max_to_keep}",
                )
        if s.mode == "local" and s.tpu_slice is not None:
            raise ConfigError("stream.tpu_slice", "places Ray workers: it needs mode sync or async; got mode 'local'")
        if s.mode != "local" and (self.mesh.data, self.mesh.model) != (1, 1):
            raise ConfigError(
                "mesh", f"is set by the workers in mode {s.mode!r} (sync: data = num_workers * devices_per_worker); "
                f"leave data and model at 1; got data {self.mesh.data}, model {self.mesh.model}",
            )


def _gcd(a: int, b: int) -> int:
    import math

    return math.gcd(a, b)
