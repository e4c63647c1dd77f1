"""How the compiler reads frozen weights (states the step never writes).

- a frozen weight may be part of a trace-op weight (``W_frozen + s·A·B``): the op is
  traced for the parameters ``A``, ``B`` only;
- an op whose weights are all frozen is a *constant op*: recorded as
  ``CONSTANT_OP``, no hidden group, no trace, its input cut like every trace op's, so
  a frozen *recurrent* weight compiles;
- a state the step writes is no constant: using it in a weight is refused.
"""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import disttrace as dt
from disttrace import lora
from disttrace.compiler import DiagnosticKind
from disttrace.errors import CompilationError
from disttrace.testing import gradients

B, N_IN, N = 2, 3, 4


class Net(brainstate.nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        self.frozen = lora.FrozenState(jnp.ones((N_IN, N)) * 0.1)
        self.frozen_rec = lora.FrozenState(jnp.eye(N) * 0.5)
        self.a = brainstate.ParamState(jnp.ones((N_IN, 1)))
        self.b = brainstate.ParamState(jnp.ones((1, N)))
        self.written = brainstate.ShortTermState(jnp.ones((N_IN, N)))

    def init_state(self, batch_size=None, **kw):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

    def update(self, x):
        h = self.h.value
        v = self.variant
        if v == "merged_weight":
            y = dt.ops.matmul(x, self.frozen.value + 0.5 * self.a.value @ self.b.value)
        elif v == "frozen_recurrent":
            y = dt.ops.matmul(h, self.frozen_rec.value) + dt.ops.lora_matmul(x, self.b.value, self.a.value, 0.5)
        elif v == "frozen_then_sum":  # a constant op's output reaching h through a non-element-wise sum
            y = dt.ops.matmul(x, self.frozen.value).sum(-1, keepdims=True) + dt.ops.matmul(x, self.a.value @ self.b.value)
        elif v == "feeds_frozen":  # a trained op feeding a frozen one that reaches h
            z = jnp.tanh(dt.ops.matmul(x, self.a.value @ self.b.value))
            y = dt.ops.matmul(z, self.frozen_rec.value)
        else:  # "written_state_in_weight"
            self.written.value = self.written.value + 1.0
            y = dt.ops.matmul(x, self.written.value * self.a.value)
        self.h.value = 0.8 * h + jnp.tanh(y)
        return self.h.value


def _graph(variant):
    net = Net(variant)
    brainstate.nn.init_all_states(net, batch_size=B)
    return dt.compile_etrace_graph(net, jnp.zeros((B, N_IN)))


def test_frozen_state_inside_a_trace_op_weight():
    graph = _graph("merged_weight")
    (op,) = graph.ops
    assert op.weight_params == (("a",), ("b",)) and op.groups == (0,)


@pytest.mark.parametrize("variant", ["frozen_recurrent", "frozen_then_sum"])
def test_constant_ops_are_recorded_and_keep_no_group(variant):
    graph = _graph(variant)
    const = [op for op in graph.ops if not op.weight_params]
    assert len(const) == 1 and const[0].groups == ()
    assert [r.path for r in graph.records if r.kind is DiagnosticKind.CONSTANT_OP] == [f"op{const[0].index}"]
    traced = [op for op in graph.ops if op.weight_params]
    assert all(op.groups == (0,) for op in traced)
    learner = dt.compile(Net(variant), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert learner.modes[const[0].index] == "none"
    assert set(learner.init().traces) == {op.key for op in traced}
    assert all(op.key == "" for op in const)  # no parameter, no name, no trace


def test_an_op_feeding_a_frozen_op_gets_its_same_step_gradient():
    with pytest.warns(UserWarning, match="same-step"):
        graph = _graph("feeds_frozen")
    kinds = {r.kind for r in graph.records}
    assert DiagnosticKind.SAME_STEP_ONLY in kinds and DiagnosticKind.CONSTANT_OP in kinds


def test_a_written_state_is_no_constant():
    with pytest.raises(CompilationError) as err:
        _graph("written_state_in_weight")
    # the written state makes `written * a` an ordinary (non-constant) value: `a` is then a
    # parameter used outside a trace op
    assert err.value.kind == "param_outside_trace_op"


def test_frozen_recurrent_gradients_are_finite_and_only_for_parameters():
    xs = jax.random.normal(jax.random.PRNGKey(0), (6, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(1), (6, B, N))
    grads = gradients(lambda: Net("frozen_recurrent"), dt.D_RTRL, xs, ys)
    assert set(grads) == {("a",), ("b",)}
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
