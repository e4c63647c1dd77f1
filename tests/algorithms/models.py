"""Small models shared by the algorithm tests."""

import brainstate

import disttrace as dt

N_IN, N_REC, N_OUT = 3, 6, 2


Stack = brainstate.nn.Sequential  # applies layers in order; params at ('layers', i, ...)


# Models where D-RTRL is exact: element-wise hidden dynamics, memoryless readout.
EXACT = {
    "lif_soft": lambda: Stack(dt.nn.LIFLayer(N_IN, N_REC, w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0)),
    "lif_hard": lambda: Stack(
        dt.nn.LIFLayer(N_IN, N_REC, reset="hard", w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0)
    ),
    "alif": lambda: Stack(dt.nn.ALIFLayer(N_IN, N_REC, w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0)),
    "leaky_rate": lambda: Stack(dt.nn.LeakyRate(N_IN, N_REC), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0)),
}

# Models where the online algorithms approximate BPTT.
APPROX = {
    "rec_lif": lambda: Stack(
        dt.nn.LIFLayer(N_IN, N_REC, recurrent=True, w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=5.0)
    ),
    "rec_alif": lambda: Stack(
        dt.nn.ALIFLayer(N_IN, N_REC, recurrent=True, w_scale=3.0), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=5.0)
    ),
    "gru": lambda: Stack(dt.nn.GRUCell(N_IN, N_REC), dt.nn.LeakyRateReadout(N_REC, N_OUT, tau=0)),
}
