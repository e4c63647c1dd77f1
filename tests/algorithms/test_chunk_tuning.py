"""``chunk_size="auto"`` and ``learner.tune_chunk_size``: the fastest chunk size, measured once on
the call's own inputs, without changing the learner's state; the gradient is that of the
chosen size (and so the step-by-step one, to rounding)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.algorithms import ChunkChoice, chunk_candidates
from disttrace.testing import EXACT_F64_ATOL, flat
from tests.algorithms.models import APPROX, N_IN, N_OUT

T, B = 40, 2


def _setup(algo=dt.D_RTRL):
    brainstate.random.seed(0)
    learner = dt.compile(APPROX["rec_lif"](), algo, jnp.zeros((B, N_IN)), batch_size=B)
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))
    return learner, xs, ys, lambda x, y: jnp.mean((learner(x) - y) ** 2)


def test_candidates():
    assert chunk_candidates(10) == (10,)
    assert chunk_candidates(40) == (32, 40)
    assert chunk_candidates(200) == (32, 64, 128, 200)
    assert chunk_candidates(256) == (32, 64, 128, 256)
    assert chunk_candidates(100_000) == (32, 64, 128, 256)


def test_auto_is_the_measured_choice_and_leaves_the_state_alone(x64):
    learner, xs, ys, step_fn = _setup()
    before = learner.binding.values()
    choice = learner.tune_chunk_size(xs, ys, step_fn=step_fn, candidates=(4, 8, 40))
    assert isinstance(choice, ChunkChoice) and choice.chunk_size in (4, 8, 40)
    assert set(choice.seconds) == {4, 8, 40} and all(s > 0 for s in choice.seconds.values())
    # nothing stored: the model's states and the learner's traces are where they were
    np.testing.assert_array_equal(flat(learner.binding.values()), flat(before))
    assert learner._traces is None

    # a later call with "auto" and the default candidates measures those (once) and runs the choice
    auto = learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="auto")
    (key, default_choice), = [(k, c) for k, c in learner._chunk_choices.items() if k[2] == chunk_candidates(T)]
    assert set(default_choice.seconds) == {32, 40}
    learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="auto")  # reuses the choice: no new entry
    assert learner._chunk_choices[key] is default_choice and len(learner._chunk_choices) == 2

    fresh, _, _, fresh_step = _setup()
    explicit = fresh.etrace_grad(xs, ys, step_fn=fresh_step, chunk_size=default_choice.chunk_size)
    np.testing.assert_array_equal(flat(auto), flat(explicit))
    plain, _, _, plain_step = _setup()
    stepwise = plain.etrace_grad(xs, ys, step_fn=plain_step)
    np.testing.assert_allclose(flat(auto), flat(stepwise), rtol=0, atol=EXACT_F64_ATOL)


def test_a_learner_without_a_chunked_form_times_nothing():
    learner, xs, ys, step_fn = _setup(dt.BPTT)
    assert learner.tune_chunk_size(xs, ys, step_fn=step_fn) == ChunkChoice(None, {})
    learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="auto")


def test_auto_inside_jit_says_what_to_do():
    learner, xs, ys, step_fn = _setup()

    @jax.jit
    def run(xs, ys):
        return learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="auto")

    with pytest.raises(ValueError, match="chunk_size='auto'.*tune_chunk_size"):
        run(xs, ys)


def test_bad_values_name_the_argument():
    learner, xs, ys, step_fn = _setup()
    with pytest.raises(ValueError, match="'chunk_size'.*'auto'.*'fast'"):
        learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="fast")
    with pytest.raises((TypeError, ValueError), match="candidates"):
        learner.tune_chunk_size(xs, ys, step_fn=step_fn, candidates=(0, 8))
    with pytest.raises(ValueError, match="candidates"):
        learner.tune_chunk_size(xs, ys, step_fn=step_fn, candidates=())


def test_a_multi_process_job_is_refused(monkeypatch):
    # each process would time its own calls; they must all run one program
    learner, xs, ys, step_fn = _setup()
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="2 processes.*tune_chunk_size"):
        learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size="auto")


def test_tuning_leaves_the_jit_cache_to_the_functions_that_run(recwarn):
    learner, xs, ys, step_fn = _setup()
    xs, ys = jnp.concatenate([xs, xs[:8]]), jnp.concatenate([ys, ys[:8]])
    for t in (40, 48):  # two shapes, two candidates each (32 and T)
        learner.etrace_grad(xs[:t], ys[:t], step_fn=step_fn, chunk_size="auto")
    assert len(learner._chunk_choices) == 2
    assert len(learner._jitted) == 2  # only the two chosen programs
    assert not [w for w in recwarn if "compiled for" in str(w.message)]


def test_a_long_sequence_is_timed_on_a_prefix(monkeypatch):
    from disttrace.algorithms import _chunk_tuning

    learner, xs, ys, step_fn = _setup()
    seen = []
    real = _chunk_tuning.fastest_chunk

    def spy(candidates, compile_call, repeats=2):
        def traced(u):
            run = compile_call(u)

            def call():
                out = run()
                seen.append(jax.tree.leaves(out)[-1].shape[0])  # the per-step losses: (probe length,)
                return out

            return call

        return real(candidates, traced, repeats)

    monkeypatch.setattr("disttrace.algorithms._learner.PROBE_STEPS", 16)
    monkeypatch.setattr("disttrace.algorithms._learner.fastest_chunk", spy)
    choice = learner.tune_chunk_size(xs, ys, step_fn=step_fn, candidates=(4, 8))
    assert choice.chunk_size in (4, 8) and seen and set(seen) == {16}
