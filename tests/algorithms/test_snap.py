"""SnAp-n: the n-step sparsity pattern, SnAp-1 against D-RTRL, SnAp-n for n >= the
coupling depth against RTRL/BPTT, and the cosine to BPTT as n grows (float64)."""

import math

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, cosine, flat, gradients
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT, Stack

T, B = 20, 2
N_CHAIN, CHAIN_IN = 8, 2


class ChainLIF(brainstate.nn.Module):
    """Soft-reset LIF neurons on a chain: neuron k hears only neurons k-1 and k+1 (a fixed
    band mask on the recurrent weight, no self-coupling), so the influence of a weight
    into neuron k spreads one neuron per step: coupling depth N."""

    def __init__(self, n_in, n, tau=10.0, w_scale=3.0):
        super().__init__()
        self.n, self.alpha = n, math.exp(-1.0 / tau)
        self.w_in = brainstate.ParamState(brainstate.random.normal(0.0, w_scale / math.sqrt(n_in), (n_in, n)))
        self.w_rec = brainstate.ParamState(brainstate.random.normal(0.0, w_scale / math.sqrt(2), (n, n)))
        i = np.arange(n)
        self.band = (np.abs(i[:, None] - i[None, :]) == 1).astype(np.float64)

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, self.n)))

    def update(self, x):
        v = self.V.value
        s = dt.nn.spike(v - 1.0)
        w_rec = self.w_rec.value * jnp.asarray(self.band, v.dtype)
        v = self.alpha * (v - s) + dt.ops.matmul(x, self.w_in.value) + dt.ops.matmul(s, w_rec)
        self.V.value = v
        return dt.nn.spike(v - 1.0)


def chain():
    return Stack(ChainLIF(CHAIN_IN, N_CHAIN), dt.nn.LeakyRateReadout(N_CHAIN, N_OUT, tau=0))


def _data(n_in=N_IN):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, n_in))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))
    return xs, ys


def _learner(make, spec, n_in=N_IN, **options):
    brainstate.random.seed(0)
    return dt.compile(make(), spec, jnp.zeros((B, n_in)), batch_size=B, **options)


def _max_diff(a, b) -> float:
    return float(np.abs(flat(a) - flat(b)).max())


def test_snap1_equals_d_rtrl_without_self_coupling(x64):
    # On the chain J's diagonal holds only the leak and reset (no weight couples a neuron to
    # itself), so SnAp-1, which keeps dV_k/dW only for the weights into neuron k, is D-RTRL.
    # Both are far from BPTT here (cosine 0.622), so this is not a comparison of two exact values.
    xs, ys = _data(CHAIN_IN)
    ref = gradients(chain, dt.D_RTRL, xs, ys)
    got = gradients(chain, dt.SnAp(1), xs, ys)
    assert set(got) == set(ref)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    assert np.abs(flat(ref)).max() > 1e-2


def test_snap_at_coupling_depth_equals_bptt(x64):
    # rec_lif (all-to-all recurrence + leaky readout): everything is reachable in 2 steps
    learner = _learner(APPROX["rec_lif"], "snap", n=5)
    assert isinstance(learner, dt.algorithms.SnApLearner)
    assert learner.depth == 2
    # W (9, 6) reaches V_k and every readout value r at once, and every V after a step;
    # the readout weight (6, 2) reaches only its own r_o
    h, p_w, p_out = 6 + N_OUT, 9 * 6, 6 * N_OUT
    assert learner.kept == pytest.approx((h * p_w + p_out) / (h * (p_w + p_out)))
    xs, ys = _data()
    step_fn = lambda x, y: jnp.mean((learner(x) - y) ** 2)
    got = learner.etrace_grad(xs, ys, step_fn=step_fn)
    ref = gradients(APPROX["rec_lif"], dt.BPTT, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.slow
def test_snap1_where_it_is_not_d_rtrl(x64):
    """Measured (T=20, B=2, float64): SnAp-1 and D-RTRL differ

    - on ``rec_lif``: SnAp-1 keeps the self-recurrent term ``W[k, k]`` of ``J``'s diagonal,
      which D-RTRL's Jacobian blocks (op inputs cut) leave out; max |Δ| 2.4 (gradients up to
      15); SnAp-1's cosine to BPTT 0.9992, D-RTRL's 0.98;
    - on a non-recurrent ``alif``: the adaptation ``a_t`` reads the previous spike, so a
      weight reaches ``a`` only one step later: SnAp-1 keeps ``dV/dW`` only, D-RTRL the whole
      2×2 block (exact here); SnAp-2 (= the coupling depth) equals D-RTRL and BPTT.
    """
    xs, ys = _data()
    for name in ("rec_lif", "alif"):
        make = {**APPROX, **EXACT}[name]
        assert _max_diff(gradients(make, dt.SnAp(1), xs, ys), gradients(make, dt.D_RTRL, xs, ys)) > 1e-3, name
    ref = gradients(EXACT["alif"], dt.BPTT, xs, ys)
    for spec in (dt.D_RTRL, dt.SnAp(2)):
        np.testing.assert_allclose(flat(gradients(EXACT["alif"], spec, xs, ys)), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.slow
def test_cosine_to_bptt_grows_with_n(x64):
    """SnAp-n on the chain (2 inputs, N=8, coupling depth 8; T=20, B=2, float64, seeds 0/2/3).

    Measured 2026-12-02 (jax 0.10.2 CPU):

    ===  ==================  =======  ======
    n    cosine to BPTT      max |Δ|  kept
    ===  ==================  =======  ======
    1    0.6224058057651692  2.7e-01  0.0469
    2    0.9990338656489123  1.5e-02  0.1313
    3    0.9999969748225698  8.4e-04  0.2031
    4    0.9999999999603219  3.8e-06  0.2625
    5    0.9999999999999986  2.5e-08  0.3094
    6    0.9999999999999999  1.0e-10  0.3438
    7    0.9999999999999998  6.4e-14  0.3656
    8    1.0000000000000002  1.4e-16  0.3750
    9    1.0000000000000002  1.4e-16  0.3750
    ===  ==================  =======  ======

    (max |Δ| over gradients up to 0.25; kept: :attr:`SnApLearner.kept`, the fraction of
    M's entries the pattern keeps, 0.375 being every entry that can be nonzero; n = 1 is
    D-RTRL's cosine, see above.) The cosine never decreases by more than rounding (from
    n = 5 on it is 1 to within 2e-15), the distance to BPTT decreases at every n until it
    is rounding, and n >= 8 is RTRL.
    """
    xs, ys = _data(CHAIN_IN)
    ref = gradients(chain, dt.BPTT, xs, ys)
    cos, err = [], []
    for n in range(1, N_CHAIN + 2):
        learner = _learner(chain, dt.SnAp(n), CHAIN_IN)
        # a weight into neuron k reaches the neurons within n - 1 links of k; of the
        # recurrent weights only the band's (j = k ± 1) reach anything
        near = [sum(1 for m in range(N_CHAIN) if abs(m - k) < n) for k in range(N_CHAIN)]
        band = [sum(1 for j in range(N_CHAIN) if abs(j - k) == 1) for k in range(N_CHAIN)]
        kept = CHAIN_IN * sum(near) + sum(b * r for b, r in zip(band, near))
        assert learner.kept == pytest.approx(kept / (N_CHAIN * (CHAIN_IN + N_CHAIN) * N_CHAIN)), n
        assert learner.depth == (N_CHAIN if n >= N_CHAIN else None), n
        got = learner.etrace_grad(xs, ys, step_fn=lambda x, y, lrn=learner: jnp.mean((lrn(x) - y) ** 2))
        cos.append(cosine(got, ref))
        err.append(_max_diff(got, ref))
    for n in range(1, len(cos)):
        assert cos[n] >= cos[n - 1] - EXACT_F64_ATOL, (n + 1, cos)
        assert err[n] < err[n - 1] or err[n] <= EXACT_F64_ATOL, (n + 1, err)
    assert cos[0] < 0.7 and cos[1] > 0.99  # the table's first rows: the test measures something
    assert err[N_CHAIN - 1] <= EXACT_F64_ATOL and err[N_CHAIN] <= EXACT_F64_ATOL


@pytest.mark.parametrize("bad", [0, -2, True, 1.0])
def test_bad_n(bad):
    with pytest.raises(ValueError, match="SnAp: argument 'n'"):
        dt.SnAp(n=bad)
