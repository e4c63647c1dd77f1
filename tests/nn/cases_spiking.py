"""Spiking neurons, the exponential synapse and the readouts, for the shared layer suite.

Neurons take an input current, so each model is ``Linear -> neuron -> memoryless
readout``: element-wise hidden dynamics, so D-RTRL is exact, and the neurons'
``learnable`` per-neuron parameters are checked too.

ES-D-RTRL cosine floors, measured 2026-11-23 (jax 0.10.2 CPU, float64, T=20, B=2,
seed 0; ``python -m tests.nn.measure_floors``), rounded down to two decimals; never
lower them:

==================  ======
case                ES
==================  ======
IF                  0.9843
LIF                 0.9993
LIF_hard            0.9874
ALIF                0.9972
Expon               0.9959
LeakyRateReadout    0.9908
LeakySpikeReadout   0.6683
==================  ======
"""

import brainstate

import disttrace as dt
from tests.nn.layer_case import LayerCase, Stack

N_IN, N, N_OUT = 3, 6, 2


def _net(neuron):
    def make():
        drive = dt.nn.Linear(N, N, w_init=brainstate.nn.init.Normal(0.0, 2.0))  # input shape = the neuron's
        return Stack(drive, neuron(), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))

    return make


_NEURONS = {
    "IF": lambda: dt.nn.IF(N, learnable=("V_th",)),
    "LIF": lambda: dt.nn.LIF(N, tau=2.0, learnable=("tau", "V_th")),
    "LIF_hard": lambda: dt.nn.LIF(N, tau=2.0, spk_reset="hard", spk_fun="sigmoid"),
    "ALIF": lambda: dt.nn.ALIF(N, tau=2.0, tau_a=20.0, learnable=("tau", "tau_a", "beta")),
    "Expon": lambda: dt.nn.Expon(N, tau=4.0, learnable=("tau",)),
}
_FLOORS = {"IF": 0.98, "LIF": 0.99, "LIF_hard": 0.98, "ALIF": 0.99, "Expon": 0.99}

CASES = [
    LayerCase(name, make, (N,), model=_net(make), floors={"es_d_rtrl": _FLOORS[name]})
    for name, make in _NEURONS.items()
] + [
    LayerCase("LeakyRateReadout", lambda: dt.nn.LeakyRateReadout(N_IN, N_OUT, tau=5.0), (N_IN,),
              model=lambda: dt.nn.LeakyRateReadout(N_IN, N_OUT, tau=5.0), floors={"es_d_rtrl": 0.99}),
    LayerCase("LeakySpikeReadout", lambda: dt.nn.LeakySpikeReadout(N_IN, N_OUT, tau=2.0, w_scale=4.0), (N_IN,),
              model=lambda: dt.nn.LeakySpikeReadout(N_IN, N_OUT, tau=2.0, w_scale=4.0), floors={"es_d_rtrl": 0.66}),
]
