"""Checkpoint integrity: a step carries a checksum of every file and a commit marker written
last. A truncated file, a flipped bit or a deleted metadata file in the newest step makes a
restore without a step fall back to the previous good step with a warning naming the path
and the reason; asking for the bad step raises CheckpointError (never JSONDecodeError,
AttributeError, KeyError or a TensorStore error); saving over it replaces it."""

import glob
import json
import os
import pickle
import re

import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.checkpoint import Checkpointer
from disttrace.checkpoint._integrity import MARKER
from disttrace.errors import CheckpointError, DisttraceError

N = 1 << 14  # 64 KiB of float32: stored in its own data file, not inlined in Orbax's manifest


def _state(step):
    # distinct, incompressible-enough values per step, so a restore shows which step it read
    return {"w": jnp.sin(jnp.arange(N, dtype=jnp.float32) * (step + 1)), "b": jnp.full((3,), float(step))}


TARGET = {"w": jnp.zeros(N, jnp.float32), "b": jnp.zeros(3)}


def _save_steps(directory, steps=(1, 2)):
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        for s in steps:
            ckpt.save(s, _state(s), meta={"step": s})


def _largest_data_file(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    return max(files, key=os.path.getsize)


def _truncate(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return "truncated"


def _flip_bit(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0b1000]))
    return r"checksum \(sha256\) differs"


def _delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))
    return r"state/_METADATA: missing"


def _delete_meta_json(step_dir):
    os.remove(os.path.join(step_dir, "meta", "metadata"))
    return r"meta/metadata: missing"


def _no_marker(step_dir):  # a writer killed after Orbax's rename, before the marker
    os.remove(os.path.join(step_dir, MARKER))
    return "incomplete: no commit marker"


def _garbled_marker(step_dir):
    with open(os.path.join(step_dir, MARKER), "r+b") as f:
        f.truncate(20)
    return "commit marker .* is unreadable"


CORRUPTIONS = [_truncate, _flip_bit, _delete_metadata, _delete_meta_json, _no_marker, _garbled_marker]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_bad_newest_step_falls_back_or_raises(tmp_path, corrupt):
    _save_steps(tmp_path)
    bad = str(tmp_path / "2")
    why = corrupt(bad)

    # a fresh process resuming: the previous good step, with a warning naming path and reason
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        with pytest.warns(UserWarning, match=f"skipping step 2 at {re.escape(bad)}: .*{why}"):
            state, meta = ckpt.restore(TARGET)
        assert ckpt.restored_step == 1 and meta == {"step": 1}
        assert ckpt.steps() == [1]  # a step found bad is not listed (an incomplete one never is)
        np.testing.assert_array_equal(state["w"], _state(1)["w"])
        assert ckpt.latest_step() == 1  # same step, same reason: warned once
        with pytest.raises(CheckpointError) as err:
            ckpt.restore(TARGET, step=2)
    assert err.value.step == 2 and err.value.path == bad and err.value.reason
    assert f"checkpoint step 2 at {bad} cannot be used" in str(err.value)
    assert isinstance(err.value, DisttraceError)

    with Checkpointer(tmp_path, read_only=True) as ckpt:  # latest_step alone warns too
        with pytest.warns(UserWarning, match=f"skipping step 2 at {re.escape(bad)}: .*{why}"):
            assert ckpt.latest_step() == 1

    # the resumed writer replaces the bad step when it reaches it again
    with Checkpointer(tmp_path, max_to_keep=None) as ckpt:
        with pytest.warns(UserWarning, match=f"deleting step 2 at {re.escape(bad)}"):
            ckpt.save(2, _state(20), meta={"step": 20})
        state, meta = ckpt.restore(TARGET)
    assert meta == {"step": 20}
    np.testing.assert_array_equal(state["w"], _state(20)["w"])


def test_corruption_after_this_writer_saved_is_seen(tmp_path):
    # the verification cache of the writer must not hide a change made behind its back
    with Checkpointer(tmp_path, max_to_keep=None) as ckpt:
        ckpt.save(1, _state(1))
        ckpt.save(2, _state(2))
        assert ckpt.latest_step() == 1  # 2 is still being written
        ckpt.wait()
        assert ckpt.latest_step() == 2
        _truncate(str(tmp_path / "2"))
        with pytest.warns(UserWarning, match="skipping step 2 .*truncated"):
            assert ckpt.latest_step() == 1
        ckpt.save(3, _state(3))
        ckpt.wait()
        assert ckpt.latest_step() == 3
        _flip_bit(str(tmp_path / "3"))
        with pytest.raises(CheckpointError, match="checksum"):  # a restore always hashes afresh
            ckpt.restore(TARGET, step=3)


def test_every_step_bad_means_nothing_to_restore(tmp_path):
    _save_steps(tmp_path)
    _truncate(str(tmp_path / "1"))
    _delete_metadata(str(tmp_path / "2"))
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        with pytest.warns(UserWarning, match="skipping step") as record:
            assert ckpt.latest_step() is None
        assert sorted(str(w.message).split()[3] for w in record) == ["1", "2"]
        with pytest.raises(FileNotFoundError, match=r"no complete and verified checkpoint .*skipped: step 2 .*step 1"):
            ckpt.restore(TARGET)


def test_a_good_step_is_not_overwritten(tmp_path):
    _save_steps(tmp_path)
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="newer than the latest saved step 2; got 1"):
            ckpt.save(1, _state(1))
        _no_marker(str(tmp_path / "2"))  # now 1 is the latest good step
        with pytest.warns(UserWarning, match="skipping step 2"):
            assert ckpt.latest_step() == 1
        with pytest.raises(ValueError, match="newer than the latest saved step 1; got 1"):
            ckpt.save(1, _state(1))


def test_the_marker_lists_every_file_with_its_checksum(tmp_path):
    import hashlib

    _save_steps(tmp_path, steps=(1,))
    step_dir = tmp_path / "1"
    record = json.loads((step_dir / MARKER).read_text())
    assert record["step"] == 1 and record["version"] == 1
    on_disk = sorted(
        os.path.relpath(os.path.join(root, f), step_dir)
        for root, _, files in os.walk(step_dir) for f in files if f != MARKER
    )
    assert sorted(record["files"]) == on_disk and "state/_METADATA" in on_disk and "meta/metadata" in on_disk
    for rel, want in record["files"].items():  # the numbers `sha256sum` prints
        data = (step_dir / rel).read_bytes()
        assert want == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_checkpoint_error_pickles_with_its_fields():
    err = pickle.loads(pickle.dumps(CheckpointError(7, "/ckpt/7", "state/_METADATA: missing")))
    assert (err.step, err.path, err.reason) == (7, "/ckpt/7", "state/_METADATA: missing")
    assert str(err) == "checkpoint step 7 at /ckpt/7 cannot be used: state/_METADATA: missing"
    assert str(CheckpointError(None, "/ckpt/.lock", "held")) == "checkpoint directory /ckpt/.lock cannot be used: held"
