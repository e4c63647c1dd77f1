"""What a stream run returns, and how it fails: ``RunResult``, ``StreamRunError``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from disttrace.streaming import Ledger

__all__ = ["RunResult", "StreamRunError"]


class StreamRunError(RuntimeError):
    """A streaming run gave up: a worker kept failing beyond ``max_failures``.

    Attributes:
      rank: the worker that failed last.
      error: its last error (text).
      checkpoint_step: the last step committed in every rank's directory (or ``None``).
    """

    def __init__(self, message: str, rank: int, error: str, checkpoint_step: int | None):
        super().__init__(message)
        self.rank, self.error, self.checkpoint_step = rank, error, checkpoint_step


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`run` did.

    Attributes:
      mode: ``"local"``, ``"sync"`` or ``"async"``.
      reason: ``"end"``, ``"max_steps"`` or ``"stopped"``.
      steps: stream steps each worker consumed in total (across restarts).
      checkpoint_step: the final committed checkpoint step (``None`` without checkpoints).
      checkpoint_dirs: the checkpoint directory of each rank.
      ledger: the merged ledger of every partition at the final checkpoint.
      offsets: ``{partition: offset}`` of every partition there.
      restarts: rollbacks (async) or group restarts (sync) the run went through.
      params: the final parameters (host numpy): the average of the workers' in async
        mode (equal to each worker's when the run ends on an averaging round).
      elapsed_s: seconds.
    """

    mode: str
    reason: str
    steps: int
    checkpoint_step: int | None
    checkpoint_dirs: tuple[str | None, ...]
    ledger: Ledger
    offsets: dict
    restarts: int
    params: Any
    elapsed_s: float


class Failure(Exception):
    def __init__(self, rank: int, error: str, dead: bool):
        super().__init__(f"rank {rank}: {error}")
        self.rank, self.error, self.dead = rank, error, dead


def last_line(error: str) -> str:
    """The last line of an error's text (a traceback's is the exception itself)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def mean_params(trees: list) -> Any:
    """The mean of parameter trees, summed in the order given (rank order: deterministic)."""
    def mean(*leaves):
        total = np.array(leaves[0], copy=True)
        for leaf in leaves[1:]:
            total = total + leaf
        return (total / len(leaves)).astype(leaves[0].dtype)

    return jax.tree.map(mean, *trees)
