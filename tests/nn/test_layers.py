"""The shared layer suite: every case from ``tests/nn/cases_*.py`` runs through it.

For each layer: unbatched input equals a batch of one; a wrong input shape raises a
ValueError naming ``'x'``; D-RTRL equals BPTT where the case is exact (float64,
``EXACT_F64_ATOL``) and ES-D-RTRL / inexact D-RTRL meet the case's recorded cosine floors; every
parameter gets a non-zero online gradient; a jitted and a vmapped functional step run.
"""

import importlib
import pkgutil
import re
import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
import tests.nn
from disttrace.testing import EXACT_F64_ATOL, cosine, flat, gradients


def _collect():
    cases = []
    for info in sorted(pkgutil.iter_modules(tests.nn.__path__), key=lambda i: i.name):
        if info.name.startswith("cases_"):
            cases += importlib.import_module(f"tests.nn.{info.name}").CASES
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), f"duplicate case names: {names}"
    return cases


CASES = _collect()
IDS = [c.name for c in CASES]
T, B = 20, 2
ALGOS = {"d_rtrl": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL}

# The compile-bound cases that run only in the slow pass (``-m slow``; .ci/run runs it):
# the 2-D/3-D and scaled-WS variants of a family whose 1-D member stays in the default
# suite. CPU seconds measured 2026-12-02 (jax 0.10.2, 2-core CPU, loaded machine).
SLOW_GRADIENT = {  # test_online_gradient_against_bptt, D-RTRL (their ES case stays); also the
    # cosine-floor D-RTRL cases of the recurrent cells (exact D-RTRL stays on every other family)
    "Conv2d": 5.8, "Conv3d": 5.0, "ScaledWSConv2d": 4.5, "ScaledWSConv3d": 5.1, "BatchNorm1d": 3.6,
    "GRUCell": 3.8, "MinimalRNNCell": 3.4, "ValinaRNNCell": 3.3, "LSTMCell": 3.0, "URLSTMCell": 2.8, "CFNCell": 1.9,
    "IF": 4.6, "ScaledWSConv1d": 2.3, "ScaledWSLinear": 2.1,  # LIF, Conv1d and Linear keep exact D-RTRL
}
SLOW_FUNCTIONAL = {  # test_functional_step_under_jit_and_vmap (measured with an unjitted vmap)
    "Conv2d": 9.2, "Conv3d": 7.8, "ScaledWSConv2d": 8.3, "ScaledWSConv3d": 9.2, "BatchNorm1d": 8.6,
}
SLOW_FLOAT32 = {"Conv2d": 1.3, "Conv3d": 1.0, "ScaledWSConv2d": 1.2, "ScaledWSConv3d": 1.1}  # test_es_etrace_grad_in_float32


def _cases(slow=()):
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in slow else []) for c in CASES]


def _gradient_cases():
    return [
        pytest.param(c, a, id=f"{c.name}-{a}", marks=[pytest.mark.slow] if a == "d_rtrl" and c.name in SLOW_GRADIENT else [])
        for a in sorted(ALGOS)
        for c in CASES
    ]


def _expect_warning(case):
    if case.warns is None:
        return warnings.catch_warnings()  # a no-op context
    return pytest.warns(UserWarning, match=case.warns)


def _sequences(case, model):
    xs = case.inputs(jax.random.PRNGKey(2), (T, B))
    brainstate.nn.init_all_states(model, batch_size=B)
    out = model(xs[0])  # eager, for the output shape; the model is not reused
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, *out.shape), dtype=out.dtype)
    return xs, ys


def test_every_family_has_cases():
    assert len(CASES) > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unbatched_equals_batch_of_one(case):
    brainstate.random.seed(0)
    layer = case.make()
    x = case.inputs(jax.random.PRNGKey(0), (1,))
    brainstate.nn.init_all_states(layer, batch_size=1)
    batched = [layer(x) for _ in range(2)]  # two steps: state carries over
    brainstate.nn.init_all_states(layer)
    unbatched = [layer(x[0]) for _ in range(2)]
    for b, u in zip(batched, unbatched):
        assert u.shape == b.shape[1:]
        np.testing.assert_allclose(u, b[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_shape_names_x(case):
    brainstate.random.seed(0)
    layer = case.make()
    brainstate.nn.init_all_states(layer, batch_size=2)
    if case.bad_input is not None:
        x = case.bad_input()
    else:
        bad = case.bad_shape or (2, *case.in_shape[:-1], case.in_shape[-1] + 1)
        x = case.make_input(jax.random.PRNGKey(0), bad) if case.make_input else jnp.ones(bad)
    with pytest.raises(ValueError, match=re.escape("'x'")):
        layer(x)


@pytest.mark.parametrize("case, algo", _gradient_cases())
def test_online_gradient_against_bptt(x64, case, algo):
    brainstate.random.seed(0)
    xs, ys = _sequences(case, case.build_model())
    ref = gradients(case.build_model, dt.BPTT, xs, ys)
    with _expect_warning(case):
        got = gradients(case.build_model, ALGOS[algo], xs, ys)
    assert set(got) == set(ref)
    assert np.abs(flat(ref)).max() > 1e-3, "BPTT gradient is ~0: the comparison would be vacuous"
    for path, g in got.items():
        assert np.abs(flat(g)).max() > 0, f"{path} gets no online gradient"
    if (algo == "d_rtrl" and case.exact) or (algo == "es_d_rtrl" and case.es_exact):
        for path in ref:
            np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))
        return
    assert algo in case.floors, f"{case.name}: no recorded cosine floor for {algo}; measured {cosine(got, ref):.4f}"
    assert cosine(got, ref) >= case.floors[algo]


@pytest.mark.parametrize("case", _cases(SLOW_FUNCTIONAL))
def test_functional_step_under_jit_and_vmap(case):
    brainstate.random.seed(0)
    model = case.build_model()
    xs, ys = _sequences(case, model)
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    with _expect_warning(case):
        learner = dt.compile(model, dt.D_RTRL, xs[0], batch_size=B, loss_fn=mse)
    state, params = learner.init(), learner.params()
    step = jax.jit(learner.step)  # one compilation for both calls
    state, out, grads = step(state, params, xs[0], ys[0])
    assert out.shape == ys.shape[1:] and bool(jnp.isfinite(out).all())
    copies = 2
    vstate = jax.tree.map(lambda a: jnp.stack([a] * copies), state)
    vx, vy = jnp.stack([xs[1]] * copies), jnp.stack([ys[1]] * copies)
    # jitted: the vmapped step compiled once costs less than dispatching it op by op
    _, vout, _ = jax.jit(jax.vmap(learner.step, in_axes=(0, None, 0, 0)))(vstate, params, vx, vy)
    assert vout.shape == (copies, *ys.shape[1:])
    _, out1, _ = step(state, params, xs[1], ys[1])
    np.testing.assert_allclose(vout[0], out1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", _cases(SLOW_FLOAT32))
def test_es_etrace_grad_in_float32(case):
    # the gradient tests run in float64; this runs ES-D-RTRL's etrace_grad in float32,
    # where (under the suite's strict dtype promotion, tests/conftest.py) a float64
    # constant or an int32 counter mixed into the library's arithmetic fails.
    brainstate.random.seed(0)
    model = case.build_model()
    xs, ys = _sequences(case, model)
    assert xs.dtype != jnp.float64
    with _expect_warning(case):
        learner = dt.compile(model, dt.ES_D_RTRL, xs[0], batch_size=B)
    grads = learner.etrace_grad(xs[:3], ys[:3], step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
