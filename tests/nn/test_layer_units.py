"""The synaptic projection layers with brainunit quantities (a weight in mS, an input in
mV, a bias in µA): the output is in µA, the compiled model learns online with D-RTRL
equal to BPTT, and the gradients carry loss unit / weight unit (float64)."""

import brainevent
import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL

T, B, I, O = 8, 2, 3, 4
ROWS, COLS = jnp.array([0, 1, 2, 2]), jnp.array([1, 2, 3, 0])

LAYERS = {
    "Linear": lambda: dt.nn.Linear(I, O, w_init=brainstate.random.randn(I, O) * u.mS, b_init=jnp.ones(O) * u.uA),
    "SignedWLinear": lambda: dt.nn.SignedWLinear(I, O, w_init=brainstate.random.randn(I, O) * u.mS),
    "SparseLinear_brainunit": lambda: dt.nn.SparseLinear(
        u.sparse.COO((brainstate.random.randn(4) * u.mS, ROWS, COLS), shape=(I, O)), b_init=jnp.ones(O) * u.nA
    ),
    "SparseLinear_brainevent": lambda: dt.nn.SparseLinear(
        brainevent.CSR.fromdense(jnp.array([[0.0, 0.5, 0.0, 0.0], [0.0, 0.0, -0.7, 0.0], [0.3, 0.0, 0.0, 0.9]]) * u.mS)
    ),
}


class Leaky(brainstate.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.proj = layer

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, O)) * u.uA)

    def update(self, x):
        self.h.value = 0.9 * self.h.value + self.proj(x)
        return jnp.tanh(self.h.value / u.uA)


def _grads(name, algorithm, xs, ys):
    brainstate.random.seed(0)
    model = Leaky(LAYERS[name]())
    brainstate.nn.init_all_states(model, batch_size=B)
    learner = dt.compile(model, algorithm, xs[0], batch_size=B)
    return learner.etrace_grad(xs, ys, step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))


def _leaves(tree):
    return jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, u.Quantity))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_unit_ful_layer_learns_online_exactly(x64, name):
    brainstate.random.seed(0)
    assert u.get_unit(LAYERS[name]()(jnp.ones((B, I)) * u.mV)) == u.uA
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I)) * u.mV
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, O))
    ref, got = _grads(name, dt.BPTT, xs, ys), _grads(name, dt.D_RTRL, xs, ys)
    for g, r in zip(_leaves(got), _leaves(ref)):
        assert u.get_unit(g) == u.get_unit(r)
        np.testing.assert_allclose(np.asarray(u.get_mantissa(g)), np.asarray(u.get_mantissa(r)), rtol=0,
                                   atol=EXACT_F64_ATOL)
    weight = got[("proj", "weight")]
    weight = weight["weight"] if isinstance(weight, dict) else weight
    assert u.get_unit(weight) == u.kohm  # 1/mS
    assert float(jnp.abs(u.get_mantissa(weight)).max()) > 1e-4
