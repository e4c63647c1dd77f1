"""A resumed run with another algorithm or model is refused naming both configs, read from
the checkpoint's meta BEFORE anything is restored (also when the states' shapes differ, where
a restore would only say which leaves do not fit)."""

import pytest

from disttrace.config import ConfigError
from launch.train import parse, train

pytestmark = pytest.mark.usefixtures("optax_promotion")  # Adam under strict promotion (tests/conftest.py)

TINY = ["--batch-size", "4", "--eval-batch", "4", "--log-every", "1", "--task.n_cues", "3", "--task.delay", "4"]


def test_another_model_size_is_refused_naming_both_configs(tmp_path):
    base = ["--checkpoint-dir", str(tmp_path), *TINY]
    train(parse(["--steps", "1", "--model.n_rec", "8", *base]))
    with pytest.raises(ConfigError, match=r"holds the state of another run: it was written with model \{[^}]*'n_rec': "
                                          r"8[^}]*\}; this run has \{[^}]*'n_rec': 12[^}]*\}") as err:
        train(parse(["--steps", "2", "--model.n_rec", "12", *base]))
    assert err.value.args[0].startswith("config key 'checkpoint.directory'")
    assert "the checkpoint's: algorithm {'name': 'd_rtrl'}" in str(err.value)
