"""Structures the compiler cannot handle raise CompilationError naming the culprit."""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import disttrace as dt
from disttrace.compiler import DiagnosticKind, compile_etrace_graph


class _Cell(brainstate.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.w = brainstate.ParamState(jnp.ones((3, 4)) * 0.1)
        self.u = brainstate.ParamState(jnp.ones((4,)))

    def init_state(self, batch_size=None, **kw):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        h = self.h.value
        if self.mode == "raw_param":  # a parameter multiplies the hidden state outside any op
            h = self.u.value * h + dt.ops.matmul(x, self.w.value)
        elif self.mode == "raw_matmul":  # a raw jnp matmul: the weight gets no trace
            h = 0.5 * h + x @ self.w.value
        elif self.mode == "scan":  # the hidden state is updated inside a loop longer than the unroll limit (16)
            h = jax.lax.fori_loop(0, 20, lambda i, v: 0.5 * v + dt.ops.matmul(x, self.w.value), h)
        elif self.mode == "mix":  # neurons mixed by a reduction outside trace ops
            h = 0.5 * h + h.sum(-1, keepdims=True) + dt.ops.matmul(x, self.w.value)
        else:
            h = dt.ops.element_wise(self.u.value, jax.nn.sigmoid) * h + dt.ops.matmul(x, self.w.value)
        self.h.value = h
        return h


def _graph(mode):
    cell = _Cell(mode)
    brainstate.nn.init_all_states(cell, batch_size=2)
    return compile_etrace_graph(cell, jnp.ones((2, 3)))


@pytest.mark.parametrize(
    "mode,kind,path",
    [
        ("raw_param", "param_outside_trace_op", "u"),
        ("raw_matmul", "param_outside_trace_op", "w"),
        ("scan", "hidden_in_loop", None),
        ("mix", "non_elementwise_hidden", "h"),
    ],
)
def test_unsupported_structure(mode, kind, path):
    with pytest.raises(dt.CompilationError) as info:
        _graph(mode)
    assert info.value.kind == kind
    if path is not None:
        assert info.value.path == path
    assert info.value.primitive


def test_supported_graph_summary():
    graph = _graph("ok")
    assert [g.k for g in graph.groups] == [1]
    assert {op.name for op in graph.ops} == {"element_wise", "matmul"}
    assert graph.param_kinds == {("u",): "trace", ("w",): "trace"}
    text = str(graph)
    assert "element_wise" in text and "group 0" in text


def test_nested_jit_is_inlined():
    class Nested(_Cell):
        def update(self, x):
            inner = jax.jit(lambda h, x, w, u: dt.ops.element_wise(u, jax.nn.sigmoid) * h + dt.ops.matmul(x, w))
            self.h.value = inner(self.h.value, x, self.w.value, self.u.value)
            return self.h.value

    cell = Nested("ok")
    brainstate.nn.init_all_states(cell, batch_size=2)
    graph = compile_etrace_graph(cell, jnp.ones((2, 3)))
    assert {op.name for op in graph.ops} == {"element_wise", "matmul"}
    assert all(op.groups == (0,) for op in graph.ops)


def test_readout_is_recorded_as_non_temporal():
    net = dt.nn.SpikingNet(3, 4, 2, tau_out=0.0)
    brainstate.nn.init_all_states(net, batch_size=2)
    graph = compile_etrace_graph(net, jnp.ones((2, 3)))
    kinds = {r.kind for r in graph.records}
    assert DiagnosticKind.NON_TEMPORAL_PARAM in kinds
    assert graph.param_kinds[("readout", "weight")] == "direct"
