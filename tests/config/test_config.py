"""disttrace.config: every YAML in configs/ loads and builds; typed conversion; errors that
name the key, the value and what is allowed; open registries; every section builds."""

import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import optax
import pytest

from disttrace import config
from disttrace.config import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_builds(path):
    cfg = config.load(path)
    assert isinstance(cfg, config.TrainConfig)
    task = cfg.task.build()
    model = cfg.model.build(task.n_in, task.n_out)
    assert model is not None and callable(cfg.loss.build())
    assert hasattr(cfg.optimizer.build(), "update")
    cfg.algorithm.build()
    cfg.mesh.build()
    assert config.from_data(config.TrainConfig, config.to_data(cfg)) == cfg  # round trip


def test_the_package_imports_no_jax():
    import subprocess

    code = ("import sys, importlib.util; import launch.train; "
            "assert 'jax' not in sys.modules and 'optax' not in sys.modules, sorted(sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", config.ALGORITHMS.names())
def test_every_algorithm_builds(name):
    import disttrace as dt

    spec = config.load(None, [f"algorithm.name={name}"]).algorithm.build()
    assert isinstance(spec, dt.D_RTRL | dt.ES_D_RTRL | dt.Hybrid | dt.BPTT | dt.RTRL | dt.SnAp | dt.EProp
                      | dt.OSTLRecurrent | dt.UORO | dt.ThreeFactor)  # ostl_feedforward is an ES_D_RTRL
    # every registered algorithm compiles a small recurrent net from its config
    import jax.numpy as jnp

    model = config.load(None, ["model.n_rec=4"]).model.build(3, 2)
    assert dt.compile(model, spec, jnp.zeros((2, 3)), batch_size=2) is not None
    hybrid = config.load(None, ["algorithm={name: hybrid, memory_budget: 0, decay: 0.5}"]).algorithm.build()
    assert hybrid.memory_budget == 0 and hybrid.x_decay == 0.5


@pytest.mark.parametrize("model", [
    "spiking_net", "{name: spiking_net, neuron: lif, n_layers: 2}", "{name: spiking_net, tau_a: 100.0, beta: 1.0}",
    *[f"{{name: rnn, cell: {c}}}" for c in ("vanilla", "gru", "mgu", "lstm", "urlstm", "minimal", "cfn", "minigru",
                                            "minilstm", "lru")],
    "{name: rnn, cell: lstm, n_layers: 2, tau_out: 5.0}", "leaky_rate",
])
def test_every_model_builds_and_compiles(model, recwarn):
    import disttrace as dt

    m = config.load(None, [f"model={model}", "model.n_rec=8"] if "n_rec" not in model else [f"model={model}"]).model
    net = m.build(4, 2)
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((3, 4)), batch_size=3)
    assert jnp.shape(learner.predict(jnp.zeros((2, 3, 4)))) == (2, 3, 2)


def test_typed_conversion_and_yaml_numbers():
    cfg = config.load(None, [("optimizer.learning_rate", "1e-3"), ("model.n_rec", "128"), ("model.recurrent", "false"),
                             ("chunk_size", "null"), ("optimizer.kwargs", {"b1": 0.8})])
    assert cfg.optimizer.learning_rate == 1e-3 and cfg.model.n_rec == 128 and cfg.model.recurrent is False
    assert cfg.chunk_size is None and cfg.optimizer.kwargs == {"b1": 0.8}
    with pytest.raises(ConfigError, match=r"'model.n_rec': must be an int; got 12.5"):
        config.load(None, [("model.n_rec", 12.5)])
    with pytest.raises(ConfigError, match=r"'model.n_rec': must be an int; got True"):
        config.load(None, [("model.n_rec", True)])
    with pytest.raises(ConfigError, match=r"'optimizer.learning_rate': must be a number; got 'fast'"):
        config.load(None, [("optimizer.learning_rate", "fast")])
    with pytest.raises(ConfigError, match=r"'optimizer.learning_rate': must be a number > 0; got -1.0"):
        config.load(None, ["optimizer.learning_rate=-1"])
    with pytest.raises(ConfigError, match=r"'chunk_size': must be an int or one of \['auto'\] or null; got 'x'"):
        config.load(None, ["chunk_size=x"])
    with pytest.raises(ConfigError, match=r"'model.tau_a': applies to neuron 'alif' only"):
        config.load(None, ["model.neuron=lif", "model.tau_a=5"])
    with pytest.raises(ConfigError, match=r"'task.n_cues': must be odd"):
        config.load(None, ["task.n_cues=4"])
    with pytest.raises(ConfigError, match=r"'model': must be a name \(leaky_rate, rnn, spiking_net\) or a mapping"):
        config.load(None, [("model", 3)])
    with pytest.raises(ConfigError, match=r"'steps': must be an int; got \{'x': 1\}"):
        config.load(None, ["steps.x=1"])
    with pytest.raises(ConfigError, match=r"'steps': is a value \(3\), not a section"):
        config.load(None, ["steps=3", "steps.x=1"])


def test_bad_files(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 2"):
        config.load(f)
    f.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping of keys; got list"):
        config.load(f)
    f.write_text("model:\n  n_rec: 16\ncheckpoint_dir: /tmp/x\nlearning_rate: 1e-2\n")  # old spellings still load
    cfg = config.load(f)
    assert cfg.checkpoint.directory == "/tmp/x" and cfg.optimizer.learning_rate == 1e-2 and cfg.model.n_rec == 16


def test_optimizers_and_schedules_by_optax_name():
    opt = config.load(None, ["optimizer={name: sgd, learning_rate: 0.1, kwargs: {momentum: 0.9}}"]).optimizer.build()
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
    assert float(updates["w"][0]) == pytest.approx(-0.1)
    sched = config.load(None, [
        "optimizer.schedule={name: linear_schedule, kwargs: {init_value: 1.0, end_value: 0.0, transition_steps: 10}}",
        "optimizer.name=sgd"]).optimizer
    opt = sched.build()
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.ones(3)}, state, params)
    assert float(updates["w"][0]) == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match=r"'optimizer.kwargs.momentumm': unknown option of optax.sgd; allowed: \["):
        config.load(None, ["optimizer={name: sgd, kwargs: {momentumm: 0.9}}"]).optimizer.build()
    with pytest.raises(ConfigError, match=r"'optimizer.name': unknown optimizer 'adamm'"):
        config.load(None, ["optimizer.name=adamm"]).optimizer.build()


def test_registries_are_open():
    import brainstate

    import disttrace as dt

    @config.MODELS.register("tiny_test_net")
    @dataclasses.dataclass(frozen=True)
    class Tiny(config.ModelConfig):
        width: int = 4

        def build(self, n_in, n_out):
            return brainstate.nn.Sequential(dt.nn.LeakyRate(n_in, self.width), dt.nn.LeakyRateReadout(self.width, n_out))

    config.register_loss("tiny_test_loss", dt.train.mse)
    config.register_optimizer("tiny_test_opt", lambda learning_rate: optax.sgd(learning_rate))
    cfg = config.load(None, ["model={name: tiny_test_net, width: 6}", "loss=tiny_test_loss", "optimizer.name=tiny_test_opt"])
    assert isinstance(cfg.model, Tiny) and cfg.model.width == 6
    assert cfg.loss.build() is dt.train.mse and hasattr(cfg.optimizer.build(), "update")
    assert config.to_data(cfg)["model"] == {"name": "tiny_test_net", "width": 6}
    with pytest.raises(ValueError, match="'tiny_test_net' is already registered"):
        config.MODELS.register("tiny_test_net")(type("Other", (config.ModelConfig,), {}))
    with pytest.raises(ConfigError, match=r"'model.width': must be an int"):
        config.load(None, ["model={name: tiny_test_net, width: wide}"])


def test_mesh_needs_the_devices():
    with pytest.raises(ConfigError, match=r"'mesh': data \* model = 16 \* 1 = 16 devices, but there are 8"):
        config.load(None, ["mesh.data=16", "batch_size=32"]).mesh.build()
    assert dict(config.load(None, ["mesh={data: 4, model: 2}"]).mesh.build().shape) == {"data": 4, "model": 2}
