"""Typed, frozen configuration: YAML -> dataclass tree -> ``.build()`` (levanter-style).

The top of the library: only ``launch/`` (and user scripts) read configs; everything
below takes plain arguments. A :class:`TrainConfig` has sections, each a frozen
dataclass validated in ``__post_init__`` with a ``build`` method; the algorithm, model,
task and loss sections are chosen by name from open registries (``ALGORITHMS``,
``MODELS``, ``TASKS``, ``LOSSES``; add one with ``MODELS.register("name")`` on a
dataclass subclass of :class:`ModelConfig`, or :func:`register_loss`), the optimizer and
schedule by ``optax`` name (or :func:`register_optimizer` / :func:`register_schedule`).

Every error is a :class:`ConfigError` naming the dotted key, the value and what is
allowed. Importing this package does not import JAX (builds do), so a command line
answers ``--help`` and reports config errors at once.

Example:
  >>> from disttrace import config
  >>> cfg = config.load(None, ["model.n_rec=32", "algorithm.name=es_d_rtrl", "algorithm.decay=0.8"])
  >>> cfg.algorithm
  ESDRTRLConfig(decay=0.8)
  >>> config.load(None, ["model.n_recc=32"])
  Traceback (most recent call last):
  ...
  disttrace.config._schema.ConfigError: config key 'model.n_recc': unknown key; allowed keys of section 'model': ['beta', 'n_layers', 'n_rec', 'name', 'neuron', 'recurrent', 'tau', 'tau_a', 'tau_out', 'v_th']
"""

from disttrace.config._cli import job_arguments as job_arguments
from disttrace.config._cli import parse_args as parse_args
from disttrace.config._cli import run as run
from disttrace.config._load import load as load
from disttrace.config._load import parse_override as parse_override
from disttrace.config._load import read_yaml as read_yaml
from disttrace.config._schema import ConfigError as ConfigError
from disttrace.config._schema import from_data as from_data
from disttrace.config._schema import to_data as to_data
from disttrace.config._sections import ALGORITHMS as ALGORITHMS
from disttrace.config._sections import LOSSES as LOSSES
from disttrace.config._sections import MODELS as MODELS
from disttrace.config._sections import OPTIMIZERS as OPTIMIZERS
from disttrace.config._sections import SCHEDULES as SCHEDULES
from disttrace.config._sections import TASKS as TASKS
from disttrace.config._sections import AlgorithmConfig as AlgorithmConfig
from disttrace.config._sections import BPTTConfig as BPTTConfig
from disttrace.config._sections import CopyConfig as CopyConfig
from disttrace.config._sections import CountingConfig as CountingConfig
from disttrace.config._sections import DMSConfig as DMSConfig
from disttrace.config._sections import DriftingConfig as DriftingConfig
from disttrace.config._sections import DRTRLConfig as DRTRLConfig
from disttrace.config._sections import EPropConfig as EPropConfig
from disttrace.config._sections import ESDRTRLConfig as ESDRTRLConfig
from disttrace.config._sections import EvidenceConfig as EvidenceConfig
from disttrace.config._sections import HybridConfig as HybridConfig
from disttrace.config._sections import IntegratorConfig as IntegratorConfig
from disttrace.config._sections import LeakyRateConfig as LeakyRateConfig
from disttrace.config._sections import LossConfig as LossConfig
from disttrace.config._sections import ModelConfig as ModelConfig
from disttrace.config._sections import OptimizerConfig as OptimizerConfig
from disttrace.config._sections import OSTLFeedforwardConfig as OSTLFeedforwardConfig
from disttrace.config._sections import OSTLRecurrentConfig as OSTLRecurrentConfig
from disttrace.config._sections import RNNConfig as RNNConfig
from disttrace.config._sections import RTRLConfig as RTRLConfig
from disttrace.config._sections import ScheduleConfig as ScheduleConfig
from disttrace.config._sections import SnApConfig as SnApConfig
from disttrace.config._sections import SpikingNetConfig as SpikingNetConfig
from disttrace.config._sections import TaskConfig as TaskConfig
from disttrace.config._sections import ThreeFactorConfig as ThreeFactorConfig
from disttrace.config._sections import UOROConfig as UOROConfig
from disttrace.config._sections import register_loss as register_loss
from disttrace.config._sections import register_optimizer as register_optimizer
from disttrace.config._sections import register_schedule as register_schedule
from disttrace.config._stream import StreamConfig as StreamConfig
from disttrace.config._train import CheckpointConfig as CheckpointConfig
from disttrace.config._train import MeshConfig as MeshConfig
from disttrace.config._train import TrainConfig as TrainConfig

__all__ = [
    "ALGORITHMS",
    "LOSSES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "AlgorithmConfig",
    "BPTTConfig",
    "CheckpointConfig",
    "ConfigError",
    "CountingConfig",
    "IntegratorConfig",
    "DriftingConfig",
    "DMSConfig",
    "CopyConfig",
    "DRTRLConfig",
    "ESDRTRLConfig",
    "EvidenceConfig",
    "HybridConfig",
    "LeakyRateConfig",
    "LossConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RNNConfig",
    "UOROConfig",
    "ThreeFactorConfig",
    "OSTLRecurrentConfig",
    "OSTLFeedforwardConfig",
    "EPropConfig",
    "SnApConfig",
    "RTRLConfig",
    "ScheduleConfig",
    "SpikingNetConfig",
    "StreamConfig",
    "TaskConfig",
    "TrainConfig",
    "from_data",
    "job_arguments",
    "load",
    "parse_args",
    "parse_override",
    "read_yaml",
    "register_loss",
    "register_optimizer",
    "register_schedule",
    "run",
    "to_data",
]
