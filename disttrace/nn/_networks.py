"""Small ready-made networks: a stack of spiking layers and a readout."""

from __future__ import annotations

import brainstate

from disttrace import checks
from disttrace.nn._readout import LeakyRateReadout
from disttrace.nn._spiking_layers import ALIFLayer, LIFLayer

__all__ = ["SpikingNet"]


class SpikingNet(brainstate.nn.Module):
    """``n_layers`` recurrent LIF (or ALIF) layers followed by a leaky readout.

    Args:
      n_in: input size.
      n_rec: neurons per layer.
      n_out: readout size.
      n_layers: number of spiking layers.
      neuron: ``"lif"`` or ``"alif"``.
      recurrent: recurrent weights in every layer.
      tau_out: readout time constant (0: memoryless).
      **neuron_kwargs: passed to every spiking layer.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.SpikingNet(3, 8, 2, n_layers=2)
      >>> brainstate.nn.init_all_states(net, batch_size=4)
      SpikingNet(...)
      >>> net(jnp.ones((4, 3))).shape
      (4, 2)
    """

    def __init__(self, n_in, n_rec, n_out, n_layers=1, neuron="lif", recurrent=True, tau_out=5.0, **neuron_kwargs):
        super().__init__()
        checks.one_of("SpikingNet", "neuron", neuron, ("lif", "alif"))
        n_layers = checks.positive_int("SpikingNet", "n_layers", n_layers)
        cls = LIFLayer if neuron == "lif" else ALIFLayer
        self.layers = [
            cls(n_in if i == 0 else n_rec, n_rec, recurrent=recurrent, **neuron_kwargs) for i in range(n_layers)
        ]
        self.readout = LeakyRateReadout(n_rec, n_out, tau=tau_out)

    def update(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.readout(x)
