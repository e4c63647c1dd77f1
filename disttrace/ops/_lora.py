"""Low-rank trace op: ``y = alpha · (x @ A) @ B``.

Shapes: ``x`` (B, I), ``lora_a`` (I, r), ``lora_b`` (r, O), ``y`` (B, O). The forward
pass never forms the dense ``A @ B``.

Online learning keeps the trace of the *effective dense weight* ``W = alpha·A·B``
(the op is a matmul in ``W``, so ``∂y/∂W = x``): D-RTRL memory equals that of a dense
layer (B·K·I·O), never more, and ES-D-RTRL memory is O(B·(I+O)). A trace-space
gradient ``G = ∂L/∂W`` (I, O) maps to the factors exactly, because ``A`` and ``B`` are
constant within a sequence:

.. math::
    ∂L/∂A = alpha · G B^T, \\qquad ∂L/∂B = alpha · A^T G.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from disttrace.ops._matmul import MatmulRule
from disttrace.ops._registry import register, trace_op

__all__ = ["lora_matmul"]


@dataclasses.dataclass(frozen=True)
class _LoRARule(MatmulRule):
    def _n_out(self, operands):
        return operands[1].shape[-1]

    def to_weights(self, tgrad, operands, op_fn):
        (g,) = tgrad
        _, lora_b, lora_a = operands
        # alpha is baked into op_fn; recover it from one evaluation-free identity:
        # d/dA <G, alpha A B> = alpha G B^T. We get alpha·(.) exactly via a VJP of
        # the dense product, so no constant is duplicated here.
        _, vjp = jax.vjp(lambda b_, a_: _alpha_dense(op_fn, a_, b_), lora_b, lora_a)
        return vjp(g.astype(lora_a.dtype))


def _alpha_dense(op_fn, lora_a, lora_b):
    """``alpha · A @ B`` computed by the op itself on an identity input."""
    eye = jnp.eye(lora_a.shape[0], dtype=lora_a.dtype)
    return op_fn(eye, lora_b, lora_a)


register(_LoRARule(name="lora_matmul", input_argnum=0, weight_argnums=(1, 2)))


def _dt_lora_matmul(x, lora_b, lora_a, alpha):
    return alpha * ((x @ lora_a) @ lora_b)


_lora_op = trace_op("lora_matmul", _dt_lora_matmul, static_argnames=("alpha",))


def lora_matmul(x: jax.Array, lora_b: jax.Array, lora_a: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Low-rank product ``alpha · x @ lora_a @ lora_b`` with eligibility traces.

    Args:
      x: input, (B, I) or (I,).
      lora_b: (r, O) factor.
      lora_a: (I, r) factor.
      alpha: static scale (e.g. ``1/r`` or ``alpha/r``).

    Returns:
      (B, O) output.

    Raises:
      ValueError: on mismatched shapes, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.lora_matmul(jnp.ones((2, 3)), jnp.ones((1, 4)), jnp.ones((3, 1)), 0.5).shape
      (2, 4)
    """
    x, lora_b, lora_a = jnp.asarray(x), jnp.asarray(lora_b), jnp.asarray(lora_a)
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[1] != lora_b.shape[0]:
        raise ValueError(
            f"lora_matmul: 'lora_a' must be (I, r) and 'lora_b' (r, O); got {lora_a.shape} and {lora_b.shape}"
        )
    if x.ndim not in (1, 2) or x.shape[-1] != lora_a.shape[0]:
        raise ValueError(f"lora_matmul: argument 'x' must end in {lora_a.shape[0]}; got shape {x.shape}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ValueError(f"lora_matmul: argument 'alpha' must be a float; got {alpha!r}")
    return _lora_op(x, lora_b, lora_a, float(alpha))
