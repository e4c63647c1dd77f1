"""The main job runs end to end on a tiny size, resumes from its checkpoints exactly,
refuses a checkpoint of another algorithm, and its command line answers fast with one-line
errors and exit codes."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from disttrace.config import ConfigError, TrainConfig, load
from launch.train import cli, main, parse, parse_args, train

pytestmark = pytest.mark.usefixtures("optax_promotion")  # Adam under strict promotion (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--batch-size", "4", "--eval-batch", "4", "--log-every", "1", "--model.n_rec", "8", "--task.n_cues", "3",
        "--task.delay", "4"]


@pytest.mark.slow  # compile-bound (~15-45 s); main() is also run by the resume tests through train()
def test_main_runs_tiny():
    cfg = parse(["--steps", "2", *TINY])
    assert cfg.model.n_rec == 8 and cfg.batch_size == 4
    acc = main(cfg)
    assert 0.0 <= acc <= 1.0


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    def run(steps, directory):
        cfg = parse(["--steps", str(steps), "--checkpoint-dir", str(directory), "--checkpoint-every", "2", *TINY])
        return train(cfg)[0]

    straight = run(5, tmp_path / "straight")
    run(3, tmp_path / "cut")  # "killed" after step 3 (its last checkpoint)
    resumed = run(5, tmp_path / "cut")
    assert resumed.step_count == straight.step_count == 5
    for a, b in zip(jax.tree.leaves(resumed.learner.params()), jax.tree.leaves(straight.learner.params()), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(straight.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    jax.tree.map(np.testing.assert_array_equal, resumed.state, straight.state)


def test_restore_step_and_a_changed_algorithm(tmp_path, capsys):
    base = ["--checkpoint-dir", str(tmp_path), "--checkpoint-every", "1", *TINY]
    train(parse(["--steps", "2", *base]))
    # --restore-step 1 resumes at step 1 and trains step 2 again
    cfg, args = parse_args(["--steps", "2", "--restore-step", "1", *base])
    assert args.restore_step == 1
    with pytest.raises(ConfigError, match=r"has steps \[2\] after the restored step 1, which training on would"):
        train(cfg, restore_step=args.restore_step)
    assert "at step 1" in capsys.readouterr().out
    trainer, _ = train(parse(["--steps", "1", *base]), restore_step=1)  # evaluate only
    assert trainer.step_count == 1
    # another algorithm: refused with both named, exit 2, one line
    with pytest.raises(ConfigError, match=r"this run: algorithm \{'name': 'es_d_rtrl', 'decay': 0.9\}"):
        train(parse(["--steps", "3", "--algorithm", "es_d_rtrl", *base]))
    # another model size: the leaf-by-leaf message of the Checkpointer, as a config error
    with pytest.raises(ConfigError, match="holds the state of another run"):
        train(parse(["--steps", "3", *base, "--model.n_rec", "12"]))
    # the same shapes but another decay of ES-D-RTRL's: the saved config names the difference
    assert cli(["--steps", "3", "--algorithm", "es_d_rtrl", *base]) == 2
    assert "error: config key 'checkpoint.directory'" in capsys.readouterr().err
    assert cli(["--steps", "3", "--restore-step", "7", *base]) == 2
    assert "is not a committed checkpoint" in capsys.readouterr().err


def test_a_checkpoint_of_another_decay_is_refused_naming_both(tmp_path):
    base = ["--checkpoint-dir", str(tmp_path), *TINY, "--algorithm", "es_d_rtrl"]
    train(parse(["--steps", "1", *base]))
    with pytest.raises(ConfigError, match=r"written with algorithm \{'name': 'es_d_rtrl', 'decay': 0.9\}; this run has "
                                          r"\{'name': 'es_d_rtrl', 'decay': 0.5\}"):
        train(parse(["--steps", "2", *base, "--algorithm.decay", "0.5"]))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_help_does_not_import_jax_and_lists_every_field():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "launch.train", "--config", "configs/evidence_lif.yaml", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "jax" not in imported and "brainstate" not in imported and "optax" not in imported
    assert "disttrace.config._schema" in imported
    text = out.stdout
    assert "config file in use: configs/evidence_lif.yaml" in text
    for key in ("--model.n_rec", "--optimizer.learning_rate", "--checkpoint.directory", "--task.n_cues", "--steps",
                "--algorithm", "--restore-step"):
        assert key in text, key
    assert "default: 0.005" in text and "default: 64" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["--model.n_recc", "3"], "config key 'model.n_recc': unknown key; allowed keys of section 'model': ["),
        (["--set", "optimizer.learning_rate=fast"], "config key 'optimizer.learning_rate': must be a number; got 'fast'"),
        (["--set", "steps"], "override 'steps' must be KEY=VALUE"),
        (["--model.neuron", "izhikevich"], "config key 'model.neuron': must be one of ['lif', 'alif']; got 'izhikevich'"),
        (["--algorithm", "sgd"], "config key 'algorithm.name': unknown algorithm 'sgd'; allowed: ['bptt', 'd_rtrl'"),
        (["--steps", "0"], "config key 'steps': must be a positive int; got 0"),
        (["--optimizer.name", "adamm"], "config key 'optimizer.name': unknown optimizer 'adamm'"),
        (["--mesh.data", "3"], "config key 'batch_size': must be divisible by mesh.data = 3; got 32"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    out = _cli(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert message in lines[0], lines[0]


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import disttrace.cli
    import launch.train as lt

    def interrupted(cfg, restore_step=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(disttrace.cli, "run_config", interrupted)
    assert lt.cli(["--steps", "1"]) == 130
    assert capsys.readouterr().err.strip() == "python -m launch.train: interrupted"


def test_yaml_numbers_and_the_default_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  learning_rate: 1e-3\nsteps: '12'\n")
    cfg = load(f)
    assert cfg.optimizer.learning_rate == 1e-3 and cfg.steps == 12
    f.write_text("batch_size: 1e-3\n")
    with pytest.raises(ConfigError, match="'batch_size': must be an int; got '1e-3'"):
        load(f)
    assert load(ROOT / "configs" / "evidence_lif.yaml") == TrainConfig()
    assert dataclasses.replace(TrainConfig(), steps=3).steps == 3
