"""Online training on streams that survives crashes without losing or double-counting a record.

- the source contract: :class:`Batch` ``(x, y, ids)`` and the :class:`StreamSource`
  protocol (``partitions``, ``num_partitions``, ``next``, ``offsets``, ``seek``,
  ``fingerprint``, ``close``); a run has ``num_partitions`` P for its lifetime, and
  partition ``p`` owns rows ``[p·B/P, (p+1)·B/P)`` of the global batch;
- sources: :class:`TaskStream` (a trial task, aligned trials, seekable in O(1)),
  :class:`CountingStream` (a finite regression stream of known records),
  :class:`DirectoryStream` (append-only ``.npz`` chunks; :func:`write_npz_chunk`);
- :class:`Ledger`: count, Σid and Σid² per partition, the proof of exactly-once;
- :func:`run_worker`: the worker loop; offsets and ledger are committed only inside a
  checkpoint, so a restarted worker resumes exactly once.

No Ray here (``import disttrace.streaming`` never imports it); the Ray actors that run
:func:`run_worker` live in ``disttrace.streaming.ray`` (``local``, ``sync`` — one
``jax.distributed`` job across the actors — and ``async`` modes).

Layer: above ``disttrace.train`` (it drives a ``Trainer`` and a ``Checkpointer``, both
injected), below ``disttrace.config``.
"""

from disttrace.streaming._counting import CountingStream as CountingStream
from disttrace.streaming._directory import DirectoryStream as DirectoryStream
from disttrace.streaming._directory import write_npz_chunk as write_npz_chunk
from disttrace.streaming._ledger import Ledger as Ledger
from disttrace.streaming._ledger import LedgerEntry as LedgerEntry
from disttrace.streaming._source import Batch as Batch
from disttrace.streaming._source import StreamSource as StreamSource
from disttrace.streaming._source import fingerprint_of as fingerprint_of
from disttrace.streaming._task import TaskStream as TaskStream
from disttrace.streaming._worker import RunResult as RunResult
from disttrace.streaming._worker import format_metrics as format_metrics
from disttrace.streaming._worker import run_worker as run_worker
from disttrace.streaming._worker import stream_meta as stream_meta

__all__ = [
    "Batch",
    "CountingStream",
    "DirectoryStream",
    "Ledger",
    "LedgerEntry",
    "RunResult",
    "StreamSource",
    "TaskStream",
    "fingerprint_of",
    "format_metrics",
    "run_worker",
    "stream_meta",
    "write_npz_chunk",
]
