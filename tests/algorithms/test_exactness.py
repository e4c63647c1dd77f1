"""D-RTRL equals BPTT where theory says it is exact (float64, T=50, batch 3), for the
step-by-step and every chunked form."""

import jax
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT, Stack

T, B = 50, 3


def _data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))
    return xs, ys


@pytest.mark.parametrize("model", sorted(EXACT))
# chunk 1 and 50 (= T) run in the slow pass only: None (step by step) and 7 (full chunks
# and a tail) keep both code paths in the default suite (1.1-1.8 CPU s each, 2026-12-02).
@pytest.mark.parametrize("chunk", [None, pytest.param(1, marks=pytest.mark.slow), 7, pytest.param(50, marks=pytest.mark.slow)])
def test_d_rtrl_equals_bptt(x64, model, chunk):
    xs, ys = _data()
    ref = gradients(EXACT[model], dt.BPTT, xs, ys)
    got = gradients(EXACT[model], dt.D_RTRL, xs, ys, chunk_size=chunk)
    assert set(got) == set(ref)
    for path in ref:
        np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))
    assert np.abs(flat(ref)).max() > 1e-3  # the comparison is not between zeros


FIRST_STEP = {
    "lif_soft": EXACT["lif_soft"],
    "alif": EXACT["alif"],
    "rec_alif_leaky_readout": APPROX["rec_alif"],  # stacked: the readout's new value reads layer 0's
    "lstm": lambda: Stack(dt.nn.LSTMCell(N_IN, 5), dt.nn.LeakyRateReadout(5, N_OUT, tau=0)),  # h_t reads c_t
    "urlstm": lambda: Stack(dt.nn.URLSTMCell(N_IN, 5), dt.nn.LeakyRateReadout(5, N_OUT, tau=0)),
}


@pytest.mark.parametrize("model", sorted(FIRST_STEP))
def test_first_step_es_equals_d_rtrl(x64, model):
    # With one step the bias-corrected ES traces equal the exact ones, so ES-D-RTRL must
    # equal D-RTRL; this fails if the learning signal counts a path twice (hidden values
    # written from other new hidden values in the same step).
    xs, ys = _data()
    xs, ys = xs[:1], ys[:1]
    ref = gradients(FIRST_STEP[model], dt.D_RTRL, xs, ys)
    got = gradients(FIRST_STEP[model], dt.ES_D_RTRL, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
