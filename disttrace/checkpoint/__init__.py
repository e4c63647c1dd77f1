"""Checkpoints of the whole online training state (Orbax): parameters, optimizer state,
hidden states, traces, step count and a JSON ``meta`` (stream offsets).

Steps are verified (a commit marker with a content checksum per file), a restore falls
back past incomplete or corrupt steps with a warning, one writer holds a directory at a
time, and ``gs://…`` style URLs are passed to Orbax unchanged. A bad step asked for by
number raises :class:`disttrace.errors.CheckpointError`.

Layer: above ``distributed`` (it saves and restores a ``TrainState`` onto
``PartitionRules``), below ``tasks`` and ``train``.
"""

from disttrace.checkpoint._checkpointer import Checkpointer as Checkpointer
from disttrace.errors import CheckpointError as CheckpointError

__all__ = ["CheckpointError", "Checkpointer"]
