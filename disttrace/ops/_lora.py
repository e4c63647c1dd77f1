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

Two more low-rank ops follow the same pattern (trace of the effective dense weight,
mapped to the factors by a VJP of ``A·B``):

- :func:`lora_embedding`: ``y = alpha · A[idx] @ B`` — a gather of rows of ``A``
  (V, r) then a product with ``B`` (r, O); in trace space a matmul with one-hot
  features (B, V), so D-RTRL keeps (B, K, V, O), as the dense ``embedding`` does.
- :func:`lora_conv`: ``y = alpha · conv(x, A) @ B`` with ``A`` a (*window, C, r)
  kernel and ``B`` (r, O): the effective kernel is ``alpha·A·B`` (*window, C, O), of
  rank r over (prod(window)·C) × O. In trace space it is the dense ``conv``: D-RTRL
  keeps (B, K, P, F, O), ES-D-RTRL the patches (B, P, F).

For these two, ``alpha`` multiplies ``B`` before the op (a parameter-only product, so
the learners' weight VJP carries it); their rules never need to know it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from disttrace import checks
from disttrace.ops._aliases import transformed
from disttrace.ops._conv import _ConvRule, _dimension_numbers
from disttrace.ops._element_wise import element_wise
from disttrace.ops._matmul import MatmulRule
from disttrace.ops._registry import register, trace_op
from disttrace.units import attach, in_unit, split

__all__ = ["lora_conv", "lora_embedding", "lora_matmul"]


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


def lora_matmul(
    x: jax.Array,
    *factors,
    lora_b: jax.Array | None = None,
    lora_a: jax.Array | None = None,
    B: jax.Array | None = None,  # noqa: N803 (braintrace's name)
    A: jax.Array | None = None,  # noqa: N803 (braintrace's name)
    alpha: float | None = None,
    bias: jax.Array | None = None,
    b_fn: Callable | None = None,
    a_fn: Callable | None = None,
    bias_fn: Callable | None = None,
) -> jax.Array:
    """Low-rank product ``alpha · x @ lora_a @ lora_b`` with eligibility traces.

    Two signatures, whose factor orders differ:

    - ours: ``lora_matmul(x, lora_b, lora_a, alpha=1.0)`` with ``lora_b`` (r, O) and
      ``lora_a`` (I, r): ``y = alpha · x @ lora_a @ lora_b``;
    - braintrace 0.2.8's: ``lora_matmul(x, B, A, *, alpha=1.0, bias=None, b_fn=None,
      a_fn=None, bias_fn=None)`` with ``B`` (I, r) and ``A`` (r, O):
      ``y = alpha · x @ b_fn(B) @ a_fn(A) + bias_fn(bias)``. braintrace's ``B`` is our
      ``lora_a`` and its ``A`` our ``lora_b``.

    Which one a call uses: by keyword, ``lora_b=``/``lora_a=`` (ours) or ``B=``/``A=``
    (braintrace's); three positional arguments after ``x`` are ours (braintrace's
    ``alpha`` is keyword-only); two positional factors are read by their shapes — only
    one order fits unless I = r = O, and that case is refused as ambiguous (pass the
    factors by keyword, or ``alpha`` positionally), never guessed. ``bias``, ``b_fn``
    (applied to the (I, r) factor) and ``a_fn`` (to the (r, O) factor) work with either
    form; gradients are taken with respect to the raw factors and bias. The bias is an
    :func:`~disttrace.ops.element_wise` term, so its trace is exact under every algorithm.

    Args:
      x: input, (B, I) or (I,).
      *factors: ``(lora_b, lora_a)``, ``(lora_b, lora_a, alpha)`` or braintrace's
        ``(B, A)``; or none, with the factors given by keyword.
      lora_b: (r, O) factor (ours).
      lora_a: (I, r) factor (ours).
      B: (I, r) factor (braintrace's name).
      A: (r, O) factor (braintrace's name).
      alpha: static scale (e.g. ``1/r`` or ``alpha/r``); default 1.
      bias: optional (O,) bias.
      b_fn: optional shape-preserving transform of the (I, r) factor.
      a_fn: optional shape-preserving transform of the (r, O) factor.
      bias_fn: optional element-wise transform of ``bias`` (hashable: a module-level
        function).

    Returns:
      (B, O) output.

    Raises:
      ValueError: on mismatched shapes, on ambiguous or mixed factor arguments, or on
        ``alpha`` given twice, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.lora_matmul(jnp.ones((2, 3)), jnp.ones((1, 4)), jnp.ones((3, 1)), 0.5).shape
      (2, 4)
      >>> dt.lora_matmul(jnp.ones((2, 3)), jnp.ones((3, 1)), jnp.ones((1, 4)), alpha=0.5).shape
      (2, 4)
    """
    # every factor's unit multiplies the output's whatever its role, so the units come off first
    (x, unit), given = split(x), [split(f) for f in (*factors[:2], lora_b, lora_a, B, A)]
    for _, factor_unit in given:
        unit = unit * factor_unit
    mants = [m for m, _ in given]
    x = jnp.asarray(x)
    factors = (*mants[:len(factors[:2])], *factors[2:])
    lora_b, lora_a, B, A = mants[len(factors[:2]):]  # noqa: N806 (braintrace's names)
    down, up, alpha = _lora_factors(x, factors, lora_b, lora_a, B, A, alpha)
    down = jnp.asarray(transformed("lora_matmul", "b_fn", b_fn, down))
    up = jnp.asarray(transformed("lora_matmul", "a_fn", a_fn, up))
    if bias is not None and jnp.shape(bias) != (up.shape[1],):
        raise ValueError(f"lora_matmul: argument 'bias' must have shape ({up.shape[1]},); got {jnp.shape(bias)}")
    y = _lora_op(x, up, down, checks.number("lora_matmul", "alpha", 1.0 if alpha is None else alpha))
    if bias is not None:
        y = y + element_wise(jnp.asarray(in_unit("lora_matmul", "bias", bias, unit)), bias_fn)
    return attach(y, unit)


def _lora_factors(x, factors, lora_b, lora_a, B, A, alpha):  # noqa: N803
    """``(down (I, r), up (r, O), alpha)`` from either signature of :func:`lora_matmul`."""
    who = "lora_matmul"
    ours_kw, theirs_kw = (lora_b, lora_a) != (None, None), (B, A) != (None, None)
    if len(factors) not in (0, 2, 3):
        raise ValueError(
            f"{who}: takes (x, lora_b, lora_a[, alpha]) or braintrace's (x, B, A); got {1 + len(factors)} "
            "positional arguments"
        )
    if factors and (ours_kw or theirs_kw):
        raise ValueError(f"{who}: give the factors positionally or by keyword (lora_b/lora_a or B/A), not both")
    if ours_kw and theirs_kw:
        raise ValueError(f"{who}: give the factors as lora_b/lora_a (ours) or as B/A (braintrace's), not a mix")
    if len(factors) == 3:
        if alpha is not None:
            raise ValueError(f"{who}: argument 'alpha' given both positionally and by keyword")
        lora_b, lora_a, alpha = factors
        ours_kw = True
    elif ours_kw or theirs_kw:
        pair = (lora_b, lora_a) if ours_kw else (B, A)
        names = ("lora_b", "lora_a") if ours_kw else ("B", "A")
        for name, value in zip(names, pair):
            if value is None:
                raise ValueError(f"{who}: argument {name!r} is required with {names[1 - names.index(name)]!r}")
    elif not factors:
        raise ValueError(f"{who}: the factors (lora_b, lora_a) or braintrace's (B, A) are required")
    if ours_kw:
        down, up = jnp.asarray(lora_a), jnp.asarray(lora_b)
    elif theirs_kw:
        down, up = jnp.asarray(B), jnp.asarray(A)
    else:  # two positional factors: read the order from the shapes
        p, q = (jnp.asarray(f) for f in factors)
        fits_ours, fits_theirs = _chain_fits(x, q, p), _chain_fits(x, p, q)
        if fits_ours and fits_theirs:
            raise ValueError(
                f"{who}: two positional factors of shapes {p.shape} and {q.shape} fit both our order (lora_b, "
                "lora_a) and braintrace's (B, A), with different results; pass them by keyword (lora_b=, lora_a= "
                "or B=, A=) or pass alpha positionally (ours)"
            )
        down, up = (q, p) if fits_ours else (p, q)
    if down.ndim != 2 or up.ndim != 2 or down.shape[1] != up.shape[0]:
        raise ValueError(
            f"{who}: the factors must be (I, r) and (r, O) — ours 'lora_a' and 'lora_b', braintrace's 'B' and "
            f"'A'; got {down.shape} and {up.shape} in that role"
        )
    if x.ndim not in (1, 2) or x.shape[-1] != down.shape[0]:
        raise ValueError(f"{who}: argument 'x' must have shape (B, {down.shape[0]}) or ({down.shape[0]},); got {x.shape}")
    return down, up, alpha


def _chain_fits(x, down, up) -> bool:
    """Whether ``x @ down @ up`` is well-formed for matrices."""
    return (
        down.ndim == 2 and up.ndim == 2 and x.ndim >= 1 and x.shape[-1] == down.shape[0]
        and down.shape[1] == up.shape[0]
    )


def _check_alpha(who: str, alpha) -> float:
    return checks.number(who, "alpha", alpha)


def _factor_product_vjp(product, g, *factors):
    """Gradients of the factors from ``g``, the gradient of ``product(*factors)``."""
    out, vjp = jax.vjp(product, *factors)
    return vjp(g.astype(out.dtype))


# ---- embedding rows: y = A[idx] @ B ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LoRAEmbeddingRule(MatmulRule):
    """Operands ``(idx, lora_b, lora_a)``; trace space (V, O) with one-hot features."""

    def features(self, operands):
        idx, _, lora_a = operands
        return jax.nn.one_hot(idx, lora_a.shape[0], dtype=lora_a.dtype)

    def _n_out(self, operands):
        return operands[1].shape[-1]

    def to_weights(self, tgrad, operands, op_fn):
        (g,) = tgrad
        _, lora_b, lora_a = operands
        return _factor_product_vjp(lambda b_, a_: a_ @ b_, g, lora_b, lora_a)


register(_LoRAEmbeddingRule(name="lora_embedding", input_argnum=0, weight_argnums=(1, 2)))


def _dt_lora_embedding(idx, lora_b, lora_a):
    return jnp.take(lora_a, idx, axis=0) @ lora_b


_lora_embedding_op = trace_op("lora_embedding", _dt_lora_embedding)


def lora_embedding(idx: jax.Array, lora_b: jax.Array, lora_a: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Low-rank embedding rows ``alpha · lora_a[idx] @ lora_b`` with eligibility traces.

    Equals ``embedding(idx, alpha · lora_a @ lora_b)`` without forming the (V, O) table.

    Args:
      idx: integer indices, shape (B,) or ().
      lora_b: (r, O) factor.
      lora_a: (V, r) factor (one row per vocabulary entry).
      alpha: scale.

    Returns:
      (B, O) rows (or (O,) for a scalar ``idx``).

    Raises:
      ValueError: on a non-integer ``idx``, mismatched factor shapes or a bad
        ``alpha``, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> from disttrace.ops._lora import lora_embedding
      >>> lora_embedding(jnp.array([0, 2]), jnp.ones((1, 4)), jnp.ones((3, 1)), 0.5).shape
      (2, 4)
    """
    idx, lora_b, lora_a = jnp.asarray(idx), jnp.asarray(lora_b), jnp.asarray(lora_a)
    if not jnp.issubdtype(idx.dtype, jnp.integer) or idx.ndim > 1:
        raise ValueError(f"lora_embedding: argument 'idx' must be integer of shape (B,) or (); got {idx.dtype}{list(idx.shape)}")
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[1] != lora_b.shape[0]:
        raise ValueError(
            f"lora_embedding: 'lora_a' must be (V, r) and 'lora_b' (r, O); got {lora_a.shape} and {lora_b.shape}"
        )
    alpha = _check_alpha("lora_embedding", alpha)
    return _lora_embedding_op(idx, lora_b * alpha, lora_a)


# ---- convolution: y = conv(x, A) @ B ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _LoRAConvRule(_ConvRule):
    """Operands ``(x, lora_a, lora_b)`` with ``lora_a`` a (*window, C, r) kernel.

    The trace is the dense conv's, over the effective (*window, C, O) kernel ``A·B``.
    """

    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        _, lora_a, lora_b = operands
        n_pos = math.prod(neuron_shape[:-1])
        f = math.prod(lora_a.shape[:-1])
        return (jnp.zeros((batch, k, n_pos, f, lora_b.shape[-1]), dtype),)

    def to_weights(self, tgrad, operands, op_fn):
        (g,) = tgrad
        _, lora_a, lora_b = operands
        nd = lora_a.ndim - 2
        # rows of g are ordered (C, *window): back to the (*window, C, O) kernel layout
        g = jnp.moveaxis(g.reshape((lora_a.shape[-2], *lora_a.shape[:nd], lora_b.shape[-1])), 0, nd)
        return _factor_product_vjp(lambda a_, b_: jnp.einsum("...cr,ro->...co", a_, b_), g, lora_a, lora_b)


register(_LoRAConvRule(name="lora_conv", input_argnum=0, weight_argnums=(1, 2)))


def _dt_lora_conv(x, lora_a, lora_b, strides, padding):
    nd = lora_a.ndim - 2
    z = lax.conv_general_dilated(x, lora_a, strides, padding, dimension_numbers=_dimension_numbers(nd))
    return z @ lora_b


_lora_conv_op = trace_op("lora_conv", _dt_lora_conv, static_argnames=("strides", "padding"))


def lora_conv(
    x: jax.Array, lora_b: jax.Array, lora_a: jax.Array, alpha: float = 1.0, *, strides=None, padding="SAME"
) -> jax.Array:
    """Low-rank convolution ``alpha · conv(x, lora_a) @ lora_b`` with eligibility traces.

    Equals ``conv(x, alpha · einsum('...cr,ro->...co', lora_a, lora_b))`` without forming
    the dense kernel: the input is convolved with r channels, then mixed to O.

    Args:
      x: input (B, *spatial, C), channels last.
      lora_b: (r, O) factor.
      lora_a: (*window, C, r) factor, a kernel with r output channels.
      alpha: scale.
      strides: per-spatial-dim strides (default 1).
      padding: ``"SAME"``, ``"VALID"`` or explicit pairs.

    Returns:
      (B, *spatial_out, O).

    Raises:
      ValueError: on mismatched ranks, channels or factor shapes, naming the argument.

    Example:
      >>> import jax.numpy as jnp
      >>> from disttrace.ops._lora import lora_conv
      >>> lora_conv(jnp.ones((2, 8, 3)), jnp.ones((2, 4)), jnp.ones((3, 3, 2))).shape
      (2, 8, 4)
    """
    x, lora_b, lora_a = jnp.asarray(x), jnp.asarray(lora_b), jnp.asarray(lora_a)
    nd = lora_a.ndim - 2
    if nd < 1 or nd > 3:
        raise ValueError(f"lora_conv: argument 'lora_a' must be a (*window, C, r) kernel with 1-3 window dims; got {lora_a.shape}")
    if lora_b.ndim != 2 or lora_b.shape[0] != lora_a.shape[-1]:
        raise ValueError(f"lora_conv: argument 'lora_b' must be ({lora_a.shape[-1]}, O) to match 'lora_a'; got {lora_b.shape}")
    if x.ndim != nd + 2 or x.shape[-1] != lora_a.shape[-2]:
        raise ValueError(
            f"lora_conv: argument 'x' must have shape (B, *spatial, {lora_a.shape[-2]}) with {nd} spatial dims; "
            f"got {x.shape}"
        )
    alpha = _check_alpha("lora_conv", alpha)
    strides = (1,) * nd if strides is None else tuple(int(s) for s in strides)
    if not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _lora_conv_op(x, lora_a, lora_b * alpha, strides=strides, padding=padding)
