"""UORO: the mean of its gradient over projection keys converges to RTRL's (= BPTT's)
gradient (unbiasedness, float64); one key gives one reproducible estimate; the estimate
takes O(B·H + |θ|) bytes."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import cosine, flat
from tests.algorithms.models import APPROX, N_IN

T, B = 10, 2


def _learner(spec):
    brainstate.random.seed(0)
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    return dt.compile(APPROX["rec_lif"](), spec, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)


def _data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    return xs, jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))


def _per_key_grads(learner, xs, ys, keys):
    """Mean-over-time gradient of the functional step, one per key (vmap over states)."""
    params, state0 = learner.params(), learner.init()

    def run(key):
        def body(carry, xy):
            st, acc = carry
            st, _, g = learner.step(st, params, *xy)
            return (st, jax.tree.map(jnp.add, acc, g)), None

        state = state0._replace(m=state0.m._replace(key=key))
        (_, total), _ = jax.lax.scan(body, (state, jax.tree.map(jnp.zeros_like, params)), (xs, ys))
        return jax.tree.map(lambda a: a / T, total)

    return jax.jit(jax.vmap(run))(keys)


# Measured (jax 0.10.2 CPU, float64): cosine of the mean over the first n keys to RTRL's
# gradient 0.33 / 0.65 / 0.92 / 0.985 and relative error 2.5 / 0.82 / 0.44 / 0.18 for
# n = 1 / 5 / 50 / 200 — the error falls like 1/sqrt(n), as an unbiased estimate's does.
# 9.4 s on the shared 2-core machine: slow pass.
@pytest.mark.slow
def test_mean_over_keys_converges_to_rtrl(x64):
    xs, ys = _data()
    rtrl = _learner(dt.RTRL)
    ref = flat(rtrl.etrace_grad(xs, ys, step_fn=lambda x, y: rtrl.loss_fn(rtrl(x), y)))
    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(200)])
    per_key = _per_key_grads(_learner(dt.UORO), xs, ys, keys)
    per_key = np.stack([flat(jax.tree.map(lambda a, i=i: a[i], per_key)) for i in range(200)])
    err = lambda n: np.linalg.norm(per_key[:n].mean(0) - ref) / np.linalg.norm(ref)
    assert cosine(per_key.mean(0), ref) >= 0.95
    # one key is far off (the variance), the mean over more keys closer: no bias
    assert cosine(per_key[0], ref) < 0.9
    assert err(200) < err(50) < err(5)


def test_one_key_is_one_reproducible_estimate(x64):
    xs, ys = _data()
    grads = []
    for spec in (dt.UORO(projection_key=3), dt.UORO(projection_key=jax.random.PRNGKey(3)), dt.UORO(projection_key=4)):
        lrn = _learner(spec)
        grads.append(flat(lrn.etrace_grad(xs, ys, step_fn=lambda x, y, lrn=lrn: lrn.loss_fn(lrn(x), y))))
    np.testing.assert_array_equal(grads[0], grads[1])
    assert np.abs(grads[0] - grads[2]).max() > 1e-6


def test_estimate_bytes_and_arguments():
    learner = _learner(dt.UORO)
    h = sum(int(np.prod(s[1:])) for s in learner.graph.hidden_shapes)
    n_theta = sum(int(np.prod(s)) for s in learner._leaf_shapes.values())
    assert learner.influence_bytes() == (B * h + n_theta) * 4 + 8
    assert dt.RandomProjectionVjpAlgorithm is dt.UORO and "uoro" in dt.algorithms.registered()
    with pytest.raises(ValueError, match="projection_key"):
        dt.UORO(projection_key="seed")
    with pytest.raises(ValueError, match="projection_eps"):
        dt.UORO(projection_eps=-1.0)
