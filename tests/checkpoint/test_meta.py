"""``Checkpointer.meta``: the JSON meta of a committed, verified step, read without
restoring the step's arrays (``launch.train`` compares configs with it before restoring)."""

import re

import jax.numpy as jnp
import pytest

from disttrace.checkpoint import Checkpointer
from disttrace.errors import CheckpointError

N = 1 << 14  # 64 KiB of float32: its own data file


def _state(step):
    return {"w": jnp.sin(jnp.arange(N, dtype=jnp.float32) * (step + 1))}


def _save_steps(directory, steps=(1, 2)):
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        for s in steps:
            ckpt.save(s, _state(s), meta={"step": s, "config": {"model": {"n_rec": 8 * s}}})


def test_meta_of_the_newest_and_of_a_given_step(tmp_path):
    _save_steps(tmp_path)
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        assert ckpt.meta() == {"step": 2, "config": {"model": {"n_rec": 16}}}
        assert ckpt.meta(1) == {"step": 1, "config": {"model": {"n_rec": 8}}}
        assert ckpt.restored_step is None  # nothing was restored


def test_meta_waits_for_the_save_in_flight(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        for s in range(1, 4):
            ckpt.save(s, _state(s), meta={"step": s})
            assert ckpt.meta() == {"step": s}  # never an older step, never a half-written one


def test_a_missing_step_and_an_empty_directory(tmp_path):
    with Checkpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(FileNotFoundError, match="Checkpointer.meta: no complete and verified checkpoint"):
            ckpt.meta()
    _save_steps(tmp_path / "run")
    with Checkpointer(tmp_path / "run", read_only=True) as ckpt:
        with pytest.raises(FileNotFoundError, match=r"argument 'step' 7 is not a committed checkpoint.*\[1, 2\]"):
            ckpt.meta(7)
        with pytest.raises(ValueError, match=r"Checkpointer.meta: argument 'step' must be an int >= 0; got -1"):
            ckpt.meta(-1)


def test_a_corrupt_newest_step_falls_back_and_a_corrupt_given_step_raises(tmp_path):
    _save_steps(tmp_path)
    meta_file = tmp_path / "2" / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text()[:-3])  # truncated JSON
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        with pytest.warns(UserWarning, match=re.escape(f"skipping step 2 at {tmp_path / '2'}")):
            assert ckpt.meta() == {"step": 1, "config": {"model": {"n_rec": 8}}}
        with pytest.raises(CheckpointError) as err:
            ckpt.meta(2)
    assert err.value.step == 2 and "meta/metadata" in err.value.reason
