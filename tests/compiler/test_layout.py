"""StepLayout, the one owner of the step's flat order: flat_inputs / flat_outputs and the
slices are inverse to each other, bad counts are refused, and a compiled graph's layout
describes its jaxpr."""

import brainstate
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import disttrace as dt
from disttrace.compiler import StepLayout
from disttrace.compiler._layout import StepInputs, StepOutputs
from tests.compiler.test_aux_states import WithAux

counts = st.integers(0, 4)


def _items(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


@settings(max_examples=50, deadline=None, derandomize=True)
@given(n_p=counts, n_h=counts, n_a=counts, n_x=counts, n_out=counts)
def test_inputs_and_outputs_round_trip(n_p, n_h, n_a, n_x, n_out):
    lay = StepLayout(n_params=n_p, n_hidden=n_h, n_aux=n_a, n_args=n_x)
    params, hidden, aux, args = _items("p", n_p), _items("h", n_h), _items("a", n_a), _items("x", n_x)
    flat = lay.flat_inputs(params, hidden, aux, args)
    assert len(flat) == lay.n_inputs == n_p + n_h + n_a + n_x
    assert (lay.params(flat), lay.hidden(flat), lay.aux(flat), lay.args(flat)) == (params, hidden, aux, args)
    assert lay.split_inputs(flat) == StepInputs(params, hidden, aux, args)

    out, h_new, a_new = _items("y", n_out), _items("h'", n_h), _items("a'", n_a)
    outs = lay.flat_outputs(out, h_new, a_new)
    assert (lay.out(outs), lay.hidden_new(outs), lay.aux_new(outs)) == (out, h_new, a_new)
    assert lay.split_outputs(outs) == StepOutputs(out, h_new, a_new)


def test_wrong_counts_are_refused():
    lay = StepLayout(n_params=1, n_hidden=2, n_aux=0, n_args=1)
    with pytest.raises(ValueError, match="hidden must have 2 leaves; got 1"):
        lay.flat_inputs(["p"], ["h"], [], ["x"])
    with pytest.raises(ValueError, match="args must have 1 leaves; got 2"):
        lay.flat_inputs(["p"], ["h0", "h1"], [], ["x", "y"])
    with pytest.raises(ValueError, match="takes 4 input leaves; got 3"):
        lay.split_inputs(["p", "h0", "h1"])
    with pytest.raises(ValueError, match="at least 2 leaves"):
        lay.out(["h0"])
    with pytest.raises(ValueError, match="expected 2 hidden and 0 aux"):
        lay.flat_outputs([], ["h"], [])


@pytest.mark.parametrize("bad", [-1, 1.0, True, "2"])
def test_counts_must_be_non_negative_ints(bad):
    with pytest.raises(ValueError, match="n_aux"):
        StepLayout(n_params=1, n_hidden=1, n_aux=bad, n_args=0)


def test_graph_layout_describes_its_jaxpr():
    """A model with params, hidden, a read-only and a written aux state, a tuple output."""

    class TwoOut(WithAux):
        def update(self, x):
            return super().update(x), x.sum()

    model = TwoOut()
    brainstate.nn.init_all_states(model, batch_size=2)
    graph = dt.compile_etrace_graph(model, jnp.zeros((2, 3)))
    lay = graph.layout
    assert (lay.n_params, lay.n_hidden, lay.n_aux, lay.n_args) == (
        graph.param_tree.num_leaves,
        len(graph.hidden_paths),
        graph.aux_tree.num_leaves,
        graph.arg_tree.num_leaves,
    ) == (1, 1, 2, 1)
    jaxpr = graph.jaxpr.jaxpr
    assert len(jaxpr.invars) == lay.n_inputs
    assert len(lay.out(jaxpr.outvars)) == graph.out_tree.num_leaves == 2
    assert [tuple(v.aval.shape) for v in lay.hidden(jaxpr.invars)] == list(graph.hidden_shapes)
    assert [tuple(v.aval.shape) for v in lay.hidden_new(jaxpr.outvars)] == list(graph.hidden_shapes)
    assert [tuple(v.aval.shape) for v in lay.args(jaxpr.invars)] == [s for s, _ in graph.arg_shapes]
