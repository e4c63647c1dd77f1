"""braintrace 0.2.8's object forms of the newer rules (SnAp, EProp, OSTL*, UORO,
ThreeFactor), ``compile(seed=, verbose=)``, its algorithm names and ``__version_info__``
(issue #15): each object's gradient is that of the learner ``disttrace.compile`` returns
for the same spec (float64, to ``EXACT_F64_ATOL``)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.algorithms import _eprop, _ostl, _snap, _three_factor, _uoro
from disttrace.algorithms._registry import resolve
from disttrace.testing import EXACT_F64_ATOL, flat
from tests.algorithms.models import EXACT, N_IN, N_OUT, N_REC, Stack

T, B = 6, 2


def _data():
    return jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN)), jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))


def _make():
    # a recurrent cell (the rules differ from D-RTRL there) and a leaky readout, both with a
    # reset_state (brainstate.nn.reset_all_states below)
    return Stack(dt.nn.ValinaRNNCell(N_IN, N_REC, activation="tanh"), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=5.0))


def _model():
    brainstate.random.seed(0)
    return _make()


def _mse(learner):
    return lambda x, y: jnp.mean((learner(x) - y) ** 2)


# (object from a model, the spec disttrace.compile takes, the learner class both build)
CASES = {
    "snap_default_n": (lambda m: dt.SnAp(m), _snap.SnAp(2), dt.algorithms.SnApLearner),
    "snap_n1": (lambda m: dt.SnAp(m, n=1, memory_budget=10**6), _snap.SnAp(1, 10**6), dt.algorithms.SnApLearner),
    "eprop_kappa": (lambda m: dt.EProp(m, kappa_filter_decay=0.5), _eprop.EProp(kappa_filter_decay=0.5),
                    dt.algorithms.OnlineLearner),
    "eprop_random": (lambda m: dt.EProp(m, "random", 0.0, jax.random.PRNGKey(5)),
                     _eprop.EProp("random", random_feedback_key=5), dt.algorithms.OnlineLearner),
    "ostl_recurrent": (lambda m: dt.OSTLRecurrent(m), _ostl.OSTLRecurrent(), dt.algorithms.OSTLRecurrentLearner),
    "ostl_feedforward": (lambda m: dt.OSTLFeedforward(m), _ostl.OSTLFeedforward(1e-6), dt.algorithms.OnlineLearner),
    "ostl_feedforward_rank": (lambda m: dt.OSTLFeedforward(m, 3), _ostl.OSTLFeedforward(3), dt.algorithms.OnlineLearner),
    "uoro": (lambda m: dt.UORO(m, projection_key=7), _uoro.UORO(7), dt.algorithms.UOROLearner),
    "random_projection": (lambda m: dt.RandomProjectionVjpAlgorithm(m), _uoro.UORO(42), dt.algorithms.UOROLearner),
}
_REWARD = lambda t, loss, out: 1.0 - loss  # noqa: E731 - one function object shared by both sides
CASES["three_factor"] = (lambda m: dt.ThreeFactor(m, modulator=_REWARD), _three_factor.ThreeFactor(_REWARD),
                         dt.algorithms.ThreeFactorLearner)


@pytest.mark.parametrize("case", sorted(CASES))
def test_object_gradient_equals_compiled_learner(x64, case):
    make, spec, learner_cls = CASES[case]
    xs, ys = _data()
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = make(model)
    assert isinstance(algo, dt.ETraceVjpAlgorithm) and isinstance(algo, brainstate.nn.Module)
    algo.compile_graph(xs[0])
    assert type(algo.learner) is learner_cls and type(algo._spec()) is type(spec)
    ref = dt.compile(_model(), spec, xs[0], batch_size=B)
    got, want = algo.etrace_grad(xs, ys, step_fn=_mse(algo)), ref.etrace_grad(xs, ys, step_fn=_mse(ref))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    np.testing.assert_allclose(flat(got), flat(want), rtol=0, atol=EXACT_F64_ATOL)
    assert np.abs(flat(want)).max() > 1e-3, "gradient ~0: the comparison would be vacuous"
    # the traces are reset with the model, as for D_RTRL(model)
    brainstate.nn.reset_all_states(algo, batch_size=B)
    ref.reset_state(batch_size=B)
    again = algo.etrace_grad(xs, ys, step_fn=_mse(algo))
    np.testing.assert_allclose(flat(again), flat(ref.etrace_grad(xs, ys, step_fn=_mse(ref))), rtol=0, atol=EXACT_F64_ATOL)


def test_no_model_spelling_is_the_spec():
    assert type(dt.SnAp(n=3)) is _snap.SnAp and dt.SnAp(3).n == 3 and type(dt.SnAp()) is _snap.SnAp
    assert type(dt.EProp("symmetric", 0.5)) is _eprop.EProp
    assert type(dt.OSTLRecurrent()) is _ostl.OSTLRecurrent
    assert type(dt.OSTLFeedforward(decay=0.5)) is _ostl.OSTLFeedforward and dt.OSTLFeedforward().f_decay == 1e-6
    assert type(dt.UORO(projection_key=1)) is _uoro.UORO and dt.RandomProjectionVjpAlgorithm is dt.UORO
    assert type(dt.ThreeFactor(1.0)) is _three_factor.ThreeFactor
    for name in ("SnAp", "EProp", "OSTLRecurrent", "OSTLFeedforward", "UORO", "ThreeFactor"):
        assert getattr(dt.algorithms, name) is getattr(dt, name)
    # isinstance accepts the spec and the object; the feedforward OSTL is an ES-D-RTRL, as in braintrace
    assert isinstance(dt.SnAp(n=1), dt.SnAp) and not isinstance(dt.UORO(), dt.SnAp)
    assert isinstance(dt.OSTLFeedforward(), dt.ES_D_RTRL) and not isinstance(dt.ES_D_RTRL(0.5), dt.OSTLFeedforward)
    net = EXACT["leaky_rate"]()
    assert isinstance(dt.OSTLFeedforward(net), dt.ES_D_RTRL | dt.IODimVjpAlgorithm)
    # the class and its name compile through the registry as before
    learner = dt.compile(net, dt.SnAp, jnp.zeros((B, N_IN)), batch_size=B, n=1)
    assert type(learner) is dt.algorithms.SnApLearner and learner.spec == _snap.SnAp(1)
    three = dt.compile(EXACT["leaky_rate"](), dt.ThreeFactor, jnp.zeros((B, N_IN)), batch_size=B, modulator=1.0)
    assert type(three) is dt.algorithms.ThreeFactorLearner


def test_braintrace_attributes():
    net = _make()
    assert dt.SnAp(net, n=3).n == 3
    eprop = dt.EProp(net, kappa_filter_decay=0.25)
    assert (eprop.feedback, eprop.kappa_filter_decay) == ("symmetric", 0.25)
    uoro = dt.UORO(net, projection_key=3, projection_eps=1e-9)
    assert uoro.vjp_method == "multi-step" and uoro.projection_eps == 1e-9
    assert uoro.projection_key == _uoro.UORO(3).projection_key
    assert dt.OSTLFeedforward(net).decay == 1e-6 and dt.OSTLFeedforward(net, 0.5).decay == 0.5
    assert dt.ThreeFactor(net).modulator is None and dt.ThreeFactor(net, modulator=2.0).modulator == 2.0


def test_refusals_say_why():
    net = _make()
    with pytest.raises(dt.NotSupportedError, match="config"):
        dt.SnAp(net, config=object())
    with pytest.raises(dt.NotSupportedError, match="trace_dtype"):
        dt.OSTLRecurrent(net, trace_dtype=jnp.float16)
    with pytest.raises(dt.NotSupportedError, match="random_feedback_key"):
        dt.UORO(net, random_feedback_key=1)
    with pytest.raises(ValueError, match="'n'"):
        dt.SnAp(net, n=0)
    with pytest.raises(ValueError, match="random_feedback_key"):
        dt.EProp(net, feedback="random")
    with pytest.raises(ValueError, match="projection_eps"):
        dt.UORO(net, projection_eps=-1.0)
    with pytest.raises(ValueError, match="vjp_method"):
        dt.ThreeFactor(net, modulator=1.0, vjp_method="multi-step")
    # UORO is multi-step (braintrace's window mode) by default: chunk_size is refused, one step per step_fn works
    brainstate.nn.init_all_states(net, batch_size=B)
    xs, ys = _data()
    uoro = dt.UORO(net)
    uoro.compile_graph(xs[0])
    with pytest.raises(dt.NotSupportedError, match="window mode"):
        uoro.etrace_grad(xs, ys, step_fn=_mse(uoro), chunk_size=2)


def test_three_factor_modulator_is_fixed_at_compile():
    net = EXACT["leaky_rate"]()
    brainstate.nn.init_all_states(net, batch_size=B)
    algo = dt.ThreeFactor(net)
    with pytest.raises(ValueError, match="no modulator"):
        algo.compile_graph(jnp.zeros((B, N_IN)))
    with pytest.raises(ValueError, match="modulator"):
        algo.modulator = jnp.ones((2, 2))
    algo.modulator = jnp.ones((B,))  # before compiling: as braintrace's standing modulator
    algo.compile_graph(jnp.zeros((B, N_IN)))
    assert type(algo.learner) is dt.algorithms.ThreeFactorLearner
    with pytest.raises(dt.NotSupportedError, match="fixed when the graph is compiled"):
        algo.modulator = 2.0
    with pytest.raises(dt.NotSupportedError, match="per-call modulator"):
        algo.update(jnp.zeros((B, N_IN)), modulator=0.5)
    assert algo.update(jnp.zeros((B, N_IN))).shape == (B, N_OUT)


# ---- compile(seed=, verbose=) --------------------------------------------------------------------
def _random_init_net():
    brainstate.random.seed(0)
    return dt.nn.ValinaRNNCell(N_IN, 4, state_init=brainstate.nn.init.Normal())


def _global_key():
    return np.asarray(jax.random.key_data(brainstate.random.get_key()))


def test_compile_seed_seeds_the_state_initialisation():
    x0 = jnp.zeros((B, N_IN))
    h = {}
    for seed in (3, 3, 4):
        net = _random_init_net()
        key = _global_key()
        dt.compile(net, dt.D_RTRL, x0, batch_size=B, seed=seed)
        np.testing.assert_array_equal(_global_key(), key)  # the global key is restored
        h.setdefault(seed, []).append(np.asarray(net.h.value))
    np.testing.assert_array_equal(h[3][0], h[3][1])
    assert np.abs(h[3][0] - h[4][0]).max() > 1e-3
    with pytest.raises(ValueError, match="init_states=False"):
        dt.compile(_random_init_net(), dt.D_RTRL, x0, batch_size=B, seed=3, init_states=False)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="'seed'"):
            dt.compile(_random_init_net(), dt.D_RTRL, x0, batch_size=B, seed=bad)


def test_compile_verbose_prints_the_graph_summary(capsys):
    make = EXACT["lif_soft"]  # its memoryless readout gets a diagnostic
    x0 = jnp.zeros((B, N_IN))
    dt.compile(make(), dt.D_RTRL, x0, batch_size=B)
    assert capsys.readouterr().out == ""
    learner = dt.compile(make(), dt.D_RTRL, x0, batch_size=B, verbose=1)
    out = capsys.readouterr().out
    assert learner.graph.records, "no diagnostics: level 2 would print the same as level 1"
    assert out.startswith("disttrace.compile: OnlineLearner (D_RTRL)\nETraceGraph(batch_size=2)")
    assert "trace ops" in out and "diagnostics:" not in out
    learner = dt.compile(make(), "esd_rtrl", x0, batch_size=B, verbose=2, decay=0.5)
    out = capsys.readouterr().out
    assert out == f"disttrace.compile: OnlineLearner (ES_D_RTRL)\n{learner.graph}\n" and "diagnostics:" in out
    with pytest.raises(ValueError, match="'verbose'"):
        dt.compile(make(), dt.D_RTRL, x0, batch_size=B, verbose=3)


# ---- names -----------------------------------------------------------------------------------------
def test_braintrace_algorithm_names():
    assert resolve("esd_rtrl", {"decay": 0.5}) == dt.ES_D_RTRL(decay=0.5) and "esd_rtrl" in dt.algorithms.registered()
    assert type(resolve(" D_RTRL ", {})) is type(dt.D_RTRL())
    learner = dt.compile(EXACT["leaky_rate"](), "ESD_RTRL", jnp.zeros((B, N_IN)), batch_size=B, decay_or_rank=3)
    assert learner.spec == dt.ES_D_RTRL(0.5)
    with pytest.raises(dt.NotSupportedError, match="DNI"):
        resolve("dni", {})
    with pytest.raises(ValueError, match="unknown algorithm"):
        resolve("snapp", {})


def test_version_info():
    assert isinstance(dt.__version_info__, tuple) and len(dt.__version_info__) == 3
    assert all(type(v) is int for v in dt.__version_info__)
    assert ".".join(map(str, dt.__version_info__)) == dt.__version__
