"""The main job runs end to end on a tiny size, and every YAML in configs/ builds."""

from pathlib import Path

import pytest

from disttrace.config import TrainConfig, load
from launch.train import main, parse

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
