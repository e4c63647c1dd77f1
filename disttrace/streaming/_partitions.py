"""Partitions of a stream: which rows of the global batch a partition owns, which
partitions a source serves, and the checks every source applies to them and to offsets.

Partition ``p`` of P owns rows ``[p·R, (p+1)·R)`` of the global batch of B rows, with
``R = B / P`` rows per partition. A source serving partitions ``(p0, p1, …)`` (ascending)
yields their rows concatenated in that order, so row ``k·R + j`` of its batch is row
``j`` of partition ``p_k``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from disttrace import checks

__all__ = ["lockstep_offset", "offsets_for", "rows_per_partition", "served_partitions"]


def served_partitions(who: str, partitions: Iterable[int] | None, num_partitions: int) -> tuple[int, ...]:
    """The partitions a source serves, validated and ascending.

    Args:
      who: the caller, for messages.
      partitions: distinct ints in ``[0, num_partitions)``; ``None``: all of them.
      num_partitions: P.

    Raises:
      ValueError: on a partition out of range, a repeated one or an empty set.
    """
    num_partitions = checks.positive_int(who, "num_partitions", num_partitions)
    if partitions is None:
        return tuple(range(num_partitions))
    if isinstance(partitions, str | bytes) or not isinstance(partitions, Iterable):
        raise checks.ArgumentTypeError(
            f"{who}: argument 'partitions' must be a sequence of ints in [0, {num_partitions}) or None; "
            f"got {partitions!r}"
        )
    items = list(partitions)
    for p in items:
        checks.non_negative_int(who, "partitions", p)
    bad = [p for p in items if p >= num_partitions]
    if bad or not items or len(set(items)) != len(items):
        what = "is empty" if not items else (f"has {bad} >= num_partitions" if bad else "repeats a partition")
        raise ValueError(
            f"{who}: argument 'partitions' must be distinct ints in [0, {num_partitions}) (num_partitions "
            f"{num_partitions}); got {items!r}, which {what}"
        )
    return tuple(sorted(int(p) for p in items))


def rows_per_partition(who: str, batch_size: int, num_partitions: int) -> int:
    """``R = batch_size / num_partitions``.

    Raises:
      ValueError: if ``num_partitions`` does not divide ``batch_size`` (with the nearest
        valid batch sizes).
    """
    batch_size = checks.positive_int(who, "batch_size", batch_size)
    num_partitions = checks.positive_int(who, "num_partitions", num_partitions)
    if batch_size % num_partitions:
        lower = max(num_partitions, batch_size - batch_size % num_partitions)
        raise ValueError(
            f"{who}: argument 'batch_size' ({batch_size}) must be a multiple of num_partitions ({num_partitions}), "
            f"so that every partition owns batch_size / num_partitions rows; e.g. {lower} or {lower + num_partitions}"
        )
    return batch_size // num_partitions


def offsets_for(who: str, offsets, partitions: tuple[int, ...]) -> dict[int, Any]:
    """``offsets`` restricted to ``partitions``, keyed by int (JSON gives string keys back).

    Raises:
      ValueError: if ``offsets`` is not a mapping, a key is not a partition number, or a
        served partition is missing.
    """
    if not isinstance(offsets, Mapping):
        raise checks.ArgumentTypeError(
            f"{who}: argument 'offsets' must be a dict {{partition: offset}}; got {type(offsets).__name__}"
        )
    by_int = {}
    for key, value in offsets.items():
        try:
            p = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: argument 'offsets' has key {key!r}, which is not a partition number") from None
        by_int[p] = value
    missing = [p for p in partitions if p not in by_int]
    if missing:
        raise ValueError(
            f"{who}: argument 'offsets' must give an offset for every partition served {list(partitions)}; "
            f"partitions {missing} are missing (got keys {sorted(by_int)})"
        )
    return {p: by_int[p] for p in partitions}


def lockstep_offset(who: str, offsets: Mapping[int, Any]) -> int:
    """The one step index of a generated stream's partitions, which move together.

    Raises:
      ValueError: if an offset is not an int >= 0, or they differ.
    """
    for p, off in offsets.items():
        checks.non_negative_int(who, f"offsets[{p}]", off)
    values = set(offsets.values())
    if len(values) != 1:
        raise ValueError(
            f"{who}: argument 'offsets' must give every partition served the same step (they move together); "
            f"got {dict(offsets)}"
        )
    return int(values.pop())
