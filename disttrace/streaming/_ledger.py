"""``Ledger``: per partition, how many records were used, and the sums of their ids and of
their squared ids.

Why these three numbers: if every record ``0 … N-1`` of a partition was used exactly
once, the ledger reads ``count = N``, ``Σid = N(N-1)/2`` and ``Σid² = (N-1)N(2N-1)/6``.
A record lost and another used twice can keep the count and even ``Σid`` unchanged, but
not both sums (``a + b = c + d`` and ``a² + b² = c² + d²`` force ``{a, b} = {c, d}``), so
comparing with the closed form (:meth:`Ledger.exactly_once`) catches the ways a resumed
run goes wrong: a replayed step, a skipped step. The sums are Python ints, exact at any
length, and a ledger travels in a checkpoint's JSON meta, where it changes only together
with the state (see :func:`~disttrace.streaming.run_worker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from disttrace import checks

__all__ = ["Ledger", "LedgerEntry"]


class LedgerEntry(NamedTuple):
    """One partition's records: ``count``, ``id_sum`` (Σid) and ``id_sq_sum`` (Σid²), ints."""

    count: int
    id_sum: int
    id_sq_sum: int

    def __add__(self, other: LedgerEntry) -> LedgerEntry:  # type: ignore[override]
        return LedgerEntry(self.count + other.count, self.id_sum + other.id_sum, self.id_sq_sum + other.id_sq_sum)


_EMPTY = LedgerEntry(0, 0, 0)


class Ledger:
    """Count, Σid and Σid² of the records used, per partition.

    Args:
      partitions: the partitions to start with, each at zero.

    Example:
      >>> ledger = Ledger([0, 1])
      >>> ledger.add_batch((0, 1), [0, 1, 0, 1])          # 2 rows per partition, in partition order
      >>> ledger.add_batch((0, 1), [2, 3, 2, 3])
      >>> ledger[0]
      LedgerEntry(count=4, id_sum=6, id_sq_sum=14)
      >>> ledger == Ledger.exactly_once([0, 1], 4)
      True
      >>> Ledger.from_json(ledger.to_json()) == ledger
      True
    """

    def __init__(self, partitions: Iterable[int] = ()):
        self._entries: dict[int, LedgerEntry] = {}
        for p in partitions:
            self._entries[checks.non_negative_int("Ledger", "partitions", p)] = _EMPTY

    # ---- reading ------------------------------------------------------------------------
    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions in the ledger, ascending."""
        return tuple(sorted(self._entries))

    def __getitem__(self, partition: int) -> LedgerEntry:
        return self._entries.get(int(partition), _EMPTY)

    def total(self) -> LedgerEntry:
        """The sums over every partition."""
        out = _EMPTY
        for entry in self._entries.values():
            out = out + entry
        return out

    def __eq__(self, other) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        keys = set(self._entries) | set(other._entries)
        return all(self[p] == other[p] for p in keys)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{p}: {tuple(e)}" for p, e in sorted(self._entries.items()))
        return f"Ledger({{{inner}}})"

    # ---- writing ------------------------------------------------------------------------
    def add(self, partition: int, ids) -> None:
        """Records the records ``ids`` (any shape of ints) of ``partition``."""
        partition = checks.non_negative_int("Ledger.add", "partition", partition)
        ids = np.asarray(ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"Ledger.add: argument 'ids' must hold integers; got dtype {ids.dtype}")
        # Python ints: Σid² cannot overflow int64
        exact = [int(i) for i in ids.reshape(-1)]
        entry = LedgerEntry(len(exact), sum(exact), sum(i * i for i in exact))
        self._entries[partition] = self[partition] + entry

    def add_batch(self, partitions: Iterable[int], ids) -> None:
        """Records one batch's ``ids`` (B_local,): equal consecutive blocks of rows belong
        to ``partitions`` in order (the layout of :class:`~disttrace.streaming.Batch`).

        Raises:
          ValueError: if ``ids`` is not 1-D or its length is not a multiple of the
            number of partitions.
        """
        partitions = tuple(partitions)
        ids = np.asarray(ids)
        if ids.ndim != 1 or not partitions or ids.shape[0] % len(partitions):
            raise ValueError(
                f"Ledger.add_batch: argument 'ids' must have shape (B_local,) with B_local a multiple of the "
                f"{len(partitions)} partitions {list(partitions)}; got shape {ids.shape}"
            )
        for p, block in zip(partitions, np.split(ids, len(partitions))):
            self.add(p, block)

    def merge(self, other: Ledger) -> Ledger:
        """A new ledger with both ledgers' records (sums add up per partition): the ledger of
        a run from its workers' ledgers, which cover disjoint partitions."""
        if not isinstance(other, Ledger):
            raise checks.ArgumentTypeError(f"Ledger.merge: argument 'other' must be a Ledger; got {type(other).__name__}")
        out = Ledger()
        for p in set(self._entries) | set(other._entries):
            out._entries[p] = self[p] + other[p]
        return out

    def restrict(self, partitions: Iterable[int]) -> Ledger:
        """A new ledger of ``partitions`` only (those not in this ledger start at zero)."""
        out = Ledger()
        for p in partitions:
            out._entries[int(p)] = self[p]
        return out

    def copy(self) -> Ledger:
        return self.restrict(self._entries)

    # ---- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, dict[str, int]]:
        """``{"<partition>": {"count", "id_sum", "id_sq_sum"}}`` (JSON keys are strings)."""
        return {str(p): e._asdict() for p, e in sorted(self._entries.items())}

    @classmethod
    def from_json(cls, data: Mapping) -> Ledger:
        """The ledger :meth:`to_json` wrote.

        Raises:
          ValueError: if ``data`` is not of that form (the message names the entry).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Ledger.from_json: argument 'data' must be a dict; got {type(data).__name__}")
        out = cls()
        for key, entry in data.items():
            fields = LedgerEntry._fields
            if not isinstance(entry, Mapping) or set(entry) != set(fields):
                raise ValueError(
                    f"Ledger.from_json: entry {key!r} must be a dict with keys {list(fields)}; got {entry!r}"
                )
            try:
                p = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"Ledger.from_json: key {key!r} is not a partition number") from None
            values = [checks.non_negative_int("Ledger.from_json", f"{key}.{f}", entry[f]) for f in fields]
            out._entries[p] = LedgerEntry(*values)
        return out

    @classmethod
    def exactly_once(cls, partitions: Iterable[int], n_records: int) -> Ledger:
        """The ledger of records ``0 … n_records-1`` of each partition, each used once:
        ``count = N``, ``Σid = N(N-1)/2``, ``Σid² = (N-1)N(2N-1)/6``."""
        n = checks.non_negative_int("Ledger.exactly_once", "n_records", n_records)
        entry = LedgerEntry(n, n * (n - 1) // 2, (n - 1) * n * (2 * n - 1) // 6)
        out = cls()
        for p in partitions:
            out._entries[checks.non_negative_int("Ledger.exactly_once", "partitions", p)] = entry
        return out
