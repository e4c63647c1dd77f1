"""Online training on top of the learners: one :class:`TrainState`, one :class:`Trainer`.

- :class:`TrainState` (params, optimizer state, learner state, wrap-safe step counter,
  RNG key, stream position), :func:`init_train_state`, :func:`partition_rules`;
- :func:`train_step` (pure) and :func:`make_train_step` (jitted, sharded on a mesh);
- :class:`Trainer`: trials (reset, a sequence, one update) and streams (one update per
  step), any per-step loss (:func:`mse`, :func:`cross_entropy`,
  :func:`masked_cross_entropy` or your own), checkpoints of the whole state.

Layer: the top of the library (above ``tasks``, ``checkpoint``, ``distributed``);
``disttrace.config`` and ``launch/`` sit on it.
"""

from disttrace.train._losses import cross_entropy as cross_entropy
from disttrace.train._losses import masked_cross_entropy as masked_cross_entropy
from disttrace.train._losses import mse as mse
from disttrace.train._state import StepCounter as StepCounter
from disttrace.train._state import TrainState as TrainState
from disttrace.train._state import init_train_state as init_train_state
from disttrace.train._state import partition_rules as partition_rules
from disttrace.train._step import apply_gradients as apply_gradients
from disttrace.train._step import make_train_step as make_train_step
from disttrace.train._step import train_step as train_step
from disttrace.train._stream import StreamTrainer as StreamTrainer
from disttrace.train._trainer import Trainer as Trainer
from disttrace.train._trainer import label_targets as label_targets

__all__ = [
    "StepCounter",
    "StreamTrainer",
    "TrainState",
    "Trainer",
    "apply_gradients",
    "cross_entropy",
    "init_train_state",
    "label_targets",
    "make_train_step",
    "masked_cross_entropy",
    "mse",
    "partition_rules",
    "train_step",
]
