"""The main job runs end to end on a tiny size, resumes from its checkpoints exactly, and
every YAML in configs/ builds."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from disttrace.config import TrainConfig, load
from launch.train import main, parse, train

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds(path):
    assert isinstance(load(path), TrainConfig)


def test_bad_config_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: sgd\n")
    with pytest.raises(ValueError, match="algorithm"):
        load(bad)


def test_main_runs_tiny():
    cfg = parse(["--steps", "2"])
    cfg = TrainConfig(**{**cfg.__dict__, "batch_size": 4, "eval_batch": 4, "log_every": 1})
    acc = main(cfg)
    assert 0.0 <= acc <= 1.0


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    def run(steps, directory):
        cfg = parse(["--steps", str(steps), "--checkpoint-dir", str(directory), "--checkpoint-every", "2"])
        cfg = dataclasses.replace(cfg, batch_size=4, eval_batch=4, log_every=1)
        return train(cfg)[0]

    straight = run(5, tmp_path / "straight")
    run(3, tmp_path / "cut")  # "killed" after step 3 (its last checkpoint)
    resumed = run(5, tmp_path / "cut")
    assert resumed.step_count == straight.step_count == 5
    for a, b in zip(jax.tree.leaves(resumed.learner.params()), jax.tree.leaves(straight.learner.params()), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(straight.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
