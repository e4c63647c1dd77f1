"""``etrace_grad`` hands the learner's privately held traces to its jitted call (donated:
the new traces are written in their place), and never traces that others may hold (a
brainstate ``State`` made by ``init_etrace_state``); either way the gradients are those
of a learner that does not donate."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import flat
from tests.algorithms.models import APPROX, N_IN, N_OUT

T, B = 6, 2


def _learner():
    brainstate.random.seed(0)
    learner = dt.compile(APPROX["rec_lif"](), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    step_fn = lambda x, y: jnp.mean((learner(x) - y) ** 2)
    return learner, step_fn


def _data(seed):
    keys = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(keys[0], (T, B, N_IN)), jax.random.normal(keys[1], (T, B, N_OUT))


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_private_traces_are_donated_and_gradients_unchanged(chunk_size):
    learner, step_fn = _learner()
    reference, ref_step = _learner()
    reference.init_etrace_state()  # traces in a State: never donated
    for seed in range(3):
        held = jax.tree.leaves(learner._traces[0]) if learner._traces is not None else []
        got = learner.etrace_grad(*_data(seed), step_fn=step_fn, chunk_size=chunk_size)
        want = reference.etrace_grad(*_data(seed), step_fn=ref_step, chunk_size=chunk_size)
        assert all(a.is_deleted() for a in held)
        np.testing.assert_array_equal(flat(got), flat(want))


def test_traces_in_a_state_are_not_donated():
    learner, step_fn = _learner()
    learner.init_etrace_state()
    learner.etrace_grad(*_data(0), step_fn=step_fn)
    held = jax.tree.leaves(learner._trace_state.value)
    learner.etrace_grad(*_data(1), step_fn=step_fn)
    assert not any(a.is_deleted() for a in held)
    assert all(np.isfinite(np.asarray(a)).all() for a in held)
