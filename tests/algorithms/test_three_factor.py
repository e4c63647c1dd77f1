"""ThreeFactor: D-RTRL's eligibility traces times a modulator that replaces the learning
signal; with the modulator equal to the learning signal it is exact where D-RTRL is
(float64)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat
from tests.algorithms.models import N_IN, N_OUT, N_REC, Stack

T, B = 15, 3


def _grads(spec, weights=None, make=lambda: dt.nn.LeakyRate(N_IN, N_REC)):
    """Gradient of Σ_t Σ_b w_b Σ_n h_t[b, n]: ``∂L_t/∂h_t = w_b`` (LeakyRate outputs h)."""
    brainstate.random.seed(0)
    learner = dt.compile(make(), spec, jnp.zeros((B, N_IN)), batch_size=B)
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    w = jnp.ones((B,)) if weights is None else weights
    out = lambda x: learner(x)
    return learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(w[:, None] * out(x)))


def test_modulator_equal_to_the_learning_signal_is_bptt(x64):
    ref = flat(_grads(dt.BPTT))
    for modulator in (1.0, jnp.ones((B,)), lambda t, loss, out: 1.0):
        np.testing.assert_allclose(flat(_grads(dt.ThreeFactor(modulator))), ref, rtol=0, atol=EXACT_F64_ATOL)


def test_a_per_row_modulator_weights_the_rows(x64):
    w = jnp.asarray([0.5, -1.0, 2.0])
    np.testing.assert_allclose(
        flat(_grads(dt.ThreeFactor(w))), flat(_grads(dt.BPTT, weights=w)), rtol=0, atol=EXACT_F64_ATOL
    )


def test_the_modulator_replaces_the_signal_and_the_readout_keeps_its_loss_gradient(x64):
    make = lambda: Stack(dt.nn.LeakyRate(N_IN, N_REC), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0))
    # the readout (no hidden state) keeps the loss's exact same-step gradient, whatever the modulator
    a = _grads(dt.ThreeFactor(lambda t, loss, out: 2.0 * jnp.tanh(loss)), make=make)
    b = _grads(dt.D_RTRL, make=make)
    path = ("layers", 1, "weight")
    np.testing.assert_allclose(flat(a[path]), flat(b[path]), rtol=0, atol=EXACT_F64_ATOL)
    assert np.abs(flat(a[("layers", 0, "weight")]) - flat(b[("layers", 0, "weight")])).max() > 1e-3
    # linear in the modulator
    half = _grads(dt.ThreeFactor(lambda t, loss, out: jnp.tanh(loss)), make=make)
    np.testing.assert_allclose(
        2 * flat(half[("layers", 0, "weight")]), flat(a[("layers", 0, "weight")]), rtol=0, atol=EXACT_F64_ATOL
    )


def test_modulator_errors():
    with pytest.raises(ValueError, match="modulator"):
        dt.ThreeFactor()
    with pytest.raises(ValueError, match="modulator"):
        dt.ThreeFactor(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"\(B,\) = \(3,\)"):
        _grads(dt.ThreeFactor(jnp.ones((B + 1,))))
    assert "three_factor" in dt.algorithms.registered()
