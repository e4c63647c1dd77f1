"""Randomness inside a model works online (issue 13).

``brainstate.random`` draws and ``Dropout`` inside a model's step draw fresh values at
every step of ``etrace_grad`` and of the functional ``learner.step``: the learner threads
brainstate's key through the step as part of its state (``state.aux`` under
``disttrace.compiler.RNG_PATH``). The draws are reproducible from
``brainstate.random.seed``, continue unchanged across a checkpoint save/restore, and
``brainstate.random`` is never left holding a tracer.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.checkpoint import Checkpointer
from disttrace.compiler import RNG_PATH, ModuleBinding
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

T, B, N_IN, N = 8, 2, 3, 8
# weights 2**i make the probe's sum identify the whole dropout mask (values 0 or 2)
_CODE = 2.0 ** jnp.arange(B * N, dtype=jnp.float32).reshape(B, N)


class Noisy(brainstate.nn.Module):
    """LIF -> dropout -> readout; also returns the dropout mask of a ones array (``probe``)
    and a ``brainstate.random.rand`` draw."""

    def __init__(self):
        super().__init__()
        self.lif = dt.nn.LIFLayer(N_IN, N, w_scale=3.0)
        self.drop = brainstate.nn.Dropout(0.5)
        self.out = dt.nn.LeakyRateReadout(N, 2, tau=0)

    def update(self, x):
        z = self.lif(x)
        probe = self.drop(jnp.ones((B, N), z.dtype))
        return {"y": self.out(self.drop(z)), "probe": probe, "u": brainstate.random.rand(B, N)}


mse = lambda out, y: jnp.mean((out["y"] - y) ** 2)


def _learner(algorithm=dt.D_RTRL, seed=0, make=Noisy):
    brainstate.random.seed(seed)
    with brainstate.environ.context(fit=True):  # dropout is active in fitting mode
        return dt.compile(make(), algorithm, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)


def _data(t=T):
    xs = jax.random.normal(jax.random.PRNGKey(1), (t, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(2), (t, B, 2))
    return xs, ys


def _etrace_draws(learner, xs, ys, what):
    """Per-step losses that identify this step's draw (``probe``: the mask, ``u``: the rand draw)."""
    def once(x, y):
        out = learner(x)
        return jnp.sum(out[what] * (_CODE if what == "probe" else 1.0)) + 0.0 * mse(out, y)

    return np.asarray(learner.etrace_grad(xs, ys, step_fn=once, return_value=True)[1])


def _functional_draws(learner, xs, ys, state=None):
    state = learner.init() if state is None else state
    step = jax.jit(learner.step)
    params = learner.params()
    probes, us = [], []
    for x, y in zip(xs, ys):
        state, out, _ = step(state, params, x, y)
        probes.append(np.asarray(out["probe"]))
        us.append(np.asarray(out["u"]))
    return np.stack(probes), np.stack(us), state


def _assert_no_tracer_left():
    assert not isinstance(brainstate.random.DEFAULT.value, jax.core.Tracer)
    brainstate.random.rand(3).block_until_ready()  # raised UnexpectedTracerError before
    dt.nn.LIFLayer(N_IN, N)  # building a layer draws its weights from the global key


@pytest.mark.parametrize("algorithm", [dt.D_RTRL, dt.ES_D_RTRL, dt.BPTT])
def test_etrace_grad_draws_fresh_values_every_step(algorithm):
    xs, ys = _data()
    masks = _etrace_draws(_learner(algorithm), xs, ys, "probe")
    assert len(set(masks.tolist())) == T  # a different dropout mask at every step
    draws = _etrace_draws(_learner(algorithm), xs, ys, "u")
    assert len(set(draws.tolist())) == T
    _assert_no_tracer_left()


def test_functional_step_draws_fresh_values_every_step():
    learner = _learner()
    probes, us, state = _functional_draws(learner, *_data())
    assert set(np.unique(probes).tolist()) == {0.0, 2.0}
    assert len({p.tobytes() for p in probes}) == T
    assert len({u.tobytes() for u in us}) == T
    assert RNG_PATH in state.aux and state.aux[RNG_PATH].dtype == jnp.uint32
    _assert_no_tracer_left()


def test_draws_are_reproducible_from_the_seed():
    xs, ys = _data()
    a = _functional_draws(_learner(seed=3), xs, ys)
    b = _functional_draws(_learner(seed=3), xs, ys)
    c = _functional_draws(_learner(seed=4), xs, ys)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    e1 = _etrace_draws(_learner(seed=3), xs, ys, "probe")
    e2 = _etrace_draws(_learner(seed=3), xs, ys, "probe")
    np.testing.assert_array_equal(e1, e2)


def test_stateful_learner_advances_the_global_key():
    learner = _learner(seed=5)
    key = lambda: np.asarray(jax.random.key_data(brainstate.random.DEFAULT.value))
    before = key()
    xs, ys = _data()
    first = _etrace_draws(learner, xs, ys, "u")
    after = key()
    assert not np.array_equal(before, after)
    second = _etrace_draws(learner, xs, ys, "u")  # continues the stream, does not repeat it
    assert not set(first.tolist()) & set(second.tolist())
    np.testing.assert_array_equal(np.asarray(learner.init().aux[RNG_PATH]), key())


def test_draws_continue_unchanged_across_a_checkpoint(tmp_path):
    xs, ys = _data(2 * T)
    learner = _learner(seed=7)
    whole, whole_u, _ = _functional_draws(learner, xs, ys)

    learner = _learner(seed=7)
    first, _, state = _functional_draws(learner, xs[:T], ys[:T])
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(T, state)
        ckpt.wait()
    brainstate.random.seed(99)  # a fresh learner state holds another key ...
    fresh = _learner(seed=99).init()
    assert not np.array_equal(fresh.aux[RNG_PATH], state.aux[RNG_PATH])
    with Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
        restored, _ = ckpt.restore(fresh)  # ... and the checkpoint's key wins
    np.testing.assert_array_equal(restored.aux[RNG_PATH], state.aux[RNG_PATH])
    rest, rest_u, _ = _functional_draws(learner, xs[T:], ys[T:], restored)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)
    np.testing.assert_array_equal(rest_u, whole_u[T:])


def test_brainstate_random_works_after_compile_and_every_entry_point():
    learner = _learner()
    _assert_no_tracer_left()
    xs, ys = _data()
    learner.etrace_grad(xs, ys, step_fn=lambda x, y: mse(learner(x), y))
    _assert_no_tracer_left()
    learner(xs[0])
    _assert_no_tracer_left()
    learner.predict(xs)
    _assert_no_tracer_left()
    jax.jit(learner.step)(learner.init(), learner.params(), xs[0], ys[0])
    _assert_no_tracer_left()
    binding = learner.binding
    with brainstate.environ.context(fit=True):
        out = jax.jit(binding.pure())(*binding.values(), xs[0])[0]
    _assert_no_tracer_left()
    assert out["u"].shape == (B, N)


def test_a_binding_that_does_not_thread_the_key_refuses_to_draw():
    brainstate.random.seed(0)
    model = Noisy()
    brainstate.nn.init_all_states(model, batch_size=B)
    x = jnp.zeros((B, N_IN))
    binding = ModuleBinding.of(model)
    with brainstate.environ.context(fit=True):
        with pytest.raises(dt.CompilationError) as info:
            jax.jit(binding.pure())(*binding.values(), x)
        assert info.value.kind == "unbound_randomness"
        _assert_no_tracer_left()
        threaded = ModuleBinding.of(model, rng=True)
        _, _, aux = jax.jit(threaded.pure())(*threaded.values(), x)
    assert not np.array_equal(aux[RNG_PATH], threaded.values()[2][RNG_PATH])  # the key was split
    _assert_no_tracer_left()


def test_a_model_without_randomness_carries_no_key():
    learner = dt.compile(dt.nn.LIFLayer(N_IN, N), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert RNG_PATH not in learner.init().aux
    assert RNG_PATH not in learner.graph.aux_paths


class DropNet(brainstate.nn.Module):
    """A model where D-RTRL is exact (LIF without recurrence, memoryless readout) with
    dropout on its input and on its hidden output."""

    def __init__(self):
        super().__init__()
        self.lif = dt.nn.LIFLayer(N_IN, N, w_scale=3.0)
        self.drop = brainstate.nn.Dropout(0.7)
        self.out = dt.nn.LeakyRateReadout(N, 2, tau=0)

    def update(self, x):
        return self.out(self.drop(self.lif(self.drop(x))))


def test_d_rtrl_equals_bptt_with_dropout(x64):
    xs, ys = _data(12)
    xs, ys = xs.astype(jnp.float64), ys.astype(jnp.float64)
    keys = {}
    grads = {}
    for algo in (dt.BPTT, dt.D_RTRL):
        with brainstate.environ.context(fit=True):
            grads[algo] = gradients(DropNet, algo, xs, ys, seed=11)
        keys[algo] = np.asarray(jax.random.key_data(brainstate.random.DEFAULT.value))
    np.testing.assert_allclose(flat(grads[dt.D_RTRL]), flat(grads[dt.BPTT]), rtol=0, atol=EXACT_F64_ATOL)
    np.testing.assert_array_equal(keys[dt.D_RTRL], keys[dt.BPTT])  # both consumed the same key sequence
    with brainstate.environ.context(fit=False):  # without dropout the gradient differs: masks were applied
        plain = gradients(DropNet, dt.BPTT, xs, ys, seed=11)
    assert np.max(np.abs(flat(plain) - flat(grads[dt.BPTT]))) > 1e-3
