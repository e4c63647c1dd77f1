"""OSTL: the recurrent regime is D-RTRL with the true per-neuron Jacobian blocks (SnAp-1
on one recurrent layer with a memoryless readout, D-RTRL where the Jacobian is
block-diagonal); the feedforward regime is ES-D-RTRL with braintrace's default decay
(float64)."""

import jax
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT, N_REC, Stack

T, B = 20, 3


def _data():
    return jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN)), jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))


def _exact(a, b):
    np.testing.assert_allclose(flat(a), flat(b), rtol=0, atol=EXACT_F64_ATOL)


def test_ostl_recurrent_equals_snap_1_on_one_recurrent_layer(x64):
    make = lambda: Stack(dt.nn.LIFLayer(N_IN, N_REC, recurrent=True, w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0))
    xs, ys = _data()
    got = gradients(make, dt.OSTLRecurrent, xs, ys)
    _exact(got, gradients(make, dt.SnAp(1), xs, ys))
    # the self-recurrent term D-RTRL's cut blocks leave out matters here
    assert np.abs(flat(got) - flat(gradients(make, dt.D_RTRL, xs, ys))).max() > 1e-6


@pytest.mark.parametrize("model", ["lif_soft", "alif"])
def test_ostl_recurrent_is_d_rtrl_where_the_jacobian_is_block_diagonal(x64, model):
    xs, ys = _data()
    _exact(gradients(EXACT[model], dt.OSTLRecurrent, xs, ys), gradients(EXACT[model], dt.D_RTRL, xs, ys))


def test_ostl_recurrent_chunked_equals_step_by_step(x64):
    xs, ys = _data()
    make = APPROX["rec_alif"]
    _exact(gradients(make, dt.OSTLRecurrent, xs, ys, chunk_size=6), gradients(make, dt.OSTLRecurrent, xs, ys))


def test_ostl_feedforward_is_es_d_rtrl_with_braintraces_default(x64):
    xs, ys = _data()
    make = APPROX["rec_lif"]
    assert dt.OSTLFeedforward().f_decay == 1e-6 and dt.OSTLFeedforward(0.0).x_decay == 0.0
    np.testing.assert_array_equal(
        flat(gradients(make, dt.OSTLFeedforward, xs, ys)), flat(gradients(make, dt.ES_D_RTRL(decay_or_rank=1e-6), xs, ys))
    )
    np.testing.assert_array_equal(
        flat(gradients(make, dt.OSTLFeedforward(1), xs, ys)), flat(gradients(make, dt.ES_D_RTRL(0.0), xs, ys))
    )


def test_registry_names():
    from disttrace.algorithms._registry import resolve

    assert isinstance(resolve("ostl_recurrent", {}), dt.OSTLRecurrent)
    assert resolve("OSTL-feedforward", {"decay_or_rank": 0.5}).f_decay == 0.5
    with pytest.raises(ValueError, match="decay"):
        dt.OSTLFeedforward(1.5)
