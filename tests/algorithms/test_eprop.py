"""e-prop: equals D-RTRL (and BPTT) where the hidden Jacobian is block-diagonal and the
readout memoryless; its kappa filter makes a leaky readout's memory exact where the
hidden output is linear; random feedback is a fixed function of its key (float64)."""

import jax
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT, N_REC, Stack

T, B = 20, 3


def _data():
    return jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN)), jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))


@pytest.mark.parametrize("model", ["lif_soft", "lif_hard", "alif", "leaky_rate"])
def test_symmetric_unfiltered_eprop_equals_d_rtrl_and_bptt_where_exact(x64, model):
    xs, ys = _data()
    got = gradients(EXACT[model], dt.EProp(), xs, ys)
    for ref in (gradients(EXACT[model], dt.D_RTRL, xs, ys), gradients(EXACT[model], dt.BPTT, xs, ys)):
        np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_eprop_drops_the_one_step_recurrent_credit_d_rtrl_keeps(x64):
    # on a recurrent layer e-prop's signal is ∂L_t/∂h_t only; D-RTRL's δ^prev_t · E_{t-1}
    # also carries ∂L_t/∂h_{t-1} through the recurrent weights: they differ
    xs, ys = _data()
    e = gradients(APPROX["rec_lif"], dt.EProp(), xs, ys)
    d = gradients(APPROX["rec_lif"], dt.D_RTRL, xs, ys)
    assert np.abs(flat(e) - flat(d)).max() > 1e-4


def test_kappa_filter_is_exact_for_a_leaky_readout_with_linear_hidden_output(x64):
    # LeakyRate outputs h itself (ψ = 1): Σ_t δ_t Ē_t with κ = the readout's decay is
    # the exact gradient of its input weight; without the filter (or with D-RTRL) it is not
    make = lambda: Stack(dt.nn.LeakyRate(N_IN, N_REC), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=5.0))
    kappa = make().layers[1].kappa
    xs, ys = _data()
    path = ("layers", 0, "weight")
    ref = gradients(make, dt.BPTT, xs, ys)[path]
    got = gradients(make, dt.EProp(kappa_filter_decay=kappa), xs, ys)[path]
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    for spec in (dt.EProp(), dt.D_RTRL):
        assert np.abs(flat(gradients(make, spec, xs, ys)[path]) - flat(ref)).max() > 1e-3


def test_random_feedback_is_fixed_by_its_key(x64):
    xs, ys = _data()
    make = APPROX["rec_lif"]
    a = gradients(make, dt.EProp("random", random_feedback_key=0), xs, ys)
    again = gradients(make, dt.EProp("random", random_feedback_key=jax.random.PRNGKey(0)), xs, ys)
    other = gradients(make, dt.EProp("random", random_feedback_key=1), xs, ys)
    sym = gradients(make, dt.EProp(), xs, ys)
    np.testing.assert_array_equal(flat(a), flat(again))
    assert np.all(np.isfinite(flat(a)))
    assert np.abs(flat(a) - flat(other)).max() > 1e-6 and np.abs(flat(a) - flat(sym)).max() > 1e-6


def test_registry_names_and_argument_errors():
    assert dt.algorithms.registered().count("eprop") == 1 and "e_prop" in dt.algorithms.registered()
    with pytest.raises(ValueError, match="random_feedback_key"):
        dt.EProp("random")
    with pytest.raises(ValueError, match="random_feedback_key"):
        dt.EProp(random_feedback_key=0)
    with pytest.raises(ValueError, match="feedback"):
        dt.EProp("sideways")
    with pytest.raises(ValueError, match="kappa_filter_decay"):
        dt.EProp(kappa_filter_decay=1.0)
