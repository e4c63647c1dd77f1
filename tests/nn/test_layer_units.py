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

T, B, N_IN, N_OUT = 8, 2, 6, 4
ROWS, COLS = jnp.array([0, 1, 2, 5]), jnp.array([1, 2, 3, 0])


LAYERS = {
    "Linear": lambda: dt.nn.Linear(N_IN, N_OUT, w_init=brainstate.random.randn(N_IN, N_OUT) * u.mS, b_init=jnp.ones(N_OUT) * u.uA),
    "SignedWLinear": lambda: dt.nn.SignedWLinear(N_IN, N_OUT, w_init=brainstate.random.randn(N_IN, N_OUT) * u.mS),
    "GroupedLinear": lambda: dt.nn.GroupedLinear(  # (B, 2, 3) -> (B, 2, 2): hidden (B, 2, 2)
        2, 3, 2, w_init=brainstate.random.randn(2, 3, 2) * u.mS, b_init=jnp.ones((2, 2)) * u.uA),
    "SparseLinear_brainunit": lambda: dt.nn.SparseLinear(
        u.sparse.COO((brainstate.random.randn(4) * u.mS, ROWS, COLS), shape=(N_IN, N_OUT)), b_init=jnp.ones(N_OUT) * u.nA
    ),
    "SparseLinear_brainevent": lambda: dt.nn.SparseLinear(
        brainevent.CSR.fromdense(jnp.array([[0.0, 0.5, 0.0, 0.0], [0.0, 0.0, -0.7, 0.0], [0.3, 0.0, 0.0, 0.9]] * 2) * u.mS)
    ),
}


class Leaky(brainstate.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.proj = layer

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, *self.proj.out_size[-2:])) * u.uA)

    def update(self, x):
        if isinstance(self.proj, dt.nn.GroupedLinear):
            x = x.reshape((x.shape[0], 2, 3))
        self.h.value = 0.9 * self.h.value + self.proj(x)
        return jnp.tanh(self.h.value / u.uA).reshape((x.shape[0], N_OUT))


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
    layer = LAYERS[name]()
    x = jnp.ones((B, 2, 3) if name == "GroupedLinear" else (B, N_IN)) * u.mV
    assert u.get_unit(layer(x)) == u.uA
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_IN)) * u.mV
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_OUT))
    ref, got = _grads(name, dt.BPTT, xs, ys), _grads(name, dt.D_RTRL, xs, ys)
    for g, r in zip(_leaves(got), _leaves(ref)):
        assert u.get_unit(g) == u.get_unit(r)
        np.testing.assert_allclose(np.asarray(u.get_mantissa(g)), np.asarray(u.get_mantissa(r)), rtol=0,
                                   atol=EXACT_F64_ATOL)
    weight = got[("proj", "weight")]
    weight = weight["weight"] if isinstance(weight, dict) else weight
    assert u.get_unit(weight) == u.kohm  # 1/mS
    assert float(jnp.abs(u.get_mantissa(weight)).max()) > 1e-4
