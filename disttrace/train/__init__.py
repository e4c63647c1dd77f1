"""Online training on top of the learners: one :class:`TrainState`, one :class:`Trainer`.

- :class:`TrainState` (params, optimizer state, learner state, wrap-safe step counter,
  RNG key, stream position, :class:`NonFiniteCounts`), :func:`init_train_state`,
  :func:`partition_rules`;
- :func:`train_step` (pure) and :func:`make_train_step` (jitted, sharded on a mesh),
  each with the non-finite policy (``nonfinite="skip" | "raise" | "ignore"``);
  :func:`make_block_step` (K steps in one ``lax.scan``) with :func:`shard_block` and
  :func:`block_shardings` for its ``(K, B, ...)`` inputs;
- :class:`Trainer`: trials (reset, a sequence, one update) and streams (one update per
  step, or a block of K steps per call), any per-step loss (:func:`mse`,
  :func:`cross_entropy`, :func:`masked_cross_entropy` or your own), checkpoints of the
  whole state, non-finite steps skipped (``disttrace.errors.NonFiniteError`` after
  ``max_skips`` in a row).

Layer: the top of the library (above ``tasks``, ``checkpoint``, ``distributed``);
``disttrace.config`` and ``launch/`` sit on it.
"""

from disttrace.train._block import block_shardings as block_shardings
from disttrace.train._block import make_block_step as make_block_step
from disttrace.train._block import shard_block as shard_block
from disttrace.train._losses import cross_entropy as cross_entropy
from disttrace.train._losses import masked_cross_entropy as masked_cross_entropy
from disttrace.train._losses import mse as mse
from disttrace.train._state import NonFiniteCounts as NonFiniteCounts
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
    "NonFiniteCounts",
    "StepCounter",
    "StreamTrainer",
    "TrainState",
    "Trainer",
    "apply_gradients",
    "block_shardings",
    "cross_entropy",
    "init_train_state",
    "label_targets",
    "make_block_step",
    "make_train_step",
    "masked_cross_entropy",
    "mse",
    "partition_rules",
    "shard_block",
    "train_step",
]
