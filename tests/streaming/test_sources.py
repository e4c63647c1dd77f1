"""Sources: ``TaskStream`` and ``CountingStream`` (generated, seekable in O(1)) and
``DirectoryStream`` (append-only ``.npz`` chunks): ``seek(offsets())`` reproduces the next
batches bitwise, partitions own their rows whichever worker serves them, record ids are
as documented, and bad input is a clear error."""

import jax
import numpy as np
import pytest

from disttrace.streaming import Batch, CountingStream, StreamSource, TaskStream
from disttrace.tasks import EvidenceAccumulation

TASK = EvidenceAccumulation(n_cues=1, cue_len=2, gap=1, delay=1, recall=2, n_per_group=2)  # T = 6


def _same(a: Batch, b: Batch):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _draw(stream, n):
    return [stream.next() for _ in range(n)]


# ---- TaskStream ----------------------------------------------------------------------------
def test_task_stream_seek_equals_continuing():
    stream = TaskStream(TASK, batch_size=8, partitions=[1, 3], num_partitions=4, seed=3)
    assert isinstance(stream, StreamSource)
    _draw(stream, 8)  # into the second trial
    offsets = stream.offsets()
    assert offsets == {1: 8, 3: 8}
    ahead = _draw(stream, 10)
    fresh = TaskStream(TASK, batch_size=8, partitions=[1, 3], num_partitions=4, seed=3)
    fresh.seek({str(p): o for p, o in offsets.items()})  # as JSON gives them back
    for a, b in zip(ahead, _draw(fresh, 10)):
        _same(a, b)


def test_task_stream_layout_trials_and_ids():
    stream = TaskStream(TASK, batch_size=8, partitions=[0, 2], num_partitions=4, seed=0)
    T, R = stream.trial_length, 2
    assert T == TASK.length == 6
    batches = _draw(stream, 2 * T)
    for s, batch in enumerate(batches):
        k, t = divmod(s, T)
        assert batch.x.shape == (4, TASK.n_in) and batch.x.dtype == np.float32
        assert batch.y["label"].shape == (4,) and batch.y["label"].dtype == np.int32
        assert batch.y["mask"].shape == () and batch.y["mask"].dtype == np.float32
        assert batch.ids.dtype == np.int64 and batch.ids.tolist() == [s * R, s * R + 1] * 2
        for i, p in enumerate((0, 2)):
            xs, labels, mask = stream.trial(p, k)
            assert xs.shape == (T, R, TASK.n_in)
            np.testing.assert_array_equal(batch.x[i * R:(i + 1) * R], xs[t])
            np.testing.assert_array_equal(batch.y["label"][i * R:(i + 1) * R], labels)
            assert batch.y["mask"] == mask[t]
    assert [float(b.y["mask"]) for b in batches[:T]] == [0, 0, 0, 0, 1, 1]  # recall = last 2 steps
    # a partition's data is its own, whichever partitions a source serves
    alone = TaskStream(TASK, batch_size=8, partitions=[2], num_partitions=4, seed=0)
    for batch in batches:
        np.testing.assert_array_equal(alone.next().x, batch.x[R:])
    # and partitions differ from each other
    assert not np.array_equal(stream.trial(0, 0)[0], stream.trial(2, 0)[0])


def test_task_stream_seek_far_regenerates_one_trial():
    stream = TaskStream(TASK, batch_size=2, num_partitions=1, seed=0)
    calls = []
    inner = stream._trial
    stream._trial = lambda *args: calls.append(args) or inner(*args)
    far = 10**6 * 6 + 4
    stream.seek({0: far})
    batch = stream.next()
    assert len(calls) == 1  # trial 10**6 alone, drawn from fold_in(fold_in(key, 0), 10**6)
    xs, labels, mask = TASK.sample(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 0), 10**6), 2)
    np.testing.assert_array_equal(batch.x, np.asarray(xs)[4])
    np.testing.assert_array_equal(batch.y["label"], np.asarray(labels))
    assert batch.ids.tolist() == [2 * far, 2 * far + 1]


def test_task_stream_fingerprint_and_errors():
    a = TaskStream(TASK, batch_size=8, partitions=[0], num_partitions=2, seed=0)
    assert a.fingerprint() == TaskStream(TASK, batch_size=8, partitions=[1], num_partitions=2).fingerprint()
    assert a.fingerprint().startswith("TaskStream:")
    for other in (TaskStream(TASK, 8, None, 2, seed=1), TaskStream(TASK, 8, None, 4), TaskStream(TASK, 16, None, 2),
                  TaskStream(EvidenceAccumulation(n_cues=3), 8, None, 2)):
        assert other.fingerprint() != a.fingerprint()
    with pytest.raises(ValueError, match=r"'batch_size' \(6\) must be a multiple of num_partitions \(4\).*e.g. 4 or 8"):
        TaskStream(TASK, batch_size=6, num_partitions=4)
    with pytest.raises(ValueError, match=r"'partitions' must be distinct ints in \[0, 2\).*\[0, 2\].*has \[2\]"):
        TaskStream(TASK, batch_size=4, partitions=[0, 2], num_partitions=2)
    with pytest.raises(ValueError, match="repeats a partition"):
        TaskStream(TASK, batch_size=4, partitions=[1, 1], num_partitions=2)
    with pytest.raises(TypeError, match="'task' must have 'length'"):
        TaskStream(object(), batch_size=4)
    stream = TaskStream(TASK, batch_size=4, num_partitions=2)
    with pytest.raises(ValueError, match="the same step.*got {0: 1, 1: 2}"):
        stream.seek({0: 1, 1: 2})
    with pytest.raises(ValueError, match=r"partitions \[1\] are missing"):
        stream.seek({0: 1})
    with pytest.raises(ValueError, match="'offsets\\[0\\]' must be an int >= 0; got -1"):
        stream.seek({0: -1, 1: -1})
    assert stream.offsets() == {0: 0, 1: 0}  # nothing moved


def test_held_out_trials_are_not_stream_trials():
    stream = TaskStream(TASK, batch_size=2, num_partitions=1, seed=0)
    xs, labels, mask = stream.held_out(2)
    assert xs.shape == (TASK.length, 2, TASK.n_in) and labels.shape == (2,) and mask.shape == (TASK.length,)
    assert not np.array_equal(np.asarray(xs), stream.trial(0, 0)[0])
    np.testing.assert_array_equal(np.asarray(stream.held_out(2)[0]), np.asarray(xs))


# ---- CountingStream --------------------------------------------------------------------------
def test_counting_stream_records_are_functions_of_their_ids():
    stream = CountingStream(12, batch_size=6, partitions=[0, 2], num_partitions=3, n_in=3, n_out=2, seed=1)
    assert stream.steps == 6 and isinstance(stream, StreamSource)
    seen = {0: [], 2: []}
    for _ in range(stream.steps):
        batch = stream.next()
        assert batch.x.shape == (4, 3) and batch.y.shape == (4, 2) and batch.ids.dtype == np.int64
        for i, p in enumerate((0, 2)):
            ids = batch.ids[2 * i:2 * i + 2]
            x, y = stream.record(p, ids)
            np.testing.assert_array_equal(batch.x[2 * i:2 * i + 2], x)
            np.testing.assert_array_equal(batch.y[2 * i:2 * i + 2], y)
            seen[p] += ids.tolist()
    assert seen == {0: list(range(12)), 2: list(range(12))}
    with pytest.raises(StopIteration):
        stream.next()
    assert stream.offsets() == {0: 6, 2: 6}
    x0, _ = stream.record(0, [5])
    assert not np.array_equal(x0, stream.record(2, [5])[0]) and not np.array_equal(x0, stream.record(0, [6])[0])
    assert np.all(np.abs(x0) <= 1)


def test_counting_stream_seek_equals_continuing_and_errors():
    stream = CountingStream(40, batch_size=4, num_partitions=2)
    _draw(stream, 7)
    offsets = stream.offsets()
    ahead = _draw(stream, 5)
    fresh = CountingStream(40, batch_size=4, num_partitions=2)
    fresh.seek(offsets)
    for a, b in zip(ahead, _draw(fresh, 5)):
        _same(a, b)
    fresh.seek({0: 20, 1: 20})
    with pytest.raises(StopIteration):
        fresh.next()
    with pytest.raises(ValueError, match="past the stream's 20 steps; got 21"):
        fresh.seek({0: 21, 1: 21})
    with pytest.raises(ValueError, match=r"'n_records' \(7\) must be a multiple of the rows per partition.*= 2\)"):
        CountingStream(7, batch_size=4, num_partitions=2)
    with pytest.raises(TypeError, match="'n_records' must be a positive int; got True"):
        CountingStream(True, batch_size=4)
    assert CountingStream(40, 4, [0], 2).fingerprint() == CountingStream(40, 4, [1], 2).fingerprint()
    assert CountingStream(40, 4, [0], 2).fingerprint() != CountingStream(40, 4, [0], 2, seed=1).fingerprint()
