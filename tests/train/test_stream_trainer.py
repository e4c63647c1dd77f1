"""Trainer in stream mode: per-step online training on a mesh of 8 fake CPU devices equals
the single-device run and lowers the loss on a learnable stream; the stream API
(reset_state, params_host/set_params, evaluate) and the deprecated StreamTrainer alias."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
import disttrace.distributed as dd
from tests.nn.layer_case import Stack

# Adam cannot run under the suite's strict dtype promotion (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("optax_promotion")

B, N_IN, N, N_OUT, STEPS = 8, 4, 16, 2, 60


def _trainer(mesh, algo):
    brainstate.random.seed(0)
    net = Stack(dt.nn.LeakyRate(N_IN, N), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(net, algo, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    return dt.train.Trainer(learner, optax.adam(1e-2), (jnp.zeros((B, N_IN)), jnp.zeros((B, N_OUT))), mesh)


def _stream(t):
    # a learnable stream: the target is a fixed linear map of the current input
    x = jax.random.normal(jax.random.PRNGKey(t), (B, N_IN))
    return x, x[:, :N_OUT] * 0.5


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
def test_sharded_stream_training_equals_one_device_and_learns(algo):
    one = _trainer(None, algo)
    many = _trainer(dd.make_mesh(data=4, model=2), algo)
    losses = []
    for t in range(STEPS):
        x, y = _stream(t)
        losses.append(float(one.step(x, y)))
        many.step(x, y)
    # float32: same sums in a different order; tolerance as tests/distributed/test_step.py
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6),
        one.state.params,
        many.state.params,
    )
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    spec = many.state.learner_state.hidden[("layers", 0, "h")].sharding.spec
    assert spec[0] == "data"


def test_write_back_puts_the_trained_parameters_in_the_model():
    trainer = _trainer(None, dt.D_RTRL)
    x, y = _stream(0)
    trainer.step(x, y)
    trainer.write_back()
    for path, st in trainer.learner.param_states.items():
        jax.tree.map(np.testing.assert_array_equal, st.value, trainer.state.params[path])


def test_reset_state_starts_a_new_sequence_and_keeps_the_parameters():
    trainer = _trainer(None, dt.D_RTRL)
    fresh = jax.tree.map(np.asarray, trainer.state.learner_state)
    for t in range(3):
        trainer.step(*_stream(t))
    params = jax.tree.map(np.asarray, trainer.state.params)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - b))), trainer.state.learner_state, fresh)
    assert max(jax.tree.leaves(moved)) > 0
    trainer.reset_state()
    jax.tree.map(np.testing.assert_array_equal, trainer.state.learner_state, fresh)
    jax.tree.map(np.testing.assert_array_equal, trainer.state.params, params)
    assert trainer.step_count == int(trainer.state.step) == 3


def test_params_host_and_set_params_round_trip_on_a_mesh():
    trainer = _trainer(dd.make_mesh(data=4, model=2), dt.D_RTRL)
    trainer.step(*_stream(0))
    host = trainer.params_host()
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(host))
    doubled = jax.tree.map(lambda a: 2 * a, host)
    trainer.set_params(doubled)
    jax.tree.map(np.testing.assert_array_equal, trainer.params_host(), doubled)
    specs = jax.tree.map(lambda a: a.sharding.spec, trainer.state.params)
    assert specs == jax.tree.map(lambda s: s.spec, trainer.rules.state_shardings().params)
    first = next(iter(host))
    with pytest.raises(ValueError, match="must have shape"):
        trainer.set_params({**host, first: np.zeros((1, 1))})
    with pytest.raises(ValueError, match="must have the structure"):
        trainer.set_params({first: host[first]})


def test_batch_rules_come_from_the_first_step_when_not_given():
    brainstate.random.seed(0)
    net = Stack(dt.nn.LeakyRate(N_IN, N), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    trainer = dt.train.Trainer(learner, optax.adam(1e-2), mesh=dd.make_mesh(data=4, model=2), loss_fn=dt.train.mse)
    assert "x" not in trainer.rules.specs
    reference = _trainer(dd.make_mesh(data=4, model=2), dt.D_RTRL)
    for t in range(3):
        a, b = trainer.step(*_stream(t)), reference.step(*_stream(t))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert trainer.rules.specs["x"] == jax.sharding.PartitionSpec("data")
    assert learner.loss_fn is dt.train.mse


def test_loss_argument_must_agree_with_the_learners():
    learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
    with pytest.raises(ValueError, match="'loss_fn'.*differs from the learner's own"):
        dt.train.Trainer(learner, optax.sgd(0.1), loss_fn=dt.train.cross_entropy)
    with pytest.raises(TypeError, match="'optimizer' must be an optax GradientTransformation"):
        dt.train.Trainer(learner, "adam")
    with pytest.raises(ValueError, match="'chunk_size' must be a positive int"):
        dt.train.Trainer(learner, optax.sgd(0.1), chunk_size=0)


def test_stream_trainer_is_a_deprecated_alias():
    learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
    with pytest.warns(DeprecationWarning, match="use disttrace.train.Trainer"):
        trainer = dt.train.StreamTrainer(learner, optax.sgd(0.1), (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
    assert isinstance(trainer, dt.train.Trainer)


def test_step_counter_does_not_wrap_and_saves_past_2_31(tmp_path):
    """Issue 13: the step counter counts past 2**31 (and 2**32) and checkpoints there."""
    from disttrace.checkpoint import Checkpointer

    c = dt.train.StepCounter.of(2**32 - 2)
    seen = []
    for _ in range(4):
        c = jax.jit(lambda c: c.increment())(c)
        seen.append(int(c))
    assert seen == [2**32 - 1, 2**32, 2**32 + 1, 2**32 + 2]
    trainer = _trainer(None, dt.D_RTRL)
    trainer.state = trainer.state._replace(step=dt.train.StepCounter.of(2**31 - 5))
    trainer.step_count = 2**31 - 5
    with Checkpointer(tmp_path) as ckpt:
        for t in range(10):
            trainer.step(*_stream(t))
            assert trainer.save(ckpt, force=True)
        assert trainer.step_count == int(trainer.state.step) == 2**31 + 5
        ckpt.wait()
        assert ckpt.latest_step() == 2**31 + 5
        other = _trainer(None, dt.D_RTRL)
        other.restore(ckpt)
    assert other.step_count == 2**31 + 5
    jax.tree.map(np.testing.assert_array_equal, other.state.params, trainer.state.params)


def test_a_restored_stream_continues_bitwise(tmp_path):
    from disttrace.checkpoint import Checkpointer

    straight = _trainer(None, dt.ES_D_RTRL)
    cut = _trainer(None, dt.ES_D_RTRL)
    for t in range(6):
        straight.step(*_stream(t))
    with Checkpointer(tmp_path) as ckpt:
        for t in range(3):
            cut.step(*_stream(t))
        cut.save(ckpt, meta={"offset": 3})
        ckpt.wait()
        resumed = _trainer(None, dt.ES_D_RTRL)
        assert resumed.restore(ckpt) == {"offset": 3}
    for t in range(3, 6):
        resumed.step(*_stream(t))
    jax.tree.map(np.testing.assert_array_equal, resumed.state, straight.state)
