"""``StreamTrainer``: the former name of :class:`~disttrace.train.Trainer` in stream mode.

Deprecated: ``Trainer(learner, optimizer, example_batch, mesh, ...)`` takes the same
arguments and covers trials too. Kept so that existing code runs, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from disttrace.train._trainer import Trainer

__all__ = ["StreamTrainer"]


class StreamTrainer(Trainer):
    """Deprecated alias of :class:`~disttrace.train.Trainer` (same arguments).

    Raises:
      ValueError: as :class:`~disttrace.train.Trainer`.
    """

    def __init__(self, learner, optimizer, example_batch, mesh=None, **options):
        warnings.warn(
            "disttrace.train.StreamTrainer is deprecated; use disttrace.train.Trainer (same arguments)",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(learner, optimizer, example_batch, mesh, **options)
