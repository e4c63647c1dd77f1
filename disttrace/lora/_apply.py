"""Applying a joined tree's weights without forming ``W + s·A·B``.

Each helper takes a weight that is either a plain array (a FULL or frozen leaf) or a
:class:`LoRAWeight`, and routes every part through a trace op, so the same code runs
in a pure function under ``jax.grad`` and in a model that learns online:

================  =====================================================================
helper            with ``LoRAWeight(w, (A, B, s))``
================  =====================================================================
``matmul``        ``x @ w + s·(x A) B`` (``ops.matmul`` + ``ops.lora_matmul``);
                  ``transpose=True``: ``x @ wᵀ + s·(x Bᵀ) Aᵀ``
``conv``          ``conv(x, w) + s·conv(x, A_k) B`` with ``A_k`` = A as a
                  (*window, C, r) kernel (``ops.conv`` + ``lora_conv``)
``embedding``     ``w[idx] + s·A[idx] B`` (``ops.embedding`` + ``lora_embedding``)
================  =====================================================================

The base ``w`` is frozen: it enters through ``stop_gradient``, so ``jax.grad`` does no
work for it, and in a model it is read from a non-parameter state, so the online
learners keep no trace for it (a constant op). A bias goes through
``ops.element_wise``, so a trainable bias next to a frozen weight has its own
per-neuron trace instead of making the weight's op keep an (I, O) trace.

Trace memory (measured in ``tests/lora/test_memory.py``): under D-RTRL the LoRA ops
keep the trace of the effective dense weight, exactly the bytes of the dense layer's
trace (B·K·I·O for a matmul, B·K·P·F·O for a conv), never more; under ES-D-RTRL they
keep the dense op's O(B·(I+O)) input and output traces.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from disttrace.lora._factors import LoRAWeight
from disttrace.ops import conv as _conv
from disttrace.ops import element_wise, lora_conv, lora_embedding, lora_matmul
from disttrace.ops import embedding as _embedding
from disttrace.ops import matmul as _matmul

__all__ = ["conv", "embedding", "matmul", "merged_weight"]


def merged_weight(weight) -> jax.Array:
    """``W + s·A·B`` for a :class:`LoRAWeight` (materialised), the array itself otherwise.

    For ops with no factorised form; the online trace is the same either way (that of
    the dense weight), only the forward pass forms the (I, O) array.

    Example:
      >>> import jax.numpy as jnp
      >>> from disttrace import lora
      >>> w = lora.LoRAWeight(jnp.zeros((2, 3)), lora.LoRAFactors(jnp.ones((2, 1)), jnp.ones((1, 3)), 0.5))
      >>> lora.merged_weight(w)
      Array([[0.5, 0.5, 0.5],
             [0.5, 0.5, 0.5]], dtype=float32)
    """
    return weight.merged() if isinstance(weight, LoRAWeight) else jnp.asarray(weight)


def _add_bias(y, bias):
    return y if bias is None else y + element_wise(jnp.asarray(bias))


def _fold(fn, x, n_in: int):
    """Applies a (B, I) op to ``x`` of shape (..., I)."""
    lead = x.shape[:-1]
    if len(lead) <= 1:
        return fn(x)
    y = fn(x.reshape((math.prod(lead), n_in)))
    return y.reshape((*lead, y.shape[-1]))


def matmul(x: jax.Array, weight, bias: jax.Array | None = None, *, transpose: bool = False) -> jax.Array:
    """``x @ W (+ bias)`` (or ``x @ Wᵀ``) for a plain or LoRA weight, through trace ops.

    Args:
      x: input (..., I).
      weight: (I, O) array or :class:`LoRAWeight` (with ``transpose``: (O, I), e.g. a
        tied embedding table used as a readout).
      bias: optional (O,) bias.
      transpose: multiply by the transpose of ``weight``.

    Returns:
      (..., O).

    Raises:
      ValueError: if the shapes do not match (naming the argument).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((4, 3))}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> lora.matmul(jnp.ones((5, 4)), tree["w"]).shape
      (5, 3)
    """
    x = jnp.asarray(x)
    w = weight.w if isinstance(weight, LoRAWeight) else jnp.asarray(weight)
    if w.ndim != 2:
        raise ValueError(f"lora.matmul: argument 'weight' must be a matrix; got shape {w.shape}")
    n_in = w.shape[1] if transpose else w.shape[0]
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise ValueError(f"lora.matmul: argument 'x' must have shape (..., {n_in}); got {x.shape}")
    if not isinstance(weight, LoRAWeight):
        return _fold(lambda v: _matmul(v, w.T if transpose else w, bias), x, n_in)
    f = weight.factors
    base = jax.lax.stop_gradient(w)
    if transpose:
        # (s·A·B)ᵀ = s·Bᵀ·Aᵀ: lora_matmul(x, lora_b=Aᵀ (r, I_w), lora_a=Bᵀ (O_w, r))
        y = _fold(lambda v: _matmul(v, base.T) + lora_matmul(v, f.a.T, f.b.T, f.scale), x, n_in)
    else:
        y = _fold(lambda v: _matmul(v, base) + lora_matmul(v, f.b, f.a, f.scale), x, n_in)
    return _add_bias(y, bias)


def conv(x: jax.Array, weight, bias: jax.Array | None = None, *, strides=None, padding="SAME") -> jax.Array:
    """Channels-last convolution with a plain or LoRA kernel, through trace ops.

    Args:
      x: input (B, *spatial, C).
      weight: (*window, C, O) array or :class:`LoRAWeight` (factors A
        (prod(window)·C, r), B (r, O)).
      bias: optional (O,) bias.
      strides, padding: as :func:`disttrace.ops.conv`.

    Returns:
      (B, *spatial_out, O).

    Raises:
      ValueError: on mismatched shapes (naming the argument).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"k": jnp.ones((3, 2, 4))}  # window 3, 2 -> 4 channels
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> lora.conv(jnp.ones((1, 8, 2)), tree["k"]).shape
      (1, 8, 4)
    """
    if not isinstance(weight, LoRAWeight):
        return _conv(x, weight, bias, strides=strides, padding=padding)
    w, f = weight.w, weight.factors
    if w.ndim < 3:
        raise ValueError(f"lora.conv: argument 'weight' must be a (*window, C, O) kernel; got shape {w.shape}")
    y = _conv(x, jax.lax.stop_gradient(w), strides=strides, padding=padding)
    a_kernel = f.a.reshape((*w.shape[:-1], f.rank))
    y = y + lora_conv(x, f.b, a_kernel, f.scale, strides=strides, padding=padding)
    return _add_bias(y, bias)


def embedding(idx: jax.Array, weight) -> jax.Array:
    """Rows ``W[idx]`` of a plain or LoRA (V, O) table, through trace ops.

    With a :class:`LoRAWeight`: ``w[idx] + s·A[idx] @ B`` (a gather of r-wide rows).

    Args:
      idx: integer indices (B,) or ().
      weight: (V, O) array or :class:`LoRAWeight`.

    Returns:
      (B, O) rows.

    Raises:
      ValueError: on a non-integer ``idx`` or a non-matrix table.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"emb": jnp.ones((10, 3))}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> lora.embedding(jnp.array([1, 7]), tree["emb"]).shape
      (2, 3)
    """
    if not isinstance(weight, LoRAWeight):
        return _embedding(idx, weight)
    f = weight.factors
    return _embedding(idx, jax.lax.stop_gradient(weight.w)) + lora_embedding(idx, f.b, f.a, f.scale)
