"""``Ledger``: exact sums, the closed form of exactly-once, JSON round trip, merge, and that
it tells a replayed or skipped record from the real thing."""

import json

import numpy as np
import pytest

from disttrace.streaming import Ledger, LedgerEntry


def test_closed_form_matches_counting_every_record_once():
    for n in range(0, 40):
        ledger = Ledger([3])
        ledger.add(3, np.arange(n))
        assert ledger == Ledger.exactly_once([3], n), n
        assert ledger[3] == LedgerEntry(n, sum(range(n)), sum(i * i for i in range(n)))


def test_a_replayed_or_skipped_record_shows():
    full = Ledger.exactly_once([0], 10)
    for ids in ([0, 1, 2, 3, 4, 5, 6, 7, 8, 8],      # 9 lost, 8 twice
                list(range(9)),                      # 9 lost
                [*range(10), 4],                     # 4 twice
                [0, 1, 2, 4, 4, 5, 6, 7, 8, 9, 3][:10]):  # 3 lost, 4 twice
        ledger = Ledger([0])
        ledger.add(0, ids)
        assert ledger != full, ids
    # a swap that keeps both the count and the sum still changes the sum of squares
    a, b = Ledger([0]), Ledger([0])
    a.add(0, [1, 4])
    b.add(0, [2, 3])
    assert a[0].count == b[0].count and a[0].id_sum == b[0].id_sum and a != b


def test_sums_are_exact_past_int64():
    ids = np.array([2**62, 2**62 + 1], dtype=np.int64)
    ledger = Ledger([0])
    ledger.add(0, ids)
    assert ledger[0].id_sq_sum == (2**62) ** 2 + (2**62 + 1) ** 2
    back = Ledger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert back == ledger


def test_add_batch_splits_rows_in_partition_order_and_merge_adds():
    ledger = Ledger([1, 4])
    ledger.add_batch((1, 4), [0, 1, 10, 11])
    assert ledger[1] == LedgerEntry(2, 1, 1) and ledger[4] == LedgerEntry(2, 21, 221)
    other = Ledger([0])
    other.add(0, [5])
    merged = ledger.merge(other)
    assert merged.partitions == (0, 1, 4) and merged[0] == LedgerEntry(1, 5, 25)
    assert merged.merge(other)[0] == LedgerEntry(2, 10, 50)  # the same partition twice adds up
    assert ledger.partitions == (1, 4)  # merge returns a new ledger
    assert merged.restrict([1]) == Ledger.exactly_once([1], 2) and merged.total().count == 5
    assert repr(Ledger.exactly_once([0], 2)) == "Ledger({0: (2, 1, 1)})"
    with pytest.raises(ValueError, match=r"'ids' must have shape \(B_local,\) with B_local a multiple of the 2"):
        ledger.add_batch((1, 4), [0, 1, 2])
    with pytest.raises(ValueError, match="must hold integers; got dtype float64"):
        ledger.add(1, [0.5])
    with pytest.raises(TypeError, match="'other' must be a Ledger"):
        ledger.merge({})


def test_json_round_trip_and_bad_json():
    ledger = Ledger.exactly_once([0, 7], 5)
    data = json.loads(json.dumps(ledger.to_json()))
    assert data == {"0": {"count": 5, "id_sum": 10, "id_sq_sum": 30}, "7": {"count": 5, "id_sum": 10, "id_sq_sum": 30}}
    assert Ledger.from_json(data) == ledger
    with pytest.raises(ValueError, match=r"entry '0' must be a dict with keys \['count', 'id_sum', 'id_sq_sum'\]"):
        Ledger.from_json({"0": {"count": 1}})
    with pytest.raises(ValueError, match="key 'x' is not a partition number"):
        Ledger.from_json({"x": {"count": 1, "id_sum": 0, "id_sq_sum": 0}})
    with pytest.raises(ValueError, match="'0.count' must be an int >= 0; got -1"):
        Ledger.from_json({"0": {"count": -1, "id_sum": 0, "id_sq_sum": 0}})
