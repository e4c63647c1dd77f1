"""Recurrent-cell cases for the shared layer suite.

Each cell drives a memoryless readout (``LeakyRateReadout(tau=0)``, no hidden state),
so the cell's hidden states are the only ones. D-RTRL is exact where the recurrence is
element-wise (MiniGRU, MiniLSTM, LRUCell, whose ``C`` and ``D`` reach only the
readout and get their exact spatial gradient); elsewhere the floors below were fixed from
one measurement, rounded down to two decimals (float64, T=20, B=2, seeds as in
``test_layers.py``; jax 0.10.2 CPU, brainstate 0.5.4, 2026-11-23). Measured cosine to BPTT:

==================  =========  ===========
case                D-RTRL     ES-D-RTRL
==================  =========  ===========
ValinaRNNCell       0.9782     0.8746
ValinaRNNCell-relu  0.9007     0.6492
GRUCell             0.9980     0.8336
MGUCell             0.9974     0.8147
LSTMCell            0.9865     0.7793
URLSTMCell          0.9984     0.9035
MinimalRNNCell      0.9989     0.8979
CFNCell             0.9994     0.8346
MiniGRU             exact      0.8522
MiniLSTM            exact      0.8663
LRUCell             exact      0.9070
==================  =========  ===========

LSTMCell and URLSTMCell ES were first measured 0.8194 / 0.9403 (floors 0.81 / 0.94)
on an ES-D-RTRL that counted the path c_t -> h_t twice in its learning signal (it did
not equal D-RTRL at the first step, where the two must agree; now tested in
``tests/algorithms/test_exactness.py::test_first_step_es_equals_d_rtrl[lstm]``).
With that fixed they measure 0.7793 / 0.9035: the floors follow the corrected
gradient (0.77 / 0.90), not a wrong one. Every other entry re-measured unchanged.

"exact": equal to BPTT within ``EXACT_F64_ATOL`` (measured max error <= 4e-16). ValinaRNNCell
runs with ``tanh`` and with brainstate's default ``relu``.

Never lower a floor to make a change pass.
"""

import disttrace as dt
from tests.nn.layer_case import LayerCase, Stack

N_IN, N = 3, 5


def _with_readout(make_cell, n_out):
    return lambda: Stack(make_cell(), dt.nn.LeakyRateReadout(n_out, 2, tau=0))


def _case(name, make_cell, *, n_out=N, exact=False, floors=None, warns=None):
    return LayerCase(
        name,
        make_cell,
        (N_IN,),
        model=_with_readout(make_cell, n_out),
        exact=exact,
        floors=floors or {},
        warns=warns,
    )


CASES = [
    _case(
        "ValinaRNNCell",
        lambda: dt.nn.ValinaRNNCell(N_IN, N, activation="tanh"),
        floors={"d_rtrl": 0.97, "es_d_rtrl": 0.87},
    ),
    _case("ValinaRNNCell-relu", lambda: dt.nn.ValinaRNNCell(N_IN, N), floors={"d_rtrl": 0.9, "es_d_rtrl": 0.64}),
    _case("GRUCell", lambda: dt.nn.GRUCell(N_IN, N), floors={"d_rtrl": 0.99, "es_d_rtrl": 0.83}, warns="same-step"),
    _case("MGUCell", lambda: dt.nn.MGUCell(N_IN, N), floors={"d_rtrl": 0.99, "es_d_rtrl": 0.81}),
    _case("LSTMCell", lambda: dt.nn.LSTMCell(N_IN, N), floors={"d_rtrl": 0.98, "es_d_rtrl": 0.77}),
    _case("URLSTMCell", lambda: dt.nn.URLSTMCell(N_IN, N), floors={"d_rtrl": 0.99, "es_d_rtrl": 0.90}),
    _case("MinimalRNNCell", lambda: dt.nn.MinimalRNNCell(N_IN, N), floors={"d_rtrl": 0.99, "es_d_rtrl": 0.89}),
    _case("CFNCell", lambda: dt.nn.CFNCell(N_IN, N), floors={"d_rtrl": 0.99, "es_d_rtrl": 0.83}),
    _case("MiniGRU", lambda: dt.nn.MiniGRU(N_IN, N), exact=True, floors={"es_d_rtrl": 0.85}),
    _case("MiniLSTM", lambda: dt.nn.MiniLSTM(N_IN, N), exact=True, floors={"es_d_rtrl": 0.86}),
    _case("LRUCell", lambda: dt.nn.LRUCell(N_IN, N), n_out=N_IN, exact=True, floors={"es_d_rtrl": 0.90}),
]
