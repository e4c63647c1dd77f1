"""RTRL equals BPTT on recurrent models where D-RTRL does not (float64), carries its
influence matrix across calls, and refuses a model whose matrix exceeds its budget
before allocating it."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.algorithms.models import APPROX, N_IN, N_OUT, N_REC, Stack

T, B = 20, 3

RECURRENT = {
    "rec_lif": APPROX["rec_lif"],
    "rec_alif": APPROX["rec_alif"],
    "gru": APPROX["gru"],
    "lstm": lambda: Stack(dt.nn.LSTMCell(N_IN, 5), dt.nn.LeakyRateReadout(5, N_OUT, tau=5.0)),
}


def _data(t=T):
    xs = jax.random.normal(jax.random.PRNGKey(2), (t, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (t, B, N_OUT))
    return xs, ys


def _assert_exact(got, ref):
    assert set(got) == set(ref)
    for path in ref:
        np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))


# D-RTRL is not exact on these (tests/algorithms/test_cosine.py: cosines 0.98-0.996). GRU and
# LSTM run in the slow pass: 9.8 and 11.7 s on the shared CI machine (2026-12-02), against
# 3.5 s (rec_lif) and 5.9 s (rec_alif).
@pytest.mark.parametrize("model", ["rec_lif", "rec_alif", pytest.param("gru", marks=pytest.mark.slow),
                                   pytest.param("lstm", marks=pytest.mark.slow)])
def test_rtrl_equals_bptt(x64, model):
    xs, ys = _data()
    ref = gradients(RECURRENT[model], dt.BPTT, xs, ys)
    got = gradients(RECURRENT[model], dt.RTRL, xs, ys)
    _assert_exact(got, ref)
    assert np.abs(flat(ref)).max() > 1e-2  # the comparison is not between zeros


@pytest.mark.slow
def test_rtrl_equals_bptt_two_recurrent_layers(x64):
    # cross-layer terms of J: layer 1's values feed layer 0's through no weight of layer 1
    make = lambda: dt.nn.SpikingNet(N_IN, 5, N_OUT, n_layers=2, neuron="alif", w_scale=3.0)
    xs, ys = _data()
    _assert_exact(gradients(make, dt.RTRL, xs, ys), gradients(make, dt.BPTT, xs, ys))


def _learner(spec=dt.RTRL, make=APPROX["rec_lif"], batch=B, **options):
    brainstate.random.seed(0)
    model = make()
    return dt.compile(model, spec, jnp.zeros((batch, N_IN)), batch_size=batch, **options)


def _mse(lrn):
    return lambda x, y: jnp.mean((lrn(x) - y) ** 2)


def test_split_and_eager_calls_carry_the_influence(x64):
    # the influence matrix carries over calls: g(first half) + g(second half) = 2·g(all);
    # learner(x) outside etrace_grad advances hidden states and M like a zero-loss step
    xs, ys = _data(10)
    whole = _learner()
    g_all = whole.etrace_grad(xs, ys, step_fn=_mse(whole))
    split = _learner()
    g1 = split.etrace_grad(xs[:5], ys[:5], step_fn=_mse(split))
    g2 = split.etrace_grad(xs[5:], ys[5:], step_fn=_mse(split))
    np.testing.assert_allclose((flat(g1) + flat(g2)) / 2, flat(g_all), rtol=0, atol=EXACT_F64_ATOL)
    assert np.abs(flat(g2) - flat(split.etrace_grad(xs[5:], ys[5:], step_fn=_mse(split)))).max() > 1e-3

    split.reset_state()  # new hidden states: M restarts from zero
    for t in range(5):
        split(xs[t])
    g2_eager = split.etrace_grad(xs[5:], ys[5:], step_fn=_mse(split))
    np.testing.assert_allclose(flat(g2_eager), flat(g2), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.slow
def test_functional_steps_equal_etrace_grad(x64):
    xs, ys = _data(10)
    whole = _learner()
    g_all = whole.etrace_grad(xs, ys, step_fn=_mse(whole))
    func = _learner("rtrl", loss_fn=lambda out, y: jnp.mean((out - y) ** 2), memory_budget=10**6)
    assert isinstance(func, dt.algorithms.RTRLLearner)
    state, params, total = func.init(), func.params(), 0.0
    step = jax.jit(func.step)
    for t in range(10):
        state, _, grads = step(state, params, xs[t], ys[t])
        total = total + flat(grads)
    np.testing.assert_allclose(total / 10, flat(g_all), rtol=0, atol=EXACT_F64_ATOL)


def test_memory_refusal_names_need_and_budget():
    # rec_lif: hidden V (6) + readout r (2) per row; weights (3+6)×6 and 6×2 reach them
    h, p = N_REC + N_OUT, (N_IN + N_REC) * N_REC + N_REC * N_OUT
    need = B * h * p * 4  # float32
    assert _learner().influence_bytes() == need
    with pytest.raises(ValueError, match=rf"needs .*\({need} bytes: batch {B} × {h} hidden values × {p} parameters.*memory_budget={need - 1} bytes"):
        _learner(dt.RTRL(memory_budget=need - 1))
    _learner(dt.RTRL(memory_budget=need))  # exactly the budget is allowed


def test_memory_refusal_before_allocating():
    # 64 × 1500 × (1503·1500 + ...) × 4 bytes ≈ 0.9 TB: refused at once, nothing allocated
    make = lambda: dt.nn.LIFLayer(N_IN, 1500, recurrent=True)
    with pytest.raises(ValueError, match=r"RTRL: the influence matrix needs [0-9.]+ GiB .*memory_budget=1073741824 bytes \(1\.00 GiB\)"):
        _learner(make=make, batch=64)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "1GiB"])
def test_bad_memory_budget(bad):
    with pytest.raises(ValueError, match="RTRL: argument 'memory_budget'"):
        dt.RTRL(memory_budget=bad)


def test_rules_refers_to_compile():
    with pytest.raises(ValueError, match="whole-model algorithm with its own learner"):
        dt.RTRL().rules(None)
