"""Trace keys are names, not positions: adding an unrelated layer anywhere (a layer whose
name sorts first and runs first, a second readout, a layer appended after the output)
renumbers ops, groups and parameters but leaves every other trace's key unchanged; tied
weights (one ParamState used by two ops in one step) get distinct keys."""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import disttrace as dt
from tests.algorithms import models as am
from tests.algorithms.test_op_exactness import OPS, Leaky

B, N_IN, N, N_OUT = 2, 3, 5, 2


class Net(brainstate.nn.Module):
    """Input LIF layer -> recurrent LIF layer -> leaky readout, with optional unrelated extras."""

    def __init__(self, extras=()):
        super().__init__()
        self.extras = extras
        self.enc = dt.nn.LIFLayer(N_IN, N, w_scale=3.0)
        self.rec = dt.nn.LIFLayer(N, N, recurrent=True, w_scale=3.0)
        self.out = dt.nn.LeakyRateReadout(N, N_OUT, tau=5.0)
        if "first" in extras:  # sorts before every other state and runs first
            self.aaa = dt.nn.LeakyRate(N_IN, 4)
        if "readout" in extras:  # a second readout of the recurrent layer
            self.zz_readout = dt.nn.LeakyRateReadout(N, 3, tau=0)
        if "appended" in extras:  # a layer driven by the readout, after the output
            self.zz_layer = dt.nn.LIFLayer(N_OUT, 4, w_scale=3.0)

    def update(self, x):
        extra = [self.aaa(x)] if "first" in self.extras else []
        s = self.rec(self.enc(x))
        y = self.out(s)
        if "readout" in self.extras:
            extra.append(self.zz_readout(s))
        if "appended" in self.extras:
            extra.append(self.zz_layer(y))
        return (y, *extra) if extra else y


def _graph(model, x_shape=(B, N_IN)):
    brainstate.random.seed(0)
    brainstate.nn.init_all_states(model, batch_size=x_shape[0])
    return dt.compile_etrace_graph(model, jnp.ones(x_shape), warn=False)


def _traces(graph) -> dict[str, tuple]:
    """trace key -> (op name, weight paths, group member paths) for every trace of the graph."""
    found = {}
    for op in graph.ops:
        for g in (None, *op.groups):
            members = () if g is None else tuple(graph.hidden_paths[m] for m in graph.groups[g].members)
            found[graph.trace_key(op, g)] = (op.name, op.weight_params, members)
    return found


@pytest.mark.parametrize("extras", [("first",), ("readout",), ("appended",), ("first", "readout", "appended")])
def test_an_unrelated_layer_leaves_every_other_key_unchanged(extras):
    small, big = _graph(Net()), _graph(Net(extras))
    before, after = _traces(small), _traces(big)
    assert len(before) == 6  # enc, rec, out: a per-op key and one group key each
    assert {k: after.get(k) for k in before} == before
    assert len(after) > len(before)
    if "first" in extras:  # the test means something: positions did move
        op_at = lambda g: next(op.index for op in g.ops if op.key == "enc.weight")
        group_at = lambda g: next(grp.index for grp in g.groups if grp.name == "enc.V")
        assert op_at(small) < op_at(big) and group_at(small) < group_at(big)
        assert small.param_paths.index(("enc", "weight")) < big.param_paths.index(("enc", "weight"))


def test_keys_read_as_weight_and_group_paths():
    graph = _graph(Net())
    assert sorted(graph.trace_key(op, g) for op in graph.ops for g in op.groups) == [
        "enc.weight->enc.V",
        "out.weight->out.r",
        "rec.weight->rec.V",
    ]


class Tied(brainstate.nn.Module):
    """One weight used twice in a step: on the input and on the previous spikes."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (4, 4)))

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        s = dt.nn.spike(self.V.value - 1.0, "sigmoid", 1.0)
        self.V.value = 0.9 * self.V.value + dt.ops.matmul(x, self.w.value) + dt.ops.matmul(s, self.w.value)
        return self.V.value


def test_tied_weights_get_distinct_keys():
    graph = _graph(Tied(), (B, 4))
    assert [op.weight_params for op in graph.ops] == [(("w",),), (("w",),)]
    assert [op.key for op in graph.ops] == ["w", "w#1"]
    assert [graph.trace_key(op, 0) for op in graph.ops] == ["w->V", "w#1->V"]
    assert [graph.trace_key(op) for op in graph.ops] == ["w", "w#1"]


MODELS = {**am.EXACT, **am.APPROX, **{f"op_{op}": (lambda op=op: Leaky(op)) for op in OPS}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_keys_are_unique_and_stable(name):
    x_shape = (B, 4) if name.startswith("op_") else (B, am.N_IN)
    keys = list(_traces(_graph(MODELS[name](), x_shape)))
    assert len(keys) == len(set(keys))
    assert keys == list(_traces(_graph(MODELS[name](), x_shape)))
