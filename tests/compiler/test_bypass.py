"""Bypass paths of the learning signal: the compiler finds them structurally
(``bypass_groups``, ``bypass_ops``) and ES-D-RTRL then handles them exactly: at the first
steps, where its traces are exact, it must equal D-RTRL."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.compiler import bypass_groups, bypass_ops
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.algorithms.models import APPROX, N_IN, N_OUT

B = 2


class PreResetOutput(brainstate.nn.Module):
    """Outputs the spike of the previous potential (read before the reset)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (N_IN, 4)) * 2.0)

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        s_prev = dt.nn.spike(self.V.value - 1.0, "sigmoid", 1.0)
        self.V.value = 0.9 * (self.V.value - s_prev) + dt.ops.matmul(x, self.w.value)
        return s_prev


class ResetInStep(brainstate.nn.Module):
    """Integrates, fires and resets within the step; outputs the spike (skips V_t)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (N_IN, 4)) * 2.0)

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        v = 0.9 * self.V.value + dt.ops.matmul(x, self.w.value)
        s = dt.nn.spike(v - 1.0, "sigmoid", 1.0)
        self.V.value = v - s
        return s


def _stacked():  # the pre-reset spikes drive a leaky readout: the bypass passes a later layer's new value
    return brainstate.nn.Sequential(PreResetOutput(), dt.nn.LeakyRateReadout(4, N_OUT, tau=5.0))


def _graph(model):
    brainstate.nn.init_all_states(model, batch_size=B)
    return dt.compile_etrace_graph(model, jnp.zeros((B, N_IN)))


def test_finds_the_bypass_paths():
    assert bypass_groups(_graph(PreResetOutput())) == {0}
    assert bypass_groups(_graph(_stacked())) == {0}  # through the readout's new value
    assert bypass_ops(_graph(ResetInStep())) == {0}
    assert bypass_ops(_graph(PreResetOutput())) == frozenset()


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected
def test_outputs_from_new_hidden_values_have_no_bypass():
    for name in ("rec_lif", "rec_alif", "gru"):
        brainstate.random.seed(0)
        graph = _graph(APPROX[name]())
        assert bypass_groups(graph) == frozenset() and bypass_ops(graph) == frozenset(), name


# (model, steps, the weights whose ES traces are still exact after that many steps: a
# leaky readout's decay differs from ES's input-trace decay after the first step)
CASES = {
    "pre_reset_output": (PreResetOutput, 2, None),
    "pre_reset_through_readout": (_stacked, 2, [("layers", 0, "w")]),
    "reset_in_step": (ResetInStep, 1, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_es_equals_d_rtrl_while_its_traces_are_exact(x64, case):
    make, steps, paths = CASES[case]
    xs = jax.random.normal(jax.random.PRNGKey(2), (steps, B, N_IN)) * 2.0
    out = make()
    brainstate.nn.init_all_states(out, batch_size=B)
    ys = jax.random.normal(jax.random.PRNGKey(3), (steps, *out(xs[0]).shape))
    ref = gradients(make, dt.D_RTRL, xs, ys)
    got = gradients(make, dt.ES_D_RTRL, xs, ys)
    paths = sorted(ref) if paths is None else paths
    for path in paths:
        assert np.abs(flat(ref[path])).max() > 1e-3, path
        np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))


def test_pre_reset_model_is_exact_under_d_rtrl(x64):
    xs = jax.random.normal(jax.random.PRNGKey(2), (20, B, N_IN)) * 2.0
    ys = jax.random.normal(jax.random.PRNGKey(3), (20, B, 4))
    ref = gradients(PreResetOutput, dt.BPTT, xs, ys)
    np.testing.assert_allclose(flat(gradients(PreResetOutput, dt.D_RTRL, xs, ys)), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    assert np.abs(flat(ref)).max() > 1e-3


@pytest.mark.parametrize("case", sorted(CASES))
def test_es_chunked_equals_step_by_step_on_bypass_paths(x64, case):
    # the bypass terms (previous traces, same-step output signal) are deferred per chunk too
    make = CASES[case][0]
    xs = jax.random.normal(jax.random.PRNGKey(2), (11, B, N_IN)) * 2.0
    out = make()
    brainstate.nn.init_all_states(out, batch_size=B)
    ys = jax.random.normal(jax.random.PRNGKey(3), (11, *out(xs[0]).shape))
    ref = gradients(make, dt.ES_D_RTRL, xs, ys)
    got = gradients(make, dt.ES_D_RTRL, xs, ys, chunk_size=4)
    assert np.abs(flat(ref)).max() > 1e-3
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
