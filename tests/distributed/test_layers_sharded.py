"""Layers of every family run in the sharded stream step (mesh 4x2) and give the same
parameters as one device (float32, tolerance as test_step.py)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
import disttrace.distributed as dd

B = 8
_ZERO = brainstate.nn.init.ZeroInit()


class Integrate(brainstate.nn.Module):
    def __init__(self, layer, out_shape):
        super().__init__()
        self.layer, self.out_shape = layer, out_shape

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, *self.out_shape)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.layer(x))
        return self.h.value


MODELS = {
    "conv2d": (lambda: Integrate(dt.nn.Conv2d((4, 4, 2), 4, 3, b_init=_ZERO), (4, 4, 4)), (4, 4, 2), (4, 4, 4)),
    "grouped": (lambda: Integrate(dt.nn.GroupedLinear(2, 4, 4), (2, 4)), (2, 4), (2, 4)),
    "layernorm": (lambda: Integrate(dt.nn.LayerNorm(6), (6,)), (6,), (6,)),
    "lstm": (lambda: brainstate.nn.Sequential(dt.nn.LSTMCell(4, 8), dt.nn.Linear(8, 2)), (4,), (2,)),
    "lora": (lambda: Integrate(dt.nn.LoRA(4, 2, 8, init="gaussian"), (8,)), (4,), (8,)),
    "lif": (lambda: brainstate.nn.Sequential(dt.nn.Linear(4, 8), dt.nn.LIF(8, tau=2.0), dt.nn.Linear(8, 2)),
            (4,), (2,)),
}


def _trainer(name, mesh, algo, params="replicated"):
    brainstate.random.seed(0)
    make, in_shape, out_shape = MODELS[name]
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(make(), algo, jnp.zeros((B, *in_shape)), batch_size=B, loss_fn=mse)
    batch = (jnp.zeros((B, *in_shape)), jnp.zeros((B, *out_shape)))
    return dt.train.Trainer(learner, optax.sgd(0.1), batch, mesh, params=params), in_shape, out_shape


def _cases():
    # model-sharded params run in the slow pass for the stateless layers (~1 CPU s each,
    # 2026-12-02): lstm and lif keep them in the default suite
    slow = {"conv2d", "grouped", "layernorm", "lora"}
    return [
        pytest.param(name, algo, params, id=f"{name}-{algo_id}-{params}",
                     marks=[pytest.mark.slow] if params == "model" and name in slow else [])
        for params in ("replicated", "model")
        for algo_id, algo in (("d_rtrl", dt.D_RTRL), ("es_d_rtrl", dt.ES_D_RTRL))
        for name in sorted(MODELS)
    ]


@pytest.mark.parametrize("name, algo, params", _cases())
def test_layer_in_sharded_step_equals_one_device(name, algo, params):
    one, in_shape, out_shape = _trainer(name, None, algo)
    many, _, _ = _trainer(name, dd.make_mesh(data=4, model=2), algo, params)
    for t in range(3):
        x = jax.random.normal(jax.random.PRNGKey(t), (B, *in_shape))
        y = jax.random.normal(jax.random.PRNGKey(100 + t), (B, *out_shape))
        one.step(x, y)
        many.step(x, y)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6),
        one.state.params,
        many.state.params,
    )
