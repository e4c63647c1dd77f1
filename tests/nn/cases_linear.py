"""Linear-family cases for the shared layer suite (stateless layers: the default model
integrates their output element-wise, so D-RTRL is exact).

ES-D-RTRL cosine floors, measured 2026-11-23 (jax 0.10.2 CPU, float64, T=20, B=2,
seed 0; ``python -m tests.nn.measure_floors``) and rounded down to two decimals;
never lower them:

==============  ======
case            ES
==============  ======
Linear          0.6804
SignedWLinear   0.8428
ScaledWSLinear  0.8465
SparseLinear    0.9896
GroupedLinear   0.9638
Embedding       0.9869
==============  ======
"""

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

import disttrace as dt
from tests.nn.layer_case import LayerCase

N_IN, N_OUT, VOCAB = 4, 5, 7


def _sparse():
    dense = np.where(np.arange(N_IN * N_OUT).reshape(N_IN, N_OUT) % 3 == 0, 0.7, 0.0)
    return dt.nn.SparseLinear(u.sparse.COO.fromdense(jnp.asarray(dense)), b_init=jnp.zeros(N_OUT) + 0.1)


def _ints(key, shape):
    return jax.random.randint(key, shape, 0, VOCAB)


CASES = [
    LayerCase("Linear", lambda: dt.nn.Linear(N_IN, N_OUT), (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.68}),
    LayerCase(
        "SignedWLinear",
        lambda: dt.nn.SignedWLinear(N_IN, N_OUT, w_sign=jnp.array([[1.0], [-1.0], [1.0], [-1.0]])),
        (N_IN,),
        (N_OUT,),
        floors={"es_d_rtrl": 0.84},
    ),
    LayerCase("ScaledWSLinear", lambda: dt.nn.ScaledWSLinear(N_IN, N_OUT), (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.84}),
    LayerCase("SparseLinear", _sparse, (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.98}),
    LayerCase("GroupedLinear", lambda: dt.nn.GroupedLinear(3, N_IN, 2), (3, N_IN), (3, 2), floors={"es_d_rtrl": 0.96}),
    LayerCase(
        "Embedding",
        lambda: dt.nn.Embedding(VOCAB, N_OUT, padding_idx=0),
        (),
        (N_OUT,),
        floors={"es_d_rtrl": 0.98},
        make_input=_ints,
        bad_input=lambda: jnp.ones((2,)),
    ),
]
