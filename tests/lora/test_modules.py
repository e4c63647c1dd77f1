"""``lora.freeze`` and ``lora.adapt`` on brainstate models: in place, the adapted model
equals the original at init, decisions see full state paths."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace import lora


def _outputs(net, xs):
    brainstate.nn.init_all_states(net, batch_size=xs.shape[1])
    return jnp.stack([net(x) for x in xs])


def test_adapted_net_equals_the_original_at_init():
    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(5, 8, 2, recurrent=True)
    xs = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (12, 3, 5)).astype(jnp.float32)
    before = _outputs(net, xs)
    lora.adapt(net, jax.random.PRNGKey(1), rank=2)
    np.testing.assert_array_equal(_outputs(net, xs), before)
    params = net.states(brainstate.ParamState)
    assert sorted(params) == [("layers", 0, "weight", "adapter"), ("readout", "weight", "adapter")]
    frozen = [p for p, s in net.states().items() if isinstance(s, lora.FrozenState)]
    assert sorted(frozen) == [("layers", 0, "weight", "base"), ("readout", "weight", "base")]


def test_decisions_see_the_state_path_and_freeze_or_keep_whole_states():
    seen = []

    def decide(path, leaf):
        seen.append(path)
        if path[0] == "readout":
            return lora.FREEZE
        return lora.FULL if path[0] == "layers" and leaf.ndim == 2 else lora.FREEZE

    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(5, 8, 2, recurrent=True)
    lora.adapt(net, jax.random.PRNGKey(1), decision_fn=decide)
    assert ("layers", 0, "weight") in seen and ("readout", "weight") in seen
    assert isinstance(net.readout.weight, lora.FrozenState)  # all FREEZE: a plain frozen state
    assert isinstance(net.layers[0].weight, brainstate.ParamState)  # all FULL: untouched


def test_freeze_turns_every_parameter_into_a_frozen_state():
    layer = dt.nn.LeakyRate(3, 4)
    value = jax.tree.map(jnp.array, layer.weight.value)
    lora.freeze(layer)
    assert not layer.states(brainstate.ParamState)
    jax.tree.map(np.testing.assert_array_equal, layer.weight.value, value)
    with pytest.raises(ValueError, match="'module'"):
        lora.freeze({"w": jnp.ones(3)})
