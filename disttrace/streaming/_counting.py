"""``CountingStream``: a finite regression stream whose every value is a function of its
record id, for exactly-once tests and smoke runs.

Each partition has ``n_records`` records, ids ``0 … n_records-1``, read R at a time
(``R = batch_size / num_partitions`` rows per partition): step ``s`` of a partition holds
records ``s·R … s·R+R-1``, one per row. Record ``i`` of partition ``p`` is

.. math::
    x = \\sin(2π\\,\\mathrm{frac}(i·a + p·b + c)) \\in [-1, 1]^{n_{in}}, \\qquad y = x M,

with ``a, b, c`` (n_in,) uniform and ``M`` (n_in, n_out) normal / √n_in, drawn once from
``seed`` (computed in float64, then cast to float32). So the data is deterministic,
different for every record and partition, learnable (``y`` is linear in ``x``), and a
test can recompute any record (:meth:`CountingStream.record`). The offset of a
partition is its next step (an int); the partitions of a source move together.
"""

from __future__ import annotations

import numpy as np

from disttrace import checks
from disttrace.streaming._partitions import lockstep_offset, offsets_for, rows_per_partition, served_partitions
from disttrace.streaming._source import Batch, fingerprint_of

__all__ = ["CountingStream"]


class CountingStream:
    """A finite regression stream of known records (see the module docstring).

    Args:
      n_records: records per partition; a multiple of ``batch_size / num_partitions``
        (the stream has ``n_records / R`` steps).
      batch_size: the global batch B.
      partitions: the partitions this source serves (default: all).
      num_partitions: P; it must divide ``batch_size``.
      n_in, n_out: feature and target sizes.
      seed: draws the feature phases and the linear map.

    Each :meth:`next` gives ``Batch(x (B_local, n_in) float32, y (B_local, n_out) float32,
    ids (B_local,) int64)``, and raises ``StopIteration`` after the last step.

    Raises:
      ValueError: on a bad argument (named, with what is allowed).

    Example:
      >>> stream = CountingStream(4, batch_size=4, num_partitions=2)
      >>> [stream.next().ids.tolist() for _ in range(2)]
      [[0, 1, 0, 1], [2, 3, 2, 3]]
      >>> stream.next()
      Traceback (most recent call last):
      ...
      StopIteration
      >>> stream.seek({0: 1, 1: 1}); stream.next().ids.tolist()
      [2, 3, 2, 3]
    """

    def __init__(
        self,
        n_records: int,
        batch_size: int,
        partitions=None,
        num_partitions: int = 1,
        *,
        n_in: int = 4,
        n_out: int = 2,
        seed: int = 0,
    ):
        who = "CountingStream"
        self.n_records = checks.positive_int(who, "n_records", n_records)
        self.num_partitions = checks.positive_int(who, "num_partitions", num_partitions)
        self.rows = rows_per_partition(who, batch_size, num_partitions)
        if n_records % self.rows:
            lower = max(self.rows, n_records - n_records % self.rows)
            raise ValueError(
                f"{who}: argument 'n_records' ({n_records}) must be a multiple of the rows per partition "
                f"(batch_size / num_partitions = {self.rows}); e.g. {lower} or {lower + self.rows}"
            )
        self.batch_size = batch_size
        self.partitions = served_partitions(who, partitions, num_partitions)
        self.n_in = checks.positive_int(who, "n_in", n_in)
        self.n_out = checks.positive_int(who, "n_out", n_out)
        self.seed = checks.non_negative_int(who, "seed", seed)
        rng = np.random.default_rng(self.seed)
        self._a, self._b, self._c = rng.uniform(size=(3, self.n_in))
        self._m = rng.normal(size=(self.n_in, self.n_out)) / np.sqrt(self.n_in)
        self._step = 0

    @property
    def steps(self) -> int:
        """Steps in the stream: ``n_records / R``."""
        return self.n_records // self.rows

    def record(self, partition: int, ids):
        """Records ``ids`` (n,) of ``partition``: ``(x (n, n_in), y (n, n_out))`` float32."""
        ids = np.asarray(ids, np.float64)[:, None]
        x = np.sin(2 * np.pi * np.mod(ids * self._a + partition * self._b + self._c, 1.0))
        return x.astype(np.float32), (x @ self._m).astype(np.float32)

    def next(self) -> Batch:
        """The next step's records, one per row."""
        if self._step >= self.steps:
            raise StopIteration
        ids = self._step * self.rows + np.arange(self.rows, dtype=np.int64)
        xs, ys = zip(*(self.record(p, ids) for p in self.partitions))
        self._step += 1
        return Batch(np.concatenate(xs), np.concatenate(ys), np.tile(ids, len(self.partitions)))

    def offsets(self) -> dict[int, int]:
        """``{partition: next step}``."""
        return {p: self._step for p in self.partitions}

    def seek(self, offsets) -> None:
        """Moves to the steps ``offsets`` gives (equal for every served partition, at most
        :attr:`steps`)."""
        step = lockstep_offset("CountingStream.seek", offsets_for("CountingStream.seek", offsets, self.partitions))
        if step > self.steps:
            raise ValueError(f"CountingStream.seek: argument 'offsets' is past the stream's {self.steps} steps; got {step}")
        self._step = step

    def fingerprint(self) -> str:
        """Records, global batch, P, sizes and seed (not the partitions served)."""
        return fingerprint_of(
            "CountingStream", n_records=self.n_records, batch_size=self.batch_size,
            num_partitions=self.num_partitions, n_in=self.n_in, n_out=self.n_out, seed=self.seed,
        )

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return (
            f"CountingStream({self.n_records}, batch_size={self.batch_size}, partitions={list(self.partitions)}, "
            f"num_partitions={self.num_partitions}, n_in={self.n_in}, n_out={self.n_out}, seed={self.seed})"
        )
