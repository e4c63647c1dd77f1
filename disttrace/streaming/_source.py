"""The source contract: :class:`Batch` and the :class:`StreamSource` protocol.

A stream is cut into ``num_partitions`` P partitions, fixed for a run's lifetime.
Partition ``p`` owns rows ``[p·B/P, (p+1)·B/P)`` of every global batch of B rows: each
row is a persistent sequence (a sensor channel, a recording, a trial generator) whose
steps must reach one learner in order. A source serves some of the partitions (one
worker of W serves ``r, r+W, …``) and yields, per step, the rows of those partitions
concatenated in partition order.

Each partition has a JSON offset (an int, or ``[file_seq, index]``) that says where it
stands; ``seek(offsets)`` goes back there, so a run restored from a checkpoint reads
exactly the records that follow the ones its state has seen. Every row of a batch
carries the id of its record within its partition, which the
:class:`~disttrace.streaming.Ledger` sums to prove that each record was used exactly once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["Batch", "StreamSource", "fingerprint_of"]


class Batch(NamedTuple):
    """One step of a stream, on the host (numpy).

    Attributes:
      x: (B_local, ...) the model input of this step: the rows of the source's
        partitions, concatenated in partition order (B_local = rows per partition ×
        partitions served).
      y: the targets, a pytree whose leaves are (B_local, ...) per-row arrays or ()
        per-step scalars (e.g. ``{"label": (B_local,), "mask": ()}``).
      ids: (B_local,) int64, each row's record id within its partition.
    """

    x: Any
    y: Any
    ids: np.ndarray


@runtime_checkable
class StreamSource(Protocol):
    """A stream of :class:`Batch` es over some partitions, with offsets to resume from.

    Attributes:
      partitions: the partitions this source serves, ascending (a tuple of ints).
      num_partitions: P, the number of partitions of the whole stream.

    A source is read by one thread. Offsets are JSON values (an int, a list of ints);
    ``offsets()`` after ``k`` calls of ``next()`` followed by ``seek`` on a fresh source
    of the same stream makes its next batches those that would have followed (bitwise).
    """

    partitions: tuple[int, ...]
    num_partitions: int

    def next(self) -> Batch:
        """The next step's batch.

        Raises:
          StopIteration: at the end of a finite stream (no offset has moved).
        """
        ...

    def offsets(self) -> dict[int, Any]:
        """``{partition: offset}`` for every partition served: where the next batch starts."""
        ...

    def seek(self, offsets) -> None:
        """Moves every served partition to its offset (keys may be ints or their strings,
        as JSON gives them back; partitions not served are ignored).

        Raises:
          ValueError: if a served partition is missing or its offset is malformed.
        """
        ...

    def fingerprint(self) -> str:
        """What stream this is, as ``"<kind>:<hash>"``: equal for every source of the same
        stream whatever partitions it serves; a checkpoint of another stream is refused."""
        ...

    def close(self) -> None:
        """Releases what the source holds (open files); idempotent."""
        ...


def fingerprint_of(kind: str, **params) -> str:
    """``"<kind>:<16 hex digits>"``: a SHA-256 of the stream's defining parameters.

    Args:
      kind: the source's class name.
      **params: JSON-serialisable values (``repr`` is used for anything else, e.g. a
        frozen task dataclass, whose repr lists its fields).

    Example:
      >>> fingerprint_of("CountingStream", n_records=8, seed=0)
      'CountingStream:...'
    """
    text = json.dumps(params, sort_keys=True, default=repr)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
