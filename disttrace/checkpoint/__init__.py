"""Checkpoints of the whole online training state (Orbax): parameters, optimizer state,
hidden states, traces, step count and a JSON ``meta`` (stream offsets).

Layer: above ``distributed`` (it saves and restores a ``TrainState`` onto
``PartitionRules``), below ``tasks`` and ``train``.
"""

from disttrace.checkpoint._checkpointer import Checkpointer as Checkpointer

__all__ = ["Checkpointer"]
