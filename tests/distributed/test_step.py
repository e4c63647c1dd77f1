"""The sharded online step equals the single-device step, and keeps its layout.

Tolerances (float32), after T = 20 steps, chosen from the error analysis below and
the measurement on all 16 (net, algorithm, mesh) cases; never loosen them:

- parameters and per-step losses: ``rtol = atol = 1e-6``. The sharded step computes
  the same global function; the only difference is the order of float additions in
  the batch reductions that XLA splits into per-device partial sums plus an
  all-reduce over ``data`` (and in contractions split over ``model``). Measured max
  |difference|: 9e-8 on parameters of size ~0.1-1 (1 ulp at 1.0 is 1.2e-7) and
  2.4e-7 on losses of ~2 (1 ulp), so the bound has a >4x margin.
- learner state (hidden values, traces): ``|a - b| <= 1e-5 · max|b|`` per leaf. The
  traces sum 20 steps of ``g ⊗ x`` (values up to ~12) where ``g`` is the surrogate
  derivative, whose slope (up to 8) turns last-bit differences in V into ~1e-6
  relative ones each step. Measured max: 1.9e-6 · max|E| (LIF, D-RTRL), 5x margin.

A real error (a missing all-reduce, a flipped spike, a wrong shard) is >1e-3.
"""

import functools

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
import disttrace.distributed as dd
from tests.distributed import cases

MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
TOL = {"rtol": 1e-6, "atol": 1e-6}
STATE_TOL = 1e-5  # relative to each state leaf's max |value| (see the module docstring)


@functools.cache
def _learner(net, algo):
    return cases.build(net, algo)


@functools.cache
def _reference(net, algo):
    xs, ys = cases.data()
    return cases.reference(_learner(net, algo), xs, ys)


def _assert_close_to_scale(actual, desired):
    actual = np.asarray(actual)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=STATE_TOL * max(float(np.max(np.abs(desired))), 1e-30))


def _layout(tree):
    return jax.tree.map(lambda a: (a.sharding, jax.typeof(a)), tree)


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected, recorded
@pytest.mark.parametrize("mesh_shape", MESHES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("algo", sorted(cases.ALGOS))
@pytest.mark.parametrize("net", sorted(cases.NETS))
def test_sharded_equals_single_device(net, algo, mesh_shape):
    learner = _learner(net, algo)
    xs, ys = cases.data()
    mesh = dd.make_mesh(*mesh_shape)
    rules = dt.train.partition_rules(learner, cases.OPTIMIZER, mesh, (xs[0], ys[0]))
    state = dt.train.init_train_state(learner, cases.OPTIMIZER, rules)
    step = dt.train.make_train_step(learner, cases.OPTIMIZER, rules)
    layout = _layout(state)
    assert jax.tree.map(lambda a: a.sharding, state) == rules.state_shardings()
    losses = []
    for t in range(cases.T):
        state, loss = step(state, *dd.shard_batch(rules, xs[t], ys[t]))
        assert _layout(state) == layout, f"layout drifted at step {t}"
        losses.append(loss)
    assert int(state.step) == cases.T
    ref_params, ref_state, ref_losses = _reference(net, algo)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, **TOL), state.params, ref_params)
    jax.tree.map(_assert_close_to_scale, state.learner_state, ref_state)
    np.testing.assert_allclose(np.asarray(losses), ref_losses, **TOL)
    # the comparison is not vacuous: every parameter moved well beyond the tolerance
    init = learner.params()
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - np.asarray(b)))), ref_params, init)
    assert min(jax.tree.leaves(moved)) > 1e-3, moved


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")
def test_layout_is_the_rules_and_traces_are_split():
    """On a (2, 4) mesh each device holds 1/8 of the D-RTRL trace, and the output
    shardings of a step are the rules' (not merely equal to the inputs')."""
    learner = _learner("lif", "d_rtrl")
    xs, ys = cases.data()
    mesh = dd.make_mesh(2, 4)
    rules = dt.train.partition_rules(learner, cases.OPTIMIZER, mesh, (xs[0], ys[0]))
    step = dt.train.make_train_step(learner, cases.OPTIMIZER, rules, donate=False)
    state = dt.train.init_train_state(learner, cases.OPTIMIZER, rules)
    new, loss = step(state, *dd.shard_batch(rules, xs[0], ys[0]))
    assert jax.tree.map(lambda a: a.sharding, new) == rules.state_shardings()
    assert loss.sharding.is_fully_replicated
    trace = jax.tree.leaves(new.learner_state.traces)[0]  # the first layer's D-RTRL trace (B, K, I + N, N)
    assert trace.shape == (cases.B, 1, cases.N_IN + cases.N, cases.N)
    shard_shapes = {s.data.shape for s in trace.addressable_shards}
    assert shard_shapes == {(cases.B // 2, 1, cases.N_IN + cases.N, cases.N // 4)}
    assert len(trace.addressable_shards) == 8
    # donate=False kept the input state alive
    assert int(state.step) == 0


def test_bptt_learner_state_shards_too():
    """BPTTState (hidden, aux, t) gets the same rules; its one-step-horizon step matches one device."""
    brainstate.random.seed(0)
    learner = dt.compile(cases.NETS["lif"](), dt.BPTT, jnp.zeros((cases.B, cases.N_IN)), batch_size=cases.B,
                         loss_fn=cases.mse)
    xs, ys = cases.data()
    rules = dt.train.partition_rules(learner, cases.OPTIMIZER, dd.make_mesh(4, 2), (xs[0], ys[0]))
    assert rules.specs["learner_state/hidden/layers.0.V"] == jax.sharding.PartitionSpec("data", "model")
    state = dt.train.init_train_state(learner, cases.OPTIMIZER, rules)
    step = dt.train.make_train_step(learner, cases.OPTIMIZER, rules)
    for t in range(cases.T):
        state, _ = step(state, *dd.shard_batch(rules, xs[t], ys[t]))
    ref_params, _, _ = cases.reference(learner, xs, ys)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, **TOL), state.params, ref_params)
