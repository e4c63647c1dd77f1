"""LoRA cases for the shared layer suite (``disttrace.nn.LoRA``; stateless, so the
default model integrates its output element-wise and D-RTRL is exact).

- ``LoRA``: the default ``init='zero_b'`` (``lora_b = 0``). The suite's per-parameter
  check passes (``lora_b`` gets a gradient, ``s·Aᵀ xᵀ δ``), but ``lora_a``'s gradient
  ``s·xᵀ δ Bᵀ`` is exactly zero at ``B = 0``, so its exactness check would be vacuous for
  ``lora_a``;
- ``LoRA-gaussian``: both factors random, so the comparison covers ``lora_a`` too;
- ``LoRA-frozen-base``: with a ``Linear`` base module, frozen by the layer: only the
  factors are parameters.

ES-D-RTRL cosine floors, measured 2026-11-23 (jax 0.10.2 CPU, float64, T=20, B=2,
seed 0; ``python -m tests.nn.measure_floors LoRA``) and rounded down to two decimals;
never lower them:

================  ======
case              ES
================  ======
LoRA              0.9373
LoRA-gaussian     0.9808
LoRA-frozen-base  0.9697
================  ======
"""

import disttrace as dt
from disttrace.nn._lora import LoRA
from tests.nn.layer_case import LayerCase

N_IN, RANK, N_OUT = 4, 2, 5

CASES = [
    LayerCase("LoRA", lambda: LoRA(N_IN, RANK, N_OUT, init="zero_b"), (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.93}),
    LayerCase(
        "LoRA-gaussian", lambda: LoRA(N_IN, RANK, N_OUT, init="gaussian"), (N_IN,), (N_OUT,), floors={"es_d_rtrl": 0.98}
    ),
    LayerCase(
        "LoRA-frozen-base",
        lambda: LoRA(N_IN, RANK, N_OUT, base_module=dt.nn.Linear(N_IN, N_OUT), init="zero_b", freeze_base=True),
        (N_IN,),
        (N_OUT,),
        floors={"es_d_rtrl": 0.96},
    ),
]
