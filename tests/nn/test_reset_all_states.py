"""``brainstate.nn.reset_all_states`` (braintrace's reset, also inside
``brainstate.transform.jit``) puts every disttrace layer's hidden states back to their
initial values in the existing ``State`` objects, as ``init_all_states`` would."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt

B, N_IN = 2, 3

LAYERS = {
    "IF": lambda: dt.nn.IF(4),
    "LIF": lambda: dt.nn.LIF(4, V_rest=-0.5),
    "ALIF": lambda: dt.nn.ALIF(4),
    "Expon": lambda: dt.nn.Expon(4),
    "LIFLayer": lambda: dt.nn.LIFLayer(N_IN, 4),
    "ALIFLayer": lambda: dt.nn.ALIFLayer(N_IN, 4),
    "LeakyRate": lambda: dt.nn.LeakyRate(N_IN, 4),
    "SpikingNet": lambda: dt.nn.SpikingNet(N_IN, 4, 2),
}


def _input(name):
    return jnp.full((B, 4 if name in ("IF", "LIF", "ALIF", "Expon") else N_IN), 3.0)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_reset_all_states_restores_the_initial_values(name, jit):
    brainstate.random.seed(0)
    layer = LAYERS[name]()
    brainstate.nn.init_all_states(layer, batch_size=B)
    hidden = layer.states(brainstate.HiddenState)
    initial = {p: np.asarray(st.value) for p, st in hidden.items()}
    for _ in range(3):
        layer(_input(name))
    assert any(not np.array_equal(np.asarray(st.value), initial[p]) for p, st in hidden.items())

    def reset():
        brainstate.nn.reset_all_states(layer, batch_size=B)

    (brainstate.transform.jit(reset) if jit else reset)()
    for p, st in layer.states(brainstate.HiddenState).items():
        assert st is hidden[p]  # the same State objects: a compiled learner keeps reading them
        np.testing.assert_array_equal(np.asarray(st.value), initial[p], err_msg=str(p))
