"""Linear-family cases for the shared layer suite."""

import disttrace as dt
from tests.nn.layer_case import LayerCase

N_IN, N_OUT = 4, 5

CASES = [
    LayerCase("Linear", lambda: dt.nn.Linear(N_IN, N_OUT), (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.68}),
]
