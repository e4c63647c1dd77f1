"""The shared layer suite: every case from ``tests/nn/cases_*.py`` runs through it.

For each layer: unbatched input equals a batch of one; a wrong input shape raises a
ValueError naming ``'x'``; D-RTRL equals BPTT where the case is exact (float64, atol
1e-6) and ES-D-RTRL / inexact D-RTRL meet the case's recorded cosine floors; every
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
from disttrace.testing import cosine, flat, gradients


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


@pytest.mark.parametrize("algo", sorted(ALGOS))
@pytest.mark.parametrize("case", CASES, ids=IDS)
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
            np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=1e-6, err_msg=str(path))
        return
    assert algo in case.floors, f"{case.name}: no recorded cosine floor for {algo}; measured {cosine(got, ref):.4f}"
    assert cosine(got, ref) >= case.floors[algo]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_functional_step_under_jit_and_vmap(case):
    brainstate.random.seed(0)
    model = case.build_model()
    xs, ys = _sequences(case, model)
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    with _expect_warning(case):
        learner = dt.compile(model, dt.D_RTRL, xs[0], batch_size=B, loss_fn=mse)
    state, params = learner.init(), learner.params()
    state, out, grads = jax.jit(learner.step)(state, params, xs[0], ys[0])
    assert out.shape == ys.shape[1:] and bool(jnp.isfinite(out).all())
    copies = 2
    vstate = jax.tree.map(lambda a: jnp.stack([a] * copies), state)
    vx, vy = jnp.stack([xs[1]] * copies), jnp.stack([ys[1]] * copies)
    _, vout, _ = jax.vmap(learner.step, in_axes=(0, None, 0, 0))(vstate, params, vx, vy)
    assert vout.shape == (copies, *ys.shape[1:])
    _, out1, _ = jax.jit(learner.step)(state, params, xs[1], ys[1])
    np.testing.assert_allclose(vout[0], out1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_online_step_under_strict_dtype_promotion(case):
    # STYLE §9 asks for strict promotion; optax's Adam does not run under it (int32 step
    # count times float), so it is checked here on the library's own code paths.
    with jax.numpy_dtype_promotion("strict"):
        brainstate.random.seed(0)
        model = case.build_model()
        xs, ys = _sequences(case, model)
        with _expect_warning(case):
            learner = dt.compile(model, dt.ES_D_RTRL, xs[0], batch_size=B)
        grads = learner.etrace_grad(xs[:3], ys[:3], step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
