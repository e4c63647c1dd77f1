"""Splitting a sequence over several ``etrace_grad`` calls gives the one-call gradient
(traces and the ES bias-correction step count carry over between calls), and so does
any ``chunk_size`` within a call."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import flat
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT

T, B = 40, 2
ONLINE = {"d_rtrl": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL, "hybrid": dt.Hybrid}


def _run(make, algo, pieces, chunk_size=None):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))
    brainstate.random.seed(0)
    model = make()
    options = {"memory_budget": 2000} if algo is dt.Hybrid else {}
    learner = dt.compile(model, algo, jnp.zeros((B, N_IN)), batch_size=B, **options)
    step_fn = lambda x, y: jnp.mean((learner(x) - y) ** 2)
    grads = []
    for xs_i, ys_i in zip(np.split(np.asarray(xs), pieces), np.split(np.asarray(ys), pieces)):
        grads.append(learner.etrace_grad(xs_i, ys_i, step_fn=step_fn, chunk_size=chunk_size))
    return jax.tree.map(lambda *g: sum(g) / len(g), *grads)


@pytest.mark.parametrize("algo", sorted(ONLINE))
@pytest.mark.parametrize("model", ["rec_lif", "alif"])
def test_four_calls_equal_one(x64, algo, model):
    make = {**APPROX, **EXACT}[model]
    one = _run(make, ONLINE[algo], 1)
    four = _run(make, ONLINE[algo], 4)
    np.testing.assert_allclose(flat(four), flat(one), rtol=0, atol=1e-10)


def test_chunk_size_in_split_calls(x64):
    one = _run(APPROX["rec_lif"], dt.D_RTRL, 1)
    four = _run(APPROX["rec_lif"], dt.D_RTRL, 4, chunk_size=3)
    np.testing.assert_allclose(flat(four), flat(one), rtol=0, atol=1e-10)


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected
@pytest.mark.parametrize("algo", sorted(ONLINE))
@pytest.mark.parametrize("model", sorted({**APPROX, **EXACT}))
def test_chunk_size_equals_step_by_step(x64, algo, model):
    make = {**APPROX, **EXACT}[model]
    one = _run(make, ONLINE[algo], 1)
    chunked = _run(make, ONLINE[algo], 1, chunk_size=7)  # 40 = 5 x 7 + a tail of 5
    np.testing.assert_allclose(flat(chunked), flat(one), rtol=0, atol=1e-10)
