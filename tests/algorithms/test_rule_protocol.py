"""A new learning rule costs one module: a toy rule defined only in this file (no
package edits) compiles through ``dt.compile``, gives gradients through
``etrace_grad`` (step by step and chunked), the functional ``step`` and a training
loop, and is exact where theory says it must be."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, gradients
from tests.algorithms.models import APPROX, EXACT, N_IN, N_OUT

B, T = 2, 10


class LeakyEPropTrace(NamedTuple):
    """x: (B, I) low-passed input; e: group key -> (B, K, N) low-passed ∂h/∂y."""

    x: jax.Array
    e: dict

    sharding_roles = {"x": "x_trace", "e": "trace"}


class LeakyEPropRule:
    """An e-prop-style rule: ε^x_t = κ ε^x_{t-1} + x_t, ε^y_t = D_t ε^y_{t-1} + ∂h_t/∂y_t,
    g_t = Σ_b ε^x_t ⊗ Σ_k δ^new_t ε^y_t (an "io" rule; κ = 0 is exact for models whose
    inputs have no memory — here it is only checked to learn)."""

    name = "leaky_eprop"
    dimension = "io"
    chunked = False
    chunk_direct = False
    chunk_reads_weights = False

    def __init__(self, op, graph, kappa):
        self.op, self.kappa = op, kappa
        self.groups = [graph.groups[g] for g in op.groups]
        self.keys = [graph.trace_key(op, g) for g in op.groups]

    def init(self):
        x = jax.eval_shape(self.op.rule.es_input, self.op.operands)
        e = {k: jnp.zeros((g.shape[0], g.k, *g.neuron_shape), g.dtype) for k, g in zip(self.keys, self.groups)}
        return LeakyEPropTrace(jnp.zeros(x.shape, x.dtype), e)

    def zero_grad(self):
        rule, grp = self.op.rule, self.groups[0]
        probe = lambda ops: rule.es_grad(rule.es_input(ops), jnp.zeros((grp.shape[0], *grp.neuron_shape), grp.dtype), ops)
        return tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(probe, self.op.operands))

    def update(self, state, f):
        x = self.kappa * state.x + self.op.rule.es_input(f.operands)
        e, signal = dict(state.e), 0.0
        for i, key in enumerate(self.keys):
            e[key] = dt.ops.apply_block(f.jac[i], state.e[key]) + f.g[i]
            signal = signal + jnp.sum(f.delta_new[i] * e[key], axis=1)
        return self.op.rule.es_grad(x, signal, f.operands), LeakyEPropTrace(x, e)


class LeakyEProp:
    """The algorithm spec: the toy rule on every op that has an input, D-RTRL elsewhere."""

    def __init__(self, kappa=0.0):
        self.kappa = kappa

    def rules(self, graph):
        out = []
        for op in graph.ops:
            if not op.groups:
                out.append(None)
            elif op.rule.input_argnum is None:
                out.append(dt.algorithms.DRTRLRule(op, graph))
            else:
                out.append(LeakyEPropRule(op, graph, self.kappa))
        return tuple(out)


def _data(dtype=jnp.float32):
    xs = jax.random.normal(jax.random.PRNGKey(0), (T, B, N_IN), dtype)
    ys = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_OUT), dtype)
    return xs, ys


def mse(out, y):
    return jnp.mean((out - y) ** 2)


def test_toy_rule_compiles_and_gives_gradients_for_every_param():
    learner = dt.compile(APPROX["rec_lif"](), LeakyEProp(0.5), jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    assert [r.name if r else None for r in learner.rules].count("leaky_eprop") >= 1
    assert isinstance(learner.rules[0], dt.algorithms.LearningRule)
    xs, ys = _data()
    step_fn = lambda x, y: mse(learner(x), y)
    grads = learner.etrace_grad(xs, ys, step_fn=step_fn)
    assert set(grads) == set(learner.param_states)
    for path, g in grads.items():
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, path
    # chunk_size is accepted: a rule without a chunked form runs step by step inside chunks
    learner.reset_state()
    again = learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size=4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, again)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("model", ["leaky_rate", "lif_soft"])
def test_toy_rule_equals_bptt_over_one_step(model):
    """With κ = 0 the toy rule's factorised trace ε^y_1 ⊗ ε^x_1 = g_1 ⊗ x_1 is the exact
    D-RTRL trace after one step, so over a one-step sequence it must equal BPTT."""
    xs, ys = _data(jnp.float64)
    xs, ys = xs[:1], ys[:1]
    got = gradients(EXACT[model], LeakyEProp(0.0), xs, ys)
    ref = gradients(EXACT[model], dt.BPTT, xs, ys)
    assert set(got) == set(ref)
    for path in got:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=EXACT_F64_ATOL, rtol=0), got[path], ref[path])


def test_toy_rule_trains_through_the_functional_step():
    learner = dt.compile(APPROX["rec_lif"](), LeakyEProp(0.5), jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    xs, ys = _data()
    opt = optax.sgd(0.05)
    params, state = learner.params(), learner.init()
    opt_state = opt.init(params)

    @jax.jit
    def train(params, opt_state, state, x, y):
        state, out, grads = learner.step(state, params, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, state, mse(out, y)

    losses = []
    for _ in range(30):
        state = learner.init()
        total = 0.0
        for t in range(T):
            params, opt_state, state, loss = train(params, opt_state, state, xs[t], ys[t])
            total += float(loss)
        losses.append(total / T)
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_spec_with_the_wrong_number_of_rules_is_refused():
    class Broken:
        def rules(self, graph):
            return ()

    with pytest.raises(ValueError, match="one entry per trace op"):
        dt.compile(APPROX["rec_lif"](), Broken(), jnp.zeros((B, N_IN)), batch_size=B)
