"""Frozen, validated configuration loaded from YAML (``configs/*.yaml``).

Only ``launch/`` and this module read configs; the library takes plain arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

__all__ = ["ModelConfig", "TaskConfig", "TrainConfig", "load"]

_ALGOS = ("d_rtrl", "es_d_rtrl", "hybrid", "bptt")


def _positive(who, **values):
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{who}: field {k!r} must be a positive int; got {v!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    n_rec: int = 64
    n_layers: int = 1
    neuron: str = "alif"
    tau: float = 20.0
    tau_out: float = 10.0

    def __post_init__(self):
        _positive("model", n_rec=self.n_rec, n_layers=self.n_layers)
        if self.neuron not in ("lif", "alif"):
            raise ValueError(f"model: field 'neuron' must be 'lif' or 'alif'; got {self.neuron!r}")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    name: str = "evidence_accumulation"
    n_cues: int = 7
    delay: int = 20

    def __post_init__(self):
        if self.name != "evidence_accumulation":
            raise ValueError(f"task: field 'name' must be 'evidence_accumulation'; got {self.name!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    algorithm: str = "d_rtrl"
    batch_size: int = 32
    steps: int = 200
    learning_rate: float = 3e-3
    chunk_size: int | None = 32
    eval_batch: int = 256
    seed: int = 0
    log_every: int = 10
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()

    def __post_init__(self):
        if self.algorithm not in _ALGOS:
            raise ValueError(f"train: field 'algorithm' must be one of {_ALGOS}; got {self.algorithm!r}")
        _positive("train", batch_size=self.batch_size, steps=self.steps, eval_batch=self.eval_batch,
                  log_every=self.log_every, checkpoint_every=self.checkpoint_every)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise ValueError(f"train: field 'checkpoint_dir' must be a path or null; got {self.checkpoint_dir!r}")
        if self.chunk_size is not None:
            _positive("train", chunk_size=self.chunk_size)
        if not self.learning_rate > 0:
            raise ValueError(f"train: field 'learning_rate' must be > 0; got {self.learning_rate!r}")


def load(path: str | Path, **overrides) -> TrainConfig:
    """Reads a YAML file into a :class:`TrainConfig` (unknown keys are errors)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        model = ModelConfig(**data.pop("model", {}))
        task = TaskConfig(**data.pop("task", {}))
        return TrainConfig(model=model, task=task, **data)
    except TypeError as e:
        raise ValueError(f"config {path}: {e}") from None
