"""StreamTrainer: per-step online training on a mesh of 8 fake CPU devices equals the
single-device run and lowers the loss on a learnable stream."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
import disttrace.distributed as dd
from tests.nn.layer_case import Stack

B, N_IN, N, N_OUT, STEPS = 8, 4, 16, 2, 60


def _trainer(mesh, algo):
    brainstate.random.seed(0)
    net = Stack(dt.nn.LeakyRate(N_IN, N), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(net, algo, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    return dt.train.StreamTrainer(learner, optax.adam(1e-2), (jnp.zeros((B, N_IN)), jnp.zeros((B, N_OUT))), mesh)


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
