"""``RayDataStream``: Ray Data datasets, one per partition, as an ordered, resumable source.

Why not ``Dataset.streaming_split``: it gives no ordering guarantee, ``equal=True`` drops
the remainder, and its iterator cannot resume (ray-project/ray#37633, #48224). A row of
an online stream is one step of a persistent sequence whose steps must reach one worker
in order, so each partition here is its own dataset, read with ``preserve_order=True``.

Offsets: a partition's offset is the number of its rows consumed (an int; each step
takes ``R = batch_size / num_partitions`` rows from every served partition). Resuming
(:meth:`RayDataStream.seek`) restarts each dataset's iteration and skips ``offset``
rows: **skipping re-reads the data before the offset, so a resume costs O(offset)**
reading. A record's id is its row index within its partition, so the ledger of a
stream that is read once is the closed form of ids ``0 … n-1``.

The stream ends (``StopIteration``) when any served partition has fewer than R rows
left; the rows of the other partitions at that step are not consumed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from disttrace import checks
from disttrace.streaming import Batch
from disttrace.streaming._partitions import offsets_for, rows_per_partition, served_partitions
from disttrace.streaming._source import fingerprint_of

__all__ = ["RayDataStream"]


class RayDataStream:
    """Per-partition Ray datasets read in order (see the module docstring).

    Args:
      datasets_by_partition: ``{partition: ray.data.Dataset}`` for (at least) the served
        partitions; each row has a column ``x`` (the input, any shape) and ``y`` (the
        target).
      batch_size: the global batch B; ``num_partitions`` must divide it.
      partitions: the partitions this source serves (default: all ``num_partitions``).
      num_partitions: P (default: the number of datasets given).
      name: names the data in the fingerprint (a checkpoint written for another ``name``,
        B or P is refused on resume); e.g. the dataset's path.

    Each :meth:`next` gives ``Batch(x (B_local, ...), y (B_local, ...), ids (B_local,)
    int64)``, the partitions' rows in the order of ``partitions``.

    Raises:
      ValueError: on a bad argument (named, with what is allowed); if a served
        partition has no dataset.
      KeyError: (from :meth:`next`) if a dataset has no ``x`` or ``y`` column.
    """

    def __init__(self, datasets_by_partition: Mapping, batch_size: int, partitions=None,
                 num_partitions: int | None = None, *, name: str = "ray_data"):
        who = "RayDataStream"
        if not isinstance(datasets_by_partition, Mapping) or not datasets_by_partition:
            raise checks.ArgumentTypeError(
                f"{who}: argument 'datasets_by_partition' must be a non-empty dict {{partition: ray.data.Dataset}}; "
                f"got {type(datasets_by_partition).__name__}"
            )
        p = len(datasets_by_partition) if num_partitions is None else num_partitions
        self.num_partitions = checks.positive_int(who, "num_partitions", p)
        self.rows = rows_per_partition(who, batch_size, self.num_partitions)
        self.batch_size = batch_size
        self.partitions = served_partitions(who, partitions, self.num_partitions)
        missing = [q for q in self.partitions if q not in datasets_by_partition]
        if missing:
            raise ValueError(
                f"{who}: argument 'datasets_by_partition' has no dataset for the served partitions {missing}; "
                f"it has {sorted(datasets_by_partition)}"
            )
        if not isinstance(name, str) or not name:
            raise checks.ArgumentTypeError(f"{who}: argument 'name' must be a non-empty str; got {name!r}")
        self.name = name
        self._datasets = {q: datasets_by_partition[q] for q in self.partitions}
        self._offsets = dict.fromkeys(self.partitions, 0)
        self._iters: dict[int, object] = {}

    @classmethod
    def from_directory(cls, directory: str, batch_size: int, partitions=None, num_partitions: int = 1):
        """Reads partition ``p`` from the Parquet files under ``<directory>/p<p>`` (columns
        ``x`` and ``y``; files in name order).

        Raises:
          ValueError: if a served partition's folder is missing (named).
        """
        import os

        import ray.data

        served = served_partitions("RayDataStream.from_directory", partitions, num_partitions)
        datasets = {}
        for q in served:
            path = os.path.join(os.fspath(directory), f"p{q}")
            if "://" not in path and not os.path.isdir(path):
                raise ValueError(f"RayDataStream.from_directory: partition {q}'s folder {path} does not exist")
            datasets[q] = ray.data.read_parquet(path)
        return cls(datasets, batch_size, served, num_partitions, name=os.fspath(directory))

    def _iterator(self, partition: int):
        import ray.data

        it = self._iters.get(partition)
        if it is None:
            ray.data.DataContext.get_current().execution_options.preserve_order = True
            it = iter(self._datasets[partition].iter_batches(batch_size=self.rows, batch_format="numpy",
                                                             drop_last=True))
            skip = self._offsets[partition]  # O(offset): the rows before the offset are read again
            for _ in range(skip // self.rows):
                next(it)
            self._iters[partition] = it
        return it

    def next(self) -> Batch:
        """The next step: R rows of every served partition."""
        got = []
        for q in self.partitions:
            batch = next(self._iterator(q))  # StopIteration: a partition has fewer than R rows left
            got.append(batch)
        ids = []
        for q in self.partitions:
            ids.append(self._offsets[q] + np.arange(self.rows, dtype=np.int64))
            self._offsets[q] += self.rows
        x = np.concatenate([np.asarray(b["x"]) for b in got])
        y = np.concatenate([np.asarray(b["y"]) for b in got])
        return Batch(x, y, np.concatenate(ids))

    def offsets(self) -> dict[int, int]:
        """``{partition: rows consumed}``."""
        return dict(self._offsets)

    def seek(self, offsets) -> None:
        """Moves every served partition to ``offsets`` (rows consumed, a multiple of R);
        the next :meth:`next` re-reads and skips that many rows (O(offset))."""
        offsets = offsets_for("RayDataStream.seek", offsets, self.partitions)
        for q, off in offsets.items():
            if not isinstance(off, int) or off < 0 or off % self.rows:
                raise ValueError(
                    f"RayDataStream.seek: partition {q}'s offset must be a multiple of the rows per partition "
                    f"({self.rows}) >= 0; got {off!r}"
                )
        self._offsets = dict(offsets)
        self._iters.clear()

    def fingerprint(self) -> str:
        """``name``, the global batch and P (not the partitions served)."""
        return fingerprint_of("RayDataStream", name=self.name, batch_size=self.batch_size,
                              num_partitions=self.num_partitions)

    def close(self) -> None:
        self._iters.clear()

    def __repr__(self) -> str:
        return (f"RayDataStream(name={self.name!r}, batch_size={self.batch_size}, partitions={list(self.partitions)}, "
                f"num_partitions={self.num_partitions})")
