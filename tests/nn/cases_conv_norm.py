"""Convolutions and normalisation layers for the shared layer suite (stateless: the
default model integrates their output element-wise, so D-RTRL is exact).

ES-D-RTRL cosine floors, measured 2026-11-23 (jax 0.10.2 CPU, float64, T=20, B=2,
seed 0; ``python -m tests.nn.measure_floors``), rounded down to two decimals; never
lower them. The norms' scale and shift are element-wise, so ES-D-RTRL is exact for
them and the suite checks equality instead:

==============  ======
case            ES
==============  ======
Conv1d          0.9827
Conv2d          0.9707
Conv3d          0.9866
ScaledWSConv1d  0.9629
ScaledWSConv2d  0.9466
ScaledWSConv3d  0.9854
LayerNorm       1.0000
RMSNorm         1.0000
BatchNorm1d     1.0000
BatchNorm2d     1.0000
==============  ======
"""

import brainstate

import disttrace as dt
from tests.nn.layer_case import LayerCase

_FLOORS = {
    "Conv1d": 0.98,
    "Conv2d": 0.97,
    "Conv3d": 0.98,
    "ScaledWSConv1d": 0.96,
    "ScaledWSConv2d": 0.94,
    "ScaledWSConv3d": 0.98,
}
_ZERO = brainstate.nn.init.ZeroInit()

_LAYERS = {
    "Conv1d": (lambda: dt.nn.Conv1d((6, 2), 3, 3, b_init=_ZERO), (6, 2), (6, 3)),
    "Conv2d": (lambda: dt.nn.Conv2d((4, 4, 2), 3, 3, stride=2, b_init=_ZERO), (4, 4, 2), (2, 2, 3)),
    "Conv3d": (lambda: dt.nn.Conv3d((3, 3, 3, 1), 2, 2, padding="VALID"), (3, 3, 3, 1), (2, 2, 2, 2)),
    "ScaledWSConv1d": (lambda: dt.nn.ScaledWSConv1d((6, 2), 3, 3, b_init=_ZERO), (6, 2), (6, 3)),
    "ScaledWSConv2d": (lambda: dt.nn.ScaledWSConv2d((4, 4, 2), 3, 3), (4, 4, 2), (4, 4, 3)),
    "ScaledWSConv3d": (lambda: dt.nn.ScaledWSConv3d((3, 3, 3, 1), 2, 2, padding=1), (3, 3, 3, 1), (4, 4, 4, 2)),
    "LayerNorm": (lambda: dt.nn.LayerNorm(5), (5,), (5,)),
    "RMSNorm": (lambda: dt.nn.RMSNorm(5), (5,), (5,)),
    "BatchNorm1d": (lambda: dt.nn.BatchNorm1d((3, 4)), (3, 4), (3, 4)),
    "BatchNorm2d": (lambda: dt.nn.BatchNorm2d((2, 2, 3)), (2, 2, 3), (2, 2, 3)),
}

CASES = [
    LayerCase(
        name,
        make,
        in_shape,
        out_shape,
        floors={"es_d_rtrl": _FLOORS[name]} if name in _FLOORS else {},
        es_exact=name not in _FLOORS,
    )
    for name, (make, in_shape, out_shape) in _LAYERS.items()
]
