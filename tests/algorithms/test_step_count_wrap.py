"""The learner's step count never wraps: started just below 2**31 it saturates, and
ES-D-RTRL's gradients stay continuous (its bias correction is exactly 1 there)."""

import jax
import jax.numpy as jnp
import numpy as np

import disttrace as dt
from tests.algorithms.models import APPROX, N_IN, N_OUT

B = 2


def test_step_count_saturates_and_es_gradients_stay_continuous():
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(APPROX["rec_lif"](), dt.ES_D_RTRL, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    xs = jax.random.normal(jax.random.PRNGKey(0), (10, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(1), (10, B, N_OUT))
    params, step = learner.params(), jax.jit(learner.step)

    def run(t0):
        state = learner.init()._replace(t=jnp.asarray(t0, jnp.int32))
        grads, ts = [], []
        for t in range(10):
            state, _, g = step(state, params, xs[t], ys[t])
            grads.append(g)
            ts.append(int(state.t))
        return grads, ts

    near_wrap, ts = run(2**31 - 5)
    assert ts == [2**31 - 4, 2**31 - 3, 2**31 - 2, 2**31 - 1] + [2**31 - 1] * 6  # saturates, never negative
    far, _ = run(5000)  # long past the bias correction: the same computation
    for a, b in zip(near_wrap, far):
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
