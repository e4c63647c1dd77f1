"""Training loops on top of the learners: trials (:class:`Trainer`) and unbounded,
sharded streams (:class:`StreamTrainer`)."""

from disttrace.distributed import TrainState as TrainState
from disttrace.train._stream import StreamTrainer as StreamTrainer
from disttrace.train._trainer import Trainer as Trainer
from disttrace.train._trainer import masked_cross_entropy as masked_cross_entropy

__all__ = ["StreamTrainer", "TrainState", "Trainer", "masked_cross_entropy"]
