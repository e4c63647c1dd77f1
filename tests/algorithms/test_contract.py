"""One contract suite for every algorithm: keys, shapes, dtypes, determinism, jit,
vmap, no parameter silently dropped, and a jitted step that compiles once."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from tests.algorithms.models import APPROX, N_IN, N_OUT

ALGOS = {"bptt": dt.BPTT, "d_rtrl": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL, "hybrid": dt.Hybrid, "rtrl": dt.RTRL, "snap": dt.SnAp, "eprop": dt.EProp, "eprop_random_kappa": dt.EProp("random", 0.5, random_feedback_key=0), "ostl_recurrent": dt.OSTLRecurrent, "ostl_feedforward": dt.OSTLFeedforward, "uoro": dt.UORO, "three_factor": dt.ThreeFactor(modulator=lambda t, loss, out: loss)}  # noqa: E501
B, T = 2, 12


def _learner(algo, model="rec_alif"):
    brainstate.random.seed(0)
    net = APPROX[model]()
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    return dt.compile(net, ALGOS[algo], jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)


def _data():
    return jax.random.normal(jax.random.PRNGKey(0), (T, B, N_IN)), jax.random.normal(jax.random.PRNGKey(1), (T, B, N_OUT))


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_grads_match_param_states(algo):
    learner = _learner(algo)
    xs, ys = _data()
    grads, losses = learner.etrace_grad(xs, ys, step_fn=lambda x, y: learner.loss_fn(learner(x), y), return_value=True)
    assert set(grads) == set(learner.param_states)
    for path, st in learner.param_states.items():
        for g, v in zip(jax.tree.leaves(grads[path]), jax.tree.leaves(st.value), strict=True):
            assert g.shape == v.shape and g.dtype == v.dtype, path
    assert losses.shape == (T,)
    # every parameter learns (none silently dropped)
    for path, g in grads.items():
        assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(g)) > 0, path


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_deterministic(algo):
    xs, ys = _data()
    outs = []
    for _ in range(2):
        learner = _learner(algo)
        outs.append(learner.etrace_grad(xs, ys, step_fn=lambda x, y, lr=learner: lr.loss_fn(lr(x), y)))
    jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_functional_step_jit_and_vmap(algo):
    learner = _learner(algo)
    xs, ys = _data()
    state, params = learner.init(), learner.params()
    step = jax.jit(learner.step)
    state, out, grads = step(state, params, xs[0], ys[0])
    assert out.shape == (B, N_OUT)
    assert set(grads) == set(learner.param_states)
    # vmap over independent copies of (state, inputs): no parameter drops out
    copies = 3
    vstate = jax.tree.map(lambda a: jnp.stack([a] * copies), learner.init())
    vx = jnp.stack([xs[1]] * copies)
    vy = jnp.stack([ys[1]] * copies)
    _, vout, vgrads = jax.vmap(learner.step, in_axes=(0, None, 0, 0))(vstate, params, vx, vy)
    assert vout.shape == (copies, B, N_OUT)
    for path in learner.param_states:
        assert all(leaf.shape[0] == copies for leaf in jax.tree.leaves(vgrads[path]))


@pytest.mark.parametrize("algo", ["d_rtrl", "es_d_rtrl"])
def test_online_step_learns_every_param(algo):
    learner = _learner(algo)
    xs, ys = _data()
    state, params = learner.init(), learner.params()
    step = jax.jit(learner.step)
    total = None
    for t in range(T):
        state, _, grads = step(state, params, xs[t], ys[t])
        total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    for path, g in total.items():
        assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(g)) > 0, path


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_jitted_step_compiles_once(algo):
    learner = _learner(algo)
    xs, ys = _data()
    traces = []

    def step(state, params, x, y):
        traces.append(1)
        return learner.step(state, params, x, y)

    step = jax.jit(step)
    state, params = learner.init(), learner.params()
    state, _, _ = step(state, params, xs[0], ys[0])
    state, _, _ = step(state, params, xs[1], ys[1])
    assert len(traces) == 1


def test_etrace_grad_wrong_input_shape():
    learner = _learner("d_rtrl")
    xs, ys = _data()
    with pytest.raises(ValueError, match="argument 'x'"):
        learner.etrace_grad(xs[:, :, :2], ys, step_fn=lambda x, y: learner.loss_fn(learner(x), y))
    with pytest.raises(ValueError, match="chunk_size"):
        learner.etrace_grad(xs, ys, step_fn=lambda x, y: learner.loss_fn(learner(x), y), chunk_size=0)


def test_compile_rejects_bad_arguments():
    brainstate.random.seed(0)
    with pytest.raises(ValueError, match="batch_size"):
        dt.compile(APPROX["rec_lif"](), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=True)
    with pytest.raises(ValueError, match="algorithm"):
        dt.compile(APPROX["rec_lif"](), "sgd", jnp.zeros((B, N_IN)), batch_size=B)
    with pytest.raises(ValueError, match="decay"):
        dt.compile(APPROX["rec_lif"](), dt.ES_D_RTRL, jnp.zeros((B, N_IN)), batch_size=B, decay=1.5)
    assert dt.ES_D_RTRL(decay_or_rank=19).f_decay == pytest.approx(0.9)


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_etrace_grad_memory_reports_the_compiled_sequence(algo):
    learner = _learner(algo)
    xs, ys = _data()
    step_fn = lambda x, y: learner.loss_fn(learner(x), y)
    mem = learner.etrace_grad_memory(xs, ys, step_fn=step_fn)
    assert set(mem) == {"temp", "output", "argument"} and mem["output"] > 0
    # the same function etrace_grad then runs: no second compile is cached
    n_cached = len(learner._jitted)
    learner.etrace_grad(xs, ys, step_fn=step_fn)
    assert len(learner._jitted) == n_cached


@pytest.mark.parametrize("algo", ["bptt", "d_rtrl"])
def test_etrace_grad_compiled_is_the_program_etrace_grad_runs(algo):
    learner = _learner(algo)
    xs, ys = _data()
    step_fn = lambda x, y: learner.loss_fn(learner(x), y)
    compiled = learner.etrace_grad_compiled(xs, ys, step_fn=step_fn)
    assert isinstance(compiled, jax.stages.Compiled) and "ENTRY" in compiled.as_text()
    ma = compiled.memory_analysis()
    assert learner.etrace_grad_memory(xs, ys, step_fn=step_fn)["temp"] == ma.temp_size_in_bytes
    n_cached = len(learner._jitted)
    learner.etrace_grad(xs, ys, step_fn=step_fn)
    assert len(learner._jitted) == n_cached


@pytest.mark.parametrize("how", ["learner.reset_state", "init_all_states"])
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_reset_starts_the_next_trial_afresh(algo, how):
    # init_all_states gives the module new State objects: the learner must follow them,
    # or a "reset" trial would start from the last trial's hidden states
    learner = _learner(algo)
    xs, ys = _data()
    step_fn = lambda x, y: learner.loss_fn(learner(x), y)
    first = learner.etrace_grad(xs, ys, step_fn=step_fn)
    assert any(float(jnp.abs(v).max()) > 0 for v in learner.binding.values()[1].values())
    if how == "init_all_states":
        brainstate.nn.init_all_states(learner.model, batch_size=B)
    else:
        learner.reset_state()
    # reading the binding changes nothing; sync() (which every entry point calls) follows the new States
    assert all(float(jnp.abs(v).max()) == 0 for v in learner.sync().values()[1].values())
    again = learner.etrace_grad(xs, ys, step_fn=step_fn)
    jax.tree.map(np.testing.assert_array_equal, again, first)


def test_a_model_whose_states_changed_must_be_compiled_again():
    learner = _learner("d_rtrl")
    learner.model.extra = brainstate.HiddenState(jnp.zeros((B, 3)))
    with pytest.raises(ValueError, match=r"hidden states changed since it was compiled \(added: \['extra'\]"):
        learner.params()
