"""Training loop on top of the learners."""

from disttrace.train._trainer import Trainer as Trainer
from disttrace.train._trainer import masked_cross_entropy as masked_cross_entropy

__all__ = ["Trainer", "masked_cross_entropy"]
