"""States that are neither parameters nor hidden states (*aux*): a read-only weight is a
constant (no trace, no gradient), a written counter is carried across steps and
reported as a diagnostic; neither disturbs the online gradient of the real weight."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import disttrace as dt
from disttrace.compiler import DiagnosticKind
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

T, B = 12, 2


class WithAux(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (3, 4)))
        self.frozen = brainstate.State(jax.random.normal(jax.random.PRNGKey(1), (3, 4)))  # read, never written
        self.count = brainstate.ShortTermState(jnp.zeros((), jnp.int32))  # written every step

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        self.count.value = self.count.value + 1
        drive = dt.ops.matmul(x, self.frozen.value) + dt.ops.matmul(x, self.w.value)
        self.h.value = 0.8 * self.h.value + jnp.tanh(drive)
        return self.h.value


def test_only_the_written_aux_state_is_reported():
    graph = dt.compile_etrace_graph(_init(WithAux()), jnp.zeros((B, 3)))
    written = [r.path for r in graph.records if r.kind is DiagnosticKind.AUX_STATE_WRITTEN]
    assert written == ["count"]
    assert set(graph.param_paths) == {("w",)}


def test_frozen_weight_gets_no_gradient_and_real_weight_stays_exact(x64):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, 3))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 4))
    ref = gradients(WithAux, dt.BPTT, xs, ys)
    got = gradients(WithAux, dt.D_RTRL, xs, ys)
    assert set(got) == set(ref) == {("w",)}
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_written_aux_state_is_carried_across_steps():
    model = WithAux()
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(model, dt.D_RTRL, jnp.zeros((B, 3)), batch_size=B, loss_fn=mse)
    xs, ys = jnp.ones((T, B, 3)), jnp.zeros((T, B, 4))
    learner.etrace_grad(xs, ys, step_fn=lambda x, y: mse(learner(x), y))
    assert int(model.count.value) == T
    state = learner.init()
    step = jax.jit(lambda s, x, y: learner.step(s, learner.params(), x, y)[0])
    for t in range(3):
        state = step(state, xs[t], ys[t])
    assert int(state.aux[("count",)]) == T + 3


def _init(model):
    brainstate.nn.init_all_states(model, batch_size=B)
    return model
