"""The compiler reads jaxprs only through ``_jax_compat``: primitive families are sets of
primitive objects (a look-alike primitive with the same name is not a member), a
convolution's statics come out as plain data, and op rules are specialised on an
``OpBody`` of plain data, never on JAX equations."""

import dataclasses

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.compiler import _jax_compat as jc
from disttrace.ops import TraceOpRule, get_rule, register, registered_names, trace_op
from disttrace.ops._registry import ConvWindow, OpBody
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

Primitive = type(jax.lax.add_p)


def _eqns(fn, *args):
    return jc.eqns(jax.make_jaxpr(fn)(*args))


def test_elementwise_family_is_keyed_by_primitive_objects():
    for p in (jax.lax.add_p, jax.lax.mul_p, jax.lax.tanh_p, jax.lax.select_n_p, jax.lax.convert_element_type_p):
        assert p in jc.ELEMENTWISE
    assert jax.lax.dot_general_p not in jc.ELEMENTWISE
    assert jax.lax.reduce_sum_p not in jc.ELEMENTWISE
    # a different primitive that merely shares a name is not element-wise
    assert Primitive("add") not in jc.ELEMENTWISE
    assert Primitive("tanh") not in jc.ELEMENTWISE
    assert "add" not in jc.ELEMENTWISE.fallback_names  # found as an object in this JAX


def test_equation_families():
    (eqn,) = _eqns(lambda x: jax.lax.fori_loop(0, 2, lambda i, c: c * 2.0, x), 1.0)
    assert jc.is_loop(eqn) and not jc.is_call(eqn)
    (eqn,) = _eqns(jax.checkpoint(lambda x: jnp.sin(x) * 2.0), 1.0)
    assert jc.is_call(eqn) and [jc.primitive_name(e) for e in jc.eqns(jc.call_jaxpr_of(eqn))] == ["sin", "mul"]
    (eqn,) = _eqns(jax.nn.relu, 1.0)
    assert jc.is_call(eqn)
    (eqn,) = _eqns(jax.jit(jnp.sin), 1.0)
    assert jc.is_jit_call(eqn) and jc.is_call(eqn) and jc.jit_name(eqn) == "sin"
    (eqn,) = _eqns(lambda x: x.reshape(1, 3, 1), jnp.ones(3))
    assert jc.is_reshape(eqn) and jc.aval_shape(jc.eqn_outvars(eqn)[0]) == (1, 3, 1)


def test_convolutions_as_plain_data():
    x, w = jnp.ones((2, 9, 3)), jnp.ones((3, 3, 4))
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (2,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
    (found,) = jc.convolutions(jax.make_jaxpr(conv)(x, w))
    assert found["strides"] == (2,) and found["padding"] == ((0, 0),)
    assert found["dimension_numbers"] == ((0, 2, 1), (2, 1, 0), (0, 2, 1))
    assert all(type(v) is int for v in jax.tree.leaves(found))
    assert jc.convolutions(jax.make_jaxpr(jnp.sin)(1.0)) == ()


def test_conv_rule_specialises_on_plain_data():
    body = OpBody(convs=(ConvWindow(strides=(2,), padding=((0, 1),)),))
    # strides, padding, lhs dilation, rhs dilation, feature groups (the defaults: none, none, 1)
    assert get_rule("dt__conv").specialize(body).static == ((2,), ((0, 1),), None, None, 1)


# ---- a user op whose rule specialises on the body it is given -------------------------------
@dataclasses.dataclass(frozen=True)
class _ProbeRule(TraceOpRule):
    def specialize(self, body):
        return dataclasses.replace(self, static=(body,))


if "test_strided_probe" not in registered_names():
    register(_ProbeRule(name="test_strided_probe", input_argnum=0, weight_argnums=(1,)))


def _dt_probe(x, w):
    return jax.lax.conv_general_dilated(x, w, (2,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))


_probe = trace_op("test_strided_probe", _dt_probe)


class _Strided(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((3, 1, 2)) * 0.1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, 3, 2)))

    def update(self, x):
        self.h.value = 0.5 * self.h.value + _probe(x, self.w.value)
        return self.h.value


def test_a_rule_is_given_plain_data_not_equations():
    model = _Strided()
    brainstate.nn.init_all_states(model, batch_size=2)
    graph = dt.compile_etrace_graph(model, jnp.ones((2, 7, 1)))
    (op,) = graph.ops
    (body,) = op.rule.static
    assert body == OpBody(
        convs=(
            ConvWindow(
                strides=(2,),
                padding=((0, 0),),
                lhs_dilation=(1,),
                rhs_dilation=(1,),
                dimension_numbers=((0, 2, 1), (2, 1, 0), (0, 2, 1)),
            ),
        )
    )
    assert op.groups == (0,)


# ---- jax.checkpoint: a call whose body decides (its primitive was renamed "remat2") -------
class _Remat(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (3, 4)))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        y = dt.ops.matmul(x, self.w.value)
        self.h.value = jax.checkpoint(lambda h, y: 0.8 * h + jnp.tanh(y))(self.h.value, y)
        return self.h.value


def test_checkpointed_elementwise_update_is_element_wise(x64):
    model = _Remat()
    brainstate.nn.init_all_states(model, batch_size=2)
    graph = dt.compile_etrace_graph(model, jnp.ones((2, 3)))
    assert [op.groups for op in graph.ops] == [(0,)]
    xs = jax.random.normal(jax.random.PRNGKey(2), (6, 2, 3))
    ys = jax.random.normal(jax.random.PRNGKey(3), (6, 2, 4))
    ref = gradients(_Remat, dt.BPTT, xs, ys)
    got = gradients(_Remat, dt.D_RTRL, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_a_checkpointed_reduction_is_still_refused():
    class Mix(_Remat):
        def update(self, x):
            y = dt.ops.matmul(x, self.w.value)
            self.h.value = jax.checkpoint(lambda h, y: 0.8 * h + h.sum(-1, keepdims=True) + y)(self.h.value, y)
            return self.h.value

    model = Mix()
    brainstate.nn.init_all_states(model, batch_size=2)
    with pytest.raises(dt.CompilationError) as info:
        dt.compile_etrace_graph(model, jnp.ones((2, 3)))
    assert info.value.kind == "non_elementwise_hidden"
