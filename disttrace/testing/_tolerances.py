"""Tolerances of the test suite's exactness checks.

An *exact* comparison is one where theory says two computations give the same number
and only floating-point rounding separates them: D-RTRL against the BPTT oracle on a
model whose hidden dynamics are element-wise, a chunked run against the step-by-step
one (the chunked update is the per-step one reassociated), split calls against one
call, ES-D-RTRL against D-RTRL while its traces are still exact. In float64 these agree
to a few units of rounding; a tolerance there is a bound on rounding, never a margin
for an approximation.
"""

__all__ = ["EXACT_F64_ATOL"]

EXACT_F64_ATOL: float = 1e-12
"""Absolute tolerance (``rtol=0``) of every float64 exactness comparison.

Measured 2026-12-02 (jax 0.10.2 CPU, float64) over the 324 ``assert_allclose`` calls of the
145 exact tests in tests/algorithms, compiler, nn, lora and golden: max |Δ| = 2.8e-14
(``test_online_gradient_against_bptt[Expon-d_rtrl]``, gradients up to 135 in magnitude,
i.e. 2e-16 relative); every other comparison <= 3.6e-15, most <= 1e-15. The constant
leaves a factor of ~35 over the largest and ~300 over the typical deviation, for other
BLAS/XLA builds' reassociation.

A comparison that needs more is not exact (an approximation, a float32 path, or a bug);
do not raise this constant to make one pass.
"""
