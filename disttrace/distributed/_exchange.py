"""Host values exchanged between the processes of a ``jax.distributed`` job.

``allgather_json`` is a device collective (``process_allgather`` of the encoded bytes):
every process must call it at the same point of its program, as with any collective.
It is how the processes of a sync stream run make their checkpoint meta the same
(Orbax writes the meta on process 0 only, so it must hold every process's partitions).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

__all__ = ["allgather_json", "any_process"]


def allgather_json(value: Any) -> list[Any]:
    """Every process's ``value`` (JSON-serialisable), in process order.

    One process: ``[value]`` (a JSON round trip). Two collectives otherwise: the encoded
    lengths, then the bytes padded to the longest.

    Raises:
      TypeError: if ``value`` is not JSON-serialisable.
    """
    data = json.dumps(value, sort_keys=True).encode()
    if jax.process_count() == 1:
        return [json.loads(data)]
    from jax.experimental import multihost_utils

    lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, lengths.tolist())]


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective; ``flag`` itself in one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([int(bool(flag))], np.int32))).any())
