"""``DirectoryStream``: chunks read in order with ``[file_seq, index]`` offsets, seek equals
continuing, ``*.tmp`` files ignored, ``follow`` sees files renamed in while it waits, and
every malformed or missing file stops the stream with an error naming it."""

import io
import os
import threading

import numpy as np
import pytest

from disttrace.streaming import DirectoryStream, StreamSource, write_npz_chunk

R, N_IN = 2, 3


def _chunk(d, p, seq, first, n):
    """n steps of partition p with record ids first … first + n·R - 1 (x[..., 0] = id + 100·p)."""
    ids = np.arange(first, first + n * R).reshape(n, R)
    x = np.repeat((ids + 100 * p)[..., None], N_IN, axis=-1).astype(np.float32)
    return write_npz_chunk(d, p, seq, x, ids.astype(np.float32) * 2, ids)


def _fill(d, partitions=(0, 1), sizes=(3, 2)):
    for p in partitions:
        first = 0
        for seq, n in enumerate(sizes):
            _chunk(d, p, seq, first, n)
            first += n * R


def test_reads_chunks_in_order_with_offsets(tmp_path):
    _fill(tmp_path, sizes=(3, 2))
    stream = DirectoryStream(tmp_path)
    assert isinstance(stream, StreamSource) and stream.num_partitions == 2 and stream.partitions == (0, 1)
    assert stream.offsets() == {0: [-1, 0], 1: [-1, 0]}
    steps = []
    while True:
        try:
            batch = stream.next()
        except StopIteration:
            break
        steps.append(batch)
        assert batch.ids.dtype == np.int64 and batch.x.shape == (2 * R, N_IN) and batch.y.shape == (2 * R,)
        np.testing.assert_array_equal(batch.x[:, 0], batch.ids + np.repeat([0, 100], R))
    assert len(steps) == 5
    assert np.concatenate([b.ids[:R] for b in steps]).tolist() == list(range(10))
    assert stream.offsets() == {0: [1, 2], 1: [1, 2]}
    with pytest.raises(StopIteration):  # stays ended
        stream.next()


def test_seek_equals_continuing(tmp_path):
    _fill(tmp_path, sizes=(3, 2, 4))
    stream = DirectoryStream(tmp_path, partitions=[1], num_partitions=2)
    for _ in range(4):
        stream.next()
    offsets = stream.offsets()
    assert offsets == {1: [1, 1]}
    ahead = [stream.next() for _ in range(5)]
    fresh = DirectoryStream(tmp_path, partitions=[1], num_partitions=2)
    fresh.seek({"1": offsets[1], "0": [0, 0]})  # JSON keys; other partitions ignored
    for a, b in zip(ahead, [fresh.next() for _ in range(5)]):
        for u, v in zip(a, b):
            assert u.tobytes() == v.tobytes()
    # an offset at the end of a file continues with the next one
    fresh.seek({1: [0, 3]})
    assert fresh.next().ids.tolist() == [6, 7]


def test_partial_tmp_files_are_ignored_until_renamed(tmp_path):
    _fill(tmp_path, partitions=(0,), sizes=(1,))
    path = _chunk(tmp_path, 0, 1, 2, 1)
    os.rename(path, path + ".tmp")  # a producer still writing
    with open(os.path.join(tmp_path, "p0", "00000002.npz.tmp"), "wb") as f:
        f.write(b"PK\x03\x04 half a zip")
    stream = DirectoryStream(tmp_path)
    assert stream.next().ids.tolist() == [0, 1]
    with pytest.raises(StopIteration):
        stream.next()
    os.rename(path + ".tmp", path)
    assert stream.next().ids.tolist() == [2, 3]


def test_follow_sees_a_file_renamed_in_while_it_waits(tmp_path):
    _fill(tmp_path, partitions=(0,), sizes=(1,))
    staged = tmp_path / "staging"
    later = _chunk(staged, 0, 1, 2, 1)
    sleeps = []

    def sleep(s):  # the producer renames the chunk in during the second wait
        sleeps.append(s)
        if len(sleeps) == 2:
            os.replace(later, os.path.join(tmp_path, "p0", os.path.basename(later)))

    stream = DirectoryStream(tmp_path, follow=True, poll_s=0.25, sleep=sleep)
    assert stream.next().ids.tolist() == [0, 1]
    assert stream.next().ids.tolist() == [2, 3]
    assert sleeps == [0.25, 0.25]
    assert stream.offsets() == {0: [1, 1]}


def test_follow_ends_after_timeout_without_new_files(tmp_path):
    _fill(tmp_path, partitions=(0,), sizes=(1,))
    now = [0.0]

    def sleep(s):
        now[0] += s

    stream = DirectoryStream(tmp_path, follow=True, poll_s=1.0, timeout_s=5.0, sleep=sleep, clock=lambda: now[0])
    stream.next()
    with pytest.raises(StopIteration):
        stream.next()
    assert now[0] == 5.0
    assert stream.offsets() == {0: [0, 1]}


def test_follow_with_a_real_producer_thread(tmp_path):
    _fill(tmp_path, partitions=(0, 1), sizes=(1,))
    stream = DirectoryStream(tmp_path, follow=True, poll_s=0.01, timeout_s=30.0)
    stream.next()
    producer = threading.Timer(0.2, lambda: [_chunk(tmp_path, p, 1, 2, 1) for p in (1, 0)])
    producer.start()
    try:
        assert stream.next().ids.tolist() == [2, 3, 2, 3]  # waits until both partitions have the step
    finally:
        producer.join()


def test_unequal_partitions_end_with_a_warning(tmp_path):
    _chunk(tmp_path, 0, 0, 0, 2)
    _chunk(tmp_path, 1, 0, 0, 1)
    stream = DirectoryStream(tmp_path)
    stream.next()
    with pytest.warns(UserWarning, match=r"partitions \[1\] .* no more complete files, while \[0\] still have steps"):
        with pytest.raises(StopIteration):
            stream.next()
    assert stream.offsets() == {0: [0, 1], 1: [0, 1]}  # nothing moved


def open_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_malformed_files_stop_the_stream_naming_them(tmp_path):
    _fill(tmp_path, partitions=(0,), sizes=(1,))
    bad = os.path.join(tmp_path, "p0", "00000001.npz")
    np.savez(bad, x=np.zeros((1, R, N_IN), np.float32), ids=np.zeros((1, R), np.int64))
    stream = DirectoryStream(tmp_path)
    stream.next()
    with pytest.raises(ValueError, match=r"00000001.npz lacks the key\(s\) \['y'\]"):
        stream.next()

    cases = {
        "garbage": lambda p: _write_bytes(p, b"not a zip file"),
        "npy": lambda p: _write_bytes(p, _npy_bytes()),
        "truncated": lambda p: _write_bytes(p, open_bytes(tmp_path / "p0" / "00000000.npz")[:200]),
        "rows": lambda p: np.savez(p, x=np.zeros((1, 3, N_IN), np.float32), y=np.zeros((1, 3), np.float32),
                                   ids=np.zeros((1, 3), np.int64)),
        "dtype": lambda p: np.savez(p, x=np.zeros((1, R, N_IN), np.float64), y=np.zeros((1, R), np.float32),
                                    ids=np.zeros((1, R), np.int64)),
        "ids": lambda p: np.savez(p, x=np.zeros((1, R, N_IN), np.float32), y=np.zeros((1, R), np.float32),
                                  ids=np.zeros((1, R), np.float32)),
        "shape": lambda p: np.savez(p, x=np.zeros((2, R, N_IN), np.float32), y=np.zeros((1, R), np.float32),
                                    ids=np.zeros((1, R), np.int64)),
    }
    messages = {
        "garbage": "cannot read .*00000001.npz: ValueError: This file contains pickled",
        "npy": "cannot read .*00000001.npz: ValueError: it is a single .npy array",
        "truncated": "cannot read .*00000001.npz: (BadZipFile|EOFError|OSError|ValueError)",
        "rows": r"00000001.npz has rows 3 \(not 2\).*unlike .*00000000.npz",
        "dtype": r"00000001.npz has x dtype float64 \(not float32\)",
        "ids": r"00000001.npz: 'ids' must be \(n, rows\) integers",
        "shape": r"00000001.npz: 'x' must have shape \(1, 2\) \+ ...; got \(2, 2, 3\)",
    }
    for name, write in cases.items():
        write(bad)
        stream = DirectoryStream(tmp_path)
        stream.next()
        with pytest.raises(ValueError, match=messages[name]):
            stream.next()
        assert stream.offsets() == {0: [0, 1]}


def test_missing_directories_files_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="'path' must be an existing directory; got .*nowhere"):
        DirectoryStream(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"cannot infer num_partitions .* directories \[\], not p0 … p<P-1>; pass num_partitions"):
        DirectoryStream(tmp_path)
    _fill(tmp_path, partitions=(0, 2), sizes=(2,))
    with pytest.raises(ValueError, match=r"directories \['p0', 'p2'\], not p0 … p<P-1>"):
        DirectoryStream(tmp_path)
    with pytest.raises(ValueError, match="has a directory p2, but num_partitions is 2"):
        DirectoryStream(tmp_path, num_partitions=2)
    stream = DirectoryStream(tmp_path, partitions=[0, 1, 2], num_partitions=3)  # p1 not created yet: empty
    with pytest.warns(UserWarning, match=r"partitions \[1\] of"), pytest.raises(StopIteration):
        stream.next()

    stream = DirectoryStream(tmp_path, partitions=[0], num_partitions=3)
    with pytest.raises(FileNotFoundError, match=r"partition 0's offset \[4, 1\] points into .*p0/00000004.npz, "
                                                r"which is missing"):
        stream.seek({0: [4, 1]})
    with pytest.raises(ValueError, match=r"offset \[0, 3\] is past the 2 steps of .*00000000.npz"):
        stream.seek({0: [0, 3]})
    for off in ([-1, 2], [0], "0,1", [0.0, 1]):
        with pytest.raises(ValueError, match="offset must be \\[file_seq, index\\]"):
            stream.seek({0: off})
    assert stream.offsets() == {0: [-1, 0]}

    os.remove(os.path.join(tmp_path, "p0", "00000000.npz"))
    with pytest.raises(FileNotFoundError, match="00000000.npz, which is missing"):
        stream.seek({0: [0, 1]})
    _write_bytes(os.path.join(tmp_path, "p0", "latest.npz"), b"")
    with pytest.raises(ValueError, match="latest.npz is not named <seq>.npz"):
        stream.next()


def test_write_npz_chunk_is_append_only_and_checks_shapes(tmp_path):
    path = _chunk(tmp_path, 0, 7, 0, 1)
    assert path.endswith(os.path.join("p0", "00000007.npz"))
    assert sorted(os.listdir(os.path.join(tmp_path, "p0"))) == ["00000007.npz"]  # no .tmp left
    with pytest.raises(FileExistsError, match="append-only"):
        _chunk(tmp_path, 0, 7, 0, 1)
    with pytest.raises(ValueError, match="'x' must have shape"):
        write_npz_chunk(tmp_path, 0, 8, np.zeros((2, 2)), np.zeros((1, 2)), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="'ids' must be \\(n, rows\\) integers"):
        write_npz_chunk(tmp_path, 0, 8, np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)))


def test_fingerprint_ignores_partitions_and_location(tmp_path):
    _fill(tmp_path / "a" / "run", sizes=(1,))
    _fill(tmp_path / "b" / "run", sizes=(1,))
    a = DirectoryStream(tmp_path / "a" / "run", partitions=[0])
    assert a.fingerprint() == DirectoryStream(tmp_path / "b" / "run", partitions=[1]).fingerprint()
    assert a.fingerprint() != DirectoryStream(tmp_path / "a" / "run", num_partitions=3).fingerprint()
