"""Every trace op with brainunit quantities: the output carries the product unit, a bias
is taken in that unit (converted within a dimension, refused across), the compiler still
sees the unit-ful weight as the op's trace weight, and D-RTRL equals BPTT with gradients
in loss unit / weight unit (float64)."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL

T, B, N_IN, N = 10, 2, 4, 6
ROWS, COLS = np.arange(8) % N_IN, (np.arange(8) * 5) % N


def _weights(op):
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    if op == "lora":
        return {"b": jax.random.normal(k1, (N_IN, 2)) * u.mS, "a": jax.random.normal(k2, (2, N))}
    if op == "sparse":
        return jax.random.normal(k1, (8,)) * u.mS
    if op == "conv":
        return jax.random.normal(k1, (3, 1, 2)) * u.mS  # window 3, C=1, O=2 -> N = 3 positions x 2
    if op == "grouped":
        return jax.random.normal(k1, (2, 2, 3)) * u.mS  # 2 groups of (2 -> 3)
    if op == "einsum":
        return jax.random.normal(k1, (N, N_IN)) * u.mS
    if op == "element_wise":
        return jax.random.uniform(k1, (N,), minval=0.5, maxval=1.5) * u.mS
    return jax.random.normal(k1, (N_IN, N)) * u.mS


def drive(op, x, w, bias=None):
    """``op`` on x (B, N_IN) in mV with the weight in mS: a current in µA, (B, N), or
    (B, 3, 2) for conv (one neuron per position) and (B, 2, 3) for grouped (per group)."""
    if op == "matmul":
        return dt.matmul(x, w, bias)
    if op == "lora":
        return dt.lora_matmul(x, w["b"], w["a"], alpha=0.5, bias=bias)
    if op == "sparse":
        return dt.sparse_matmul(x, w, ROWS, COLS, N, bias=bias)
    if op == "conv":
        return dt.conv(x[:, :3, None], w, bias, padding="SAME")
    if op == "grouped":
        return dt.grouped_matmul(x.reshape((x.shape[0], 2, 2)), w)
    if op == "einsum":
        return dt.einsum("bi,oi->bo", x, w)
    if op == "element_wise":
        return dt.element_wise(w) * x[:, :1]
    return dt.embedding(jnp.argmax(u.get_mantissa(x), -1), w * u.mV)  # a table of currents (mS * mV)


OPS = ["matmul", "lora", "sparse", "conv", "grouped", "einsum", "element_wise", "embedding"]
BIASED = {"matmul": N, "lora": N, "sparse": N, "conv": 2}


class Leaky(brainstate.nn.Module):
    def __init__(self, op, bias_unit=None):
        super().__init__()
        self.op = op
        self.w = brainstate.ParamState(_weights(op))
        if bias_unit is not None:
            self.b = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(9), (BIASED[op],)) * bias_unit)
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (N, 2)))

    def init_state(self, batch_size=None, **kw):
        shape = {"conv": (3, 2), "grouped": (2, 3)}.get(self.op, (N,))
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, *shape)) * u.uA)

    def update(self, x):
        bias = self.b.value if hasattr(self, "b") else None
        self.h.value = 0.8 * self.h.value + drive(self.op, x, self.w.value, bias)
        return dt.matmul(jnp.tanh(self.h.value / u.uA).reshape(x.shape[0], N), self.ro.value)


def _data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN)) * u.mV
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))
    return xs, ys


def _grads(make, algorithm, xs, ys):
    brainstate.random.seed(0)
    model = make()
    brainstate.nn.init_all_states(model, batch_size=B)
    learner = dt.compile(model, algorithm, xs[0], batch_size=B)
    grads = learner.etrace_grad(xs, ys, step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))
    return grads, learner


@pytest.mark.parametrize("op", OPS)
def test_output_unit_is_the_product(op):
    x = jnp.ones((B, N_IN)) * u.mV
    y = drive(op, x, _weights(op))
    assert u.get_unit(y) == u.uA  # mV * mS
    assert y.size == B * N


@pytest.mark.parametrize("op", OPS)
def test_unit_ful_op_exact_under_d_rtrl(x64, op):
    xs, ys = _data()
    ref, _ = _grads(lambda: Leaky(op), dt.BPTT, xs, ys)
    got, learner = _grads(lambda: Leaky(op), dt.D_RTRL, xs, ys)
    assert learner.graph.param_kinds[("w",)] == "trace"
    for path in ref:
        assert u.get_unit(got[path]) == u.get_unit(ref[path]), path
        np.testing.assert_allclose(
            np.ravel(u.get_mantissa(jax.tree.leaves(got[path], is_leaf=lambda v: isinstance(v, u.Quantity))[0])),
            np.ravel(u.get_mantissa(jax.tree.leaves(ref[path], is_leaf=lambda v: isinstance(v, u.Quantity))[0])),
            rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path),
        )
    w_grad = got[("w",)]["b"] if op == "lora" else got[("w",)]
    assert u.get_unit(w_grad) == u.kohm  # a dimensionless loss over a weight in mS
    assert float(jnp.abs(u.get_mantissa(w_grad)).max()) > 1e-4


@pytest.mark.parametrize("op", sorted(BIASED))
@pytest.mark.parametrize("bias_unit", [u.uA, u.nA], ids=["same_unit", "converted"])
def test_bias_in_the_output_unit(x64, op, bias_unit):
    xs, ys = _data()
    ref, _ = _grads(lambda: Leaky(op, bias_unit), dt.BPTT, xs, ys)
    got, learner = _grads(lambda: Leaky(op, bias_unit), dt.D_RTRL, xs, ys)
    assert learner.graph.param_kinds[("b",)] == "trace"
    assert u.get_unit(got[("b",)]) == u.UNITLESS / bias_unit
    np.testing.assert_allclose(
        np.asarray(u.get_mantissa(got[("b",)])), np.asarray(u.get_mantissa(ref[("b",)])), rtol=0, atol=EXACT_F64_ATOL
    )


@pytest.mark.parametrize("op", sorted(BIASED))
def test_bias_of_another_dimension_is_refused(op):
    x = jnp.ones((B, N_IN)) * u.mV
    with pytest.raises(ValueError, match=r"argument 'bias' must be in a unit of the dimension of uA.*got mV"):
        drive(op, x, _weights(op), jnp.ones(BIASED[op]) * u.mV)
    with pytest.raises(ValueError, match=r"argument 'bias'.*got a plain array"):
        drive(op, x, _weights(op), jnp.ones(BIASED[op]))


def test_plain_arrays_are_unchanged():
    x, w = jnp.ones((B, N_IN)), jnp.ones((N_IN, N))
    y = dt.matmul(x, w, jnp.ones(N))
    assert isinstance(y, jax.Array) and not isinstance(y, u.Quantity)
    np.testing.assert_array_equal(y, jnp.full((B, N), N_IN + 1.0))
