"""``output_bypasses_hidden``: detects outputs read from previous hidden values other than
through the new ones; skipping ES-D-RTRL's bypass pass when it is False changes nothing."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.compiler import output_bypasses_hidden
from tests.algorithms.models import APPROX, N_IN, N_OUT

B = 2


class PreResetOutput(brainstate.nn.Module):
    """Outputs the spike of the previous potential (read before the reset)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (N_IN, 4)))

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        s_prev = dt.nn.spike(self.V.value - 1.0)
        self.V.value = 0.9 * (self.V.value - s_prev) + dt.ops.matmul(x, self.w.value)
        return s_prev


def _graph(model):
    brainstate.nn.init_all_states(model, batch_size=B)
    return dt.compile_etrace_graph(model, jnp.zeros((B, N_IN)))


def test_detects_a_read_before_the_reset():
    assert output_bypasses_hidden(_graph(PreResetOutput()))


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected
def test_outputs_from_new_hidden_values_do_not_bypass():
    for name in ("rec_lif", "rec_alif", "gru"):
        brainstate.random.seed(0)
        assert not output_bypasses_hidden(_graph(APPROX[name]())), name


def test_skipping_the_bypass_pass_is_exact(x64):
    xs = jax.random.normal(jax.random.PRNGKey(2), (15, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (15, B, N_OUT))
    grads = []
    for force in (False, True):
        brainstate.random.seed(0)
        learner = dt.compile(APPROX["rec_alif"](), dt.ES_D_RTRL, xs[0], batch_size=B)
        assert learner._bypass is False
        learner._bypass = force  # the full computation, for comparison
        grads.append(learner.etrace_grad(xs, ys, step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2)))  # noqa: B023
    for path in grads[0]:
        np.testing.assert_allclose(
            np.ravel(jax.tree.leaves(grads[0][path])[0]), np.ravel(jax.tree.leaves(grads[1][path])[0]), rtol=0, atol=1e-12
        )


def test_read_before_reset_model_is_exact_under_d_rtrl_and_runs_es(x64):
    from disttrace.testing import flat, gradients

    xs = jax.random.normal(jax.random.PRNGKey(2), (20, B, N_IN)) * 2.0
    ys = jax.random.normal(jax.random.PRNGKey(3), (20, B, 4))
    ref = gradients(PreResetOutput, dt.BPTT, xs, ys)
    np.testing.assert_allclose(flat(gradients(PreResetOutput, dt.D_RTRL, xs, ys)), flat(ref), rtol=0, atol=1e-6)
    assert np.abs(flat(ref)).max() > 1e-3
    es = flat(gradients(PreResetOutput, dt.ES_D_RTRL, xs, ys))
    assert np.isfinite(es).all() and np.abs(es).max() > 0
