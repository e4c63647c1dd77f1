"""Element-wise trace op: ``y = fn(w)`` for per-neuron parameters.

Learnable time constants, thresholds, gains or biases enter a model as ``y = fn(w)``
and then act on the hidden state element-wise (``V_t = y * V_{t-1} + ...``). The
trace is kept in *hidden space*: for a group of K states with neuron shape N...,
``E`` has shape (B, K, N...) and

.. math::
    E_t = D_t ∘ E_{t-1} + g_t, \\qquad g_t = ∂h_t/∂y

(the Jacobian of ``y`` itself is folded in at the end, by a VJP of ``fn``, because
``w`` does not change within a sequence). Its memory is O(B·K·N) under every
algorithm, so ES-D-RTRL keeps this exact trace too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.ops._aliases import one_name
from disttrace.ops._blocks import apply_block
from disttrace.ops._registry import TraceOpRule, register, trace_op
from disttrace.units import attach, split

__all__ = ["ElementWiseRule", "element_wise"]


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums the broadcast axes of ``x`` away so that the result has ``shape``."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x.reshape(shape)


@dataclasses.dataclass(frozen=True)
class ElementWiseRule(TraceOpRule):
    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        return (jnp.zeros((batch, k, *neuron_shape), dtype),)

    def dr_outer(self, g, operands):
        return (g,)

    def dr_decay(self, d, trace):
        return (apply_block(d, trace[0]),)

    def dr_contract(self, delta, trace):
        # Summed over batch and group members; reduced to y's shape in to_weights.
        return (jnp.sum(delta * trace[0], axis=(0, 1)),)

    def trace_space_like(self, operands):
        raise NotImplementedError("element_wise gradients live in hidden space")

    def to_weights(self, tgrad, operands, op_fn):
        (g_hidden,) = tgrad
        y, vjp = jax.vjp(op_fn, *operands)
        return vjp(_sum_to_shape(g_hidden, y.shape).astype(y.dtype))


register(ElementWiseRule(name="element_wise", input_argnum=None, weight_argnums=(0,)))


def _dt_element_wise(w, fn):
    return fn(w)


_element_wise_op = trace_op("element_wise", _dt_element_wise, static_argnames=("fn",))


def _identity(w):
    return w


def element_wise(
    w: jax.Array | None = None,
    fn: Callable[[jax.Array], jax.Array] | None = None,
    *,
    weight: jax.Array | None = None,
    weight_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """A per-neuron parameter transformed element-wise: ``fn(w)``.

    Also accepts braintrace 0.2.8's signature ``element_wise(weight, *,
    weight_fn=None)``: ``weight`` and ``weight_fn`` are ``w`` and ``fn`` by their
    braintrace names (give one of each pair).

    Args:
      w: the parameter, any shape broadcastable to the hidden state it acts on
        (typically (N,) or a scalar).
      fn: an element-wise function (``jnp.exp``, ``jax.nn.sigmoid``, ...), hashable
        (a module-level function, not a fresh lambda per call, to avoid retracing).
        ``None`` means the identity.
      weight: braintrace's name for ``w``.
      weight_fn: braintrace's name for ``fn``.

    Returns:
      ``fn(w)``, same shape as ``w``.

    Raises:
      ValueError: if ``fn`` is not callable, or a value is given under both names.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.ops.element_wise(jnp.zeros(3), jnp.exp)
      Array([1., 1., 1.], dtype=float32)
      >>> dt.element_wise(weight=jnp.zeros(3), weight_fn=jnp.exp)
      Array([1., 1., 1.], dtype=float32)
    """
    w = one_name("element_wise", ("w", w), ("weight", weight))
    fn = one_name("element_wise", ("fn", fn), ("weight_fn", weight_fn), required=False)
    fn = _identity if fn is None else fn
    if not callable(fn):
        raise ValueError(f"element_wise: argument 'fn' must be callable; got {type(fn).__name__}")
    w, unit = split(w)
    return attach(_element_wise_op(jnp.asarray(w), fn), unit)
