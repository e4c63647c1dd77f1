"""Trace-op registry: how the compiler recognises an op and what its trace rules are.

A *trace op* is a function ``y = op(x, *weights, *static_operands)`` that is linear in
its weight through a known structure. It is implemented as a ``jax.jit`` whose
function name is ``dt__<name>``; in a model's jaxpr it shows up as one ``jit``
equation with that name, which is how the compiler finds it (nested jits are inlined
first). Because it is an ordinary jit it works under ``jit``, ``vmap`` and ``grad``
with no extra rules.

Each op has a :class:`TraceOpRule` that tells the online algorithms how to keep its
eligibility traces. Shapes below use ``B`` for batch, ``K`` for the number of states in
the hidden group the op output reaches, and ``N...`` for that group's neuron shape (the
op output shape without batch).

D-RTRL (parameter dimension) keeps, per (op, group), a trace ``E`` of a rule-specific
layout with ``E_t = D_t ∘ E_{t-1} + g_t ⊗ x_t`` where ``g_t = ∂h_t/∂y_t`` (B, K, N...)
and ``D_t`` (B, K, K, N...) is the per-neuron Jacobian block of the group.

ES-D-RTRL (IO dimension) keeps an input trace (``es_input``) and contracts with the
learning signal through :meth:`TraceOpRule.es_grad`.

Gradients are produced in the rule's *trace space* (for most ops the weight itself)
and mapped to the op's weight operands by :meth:`TraceOpRule.to_weights`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["OP_PREFIX", "ConvWindow", "OpBody", "TraceOpRule", "get_rule", "register", "registered_names", "trace_op"]

OP_PREFIX = "dt__"

_RULES: dict[str, TraceOpRule] = {}


@dataclasses.dataclass(frozen=True)
class ConvWindow:
    """One convolution inside an op body, as plain data.

    Attributes:
      strides: one stride per spatial dim.
      padding: one ``(low, high)`` pair per spatial dim.
      lhs_dilation, rhs_dilation: input and kernel dilation per spatial dim.
      dimension_numbers: ``(lhs_spec, rhs_spec, out_spec)``, each the axis indices of
        (batch or out-feature, feature or in-feature, *spatial) as in
        ``jax.lax.ConvDimensionNumbers``.
      feature_group_count, batch_group_count: grouping of the convolution.
    """

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...] = ()
    rhs_dilation: tuple[int, ...] = ()
    dimension_numbers: tuple[tuple[int, ...], ...] = ()
    feature_group_count: int = 1
    batch_group_count: int = 1


@dataclasses.dataclass(frozen=True)
class OpBody:
    """What the compiler reads from one op instance's jitted body, for
    :meth:`TraceOpRule.specialize`: static arguments baked into the body, as plain data
    (rules never see JAX equations).

    Attributes:
      convs: every convolution in the body, in order.
    """

    convs: tuple[ConvWindow, ...] = ()


@dataclasses.dataclass(frozen=True)
class TraceOpRule:
    """How one trace-op family takes part in eligibility traces.

    Subclasses override the methods they support. ``supports_param_dim`` says
    whether the op has a D-RTRL trace layout; ``chunkable`` whether the chunked
    D-RTRL form (``outer_sum``/``input_vjp_sum``) is available; ``es_foldable``
    whether :meth:`es_grad` may be called once per chunk with time folded into its
    leading axis (see there). Both default to ``False``, so a user rule keeps the
    per-step forms unless it opts in. ``defers_direct`` (with ``chunkable``): in a
    chunked sequence an op of this rule that reaches no hidden group (a readout) gets
    its weight gradient from one :meth:`input_vjp_sum` per chunk of its stacked
    :meth:`chunk_input` and ``∂L/∂y``, not from a small product at every step; opt in
    only where the chunk input is the op's own input size (U·B of them are kept).

    Attributes:
      name: registry name; the jitted function is called ``dt__<name>``.
      input_argnum: operand index of the op input ``x`` (``None`` if the op has none).
      weight_argnums: operand indices of the learnable weights.
    """

    name: str
    input_argnum: int | None
    weight_argnums: tuple[int, ...]
    supports_param_dim: bool = True
    chunkable: bool = False
    es_foldable: bool = False
    static: tuple = ()
    defers_direct: bool = False  # last: positional construction of user rules keeps working

    def specialize(self, body: OpBody) -> TraceOpRule:
        """A copy of this rule bound to one op instance.

        Args:
          body: what the compiler read from the op's jitted body; a rule whose trace
            math needs the op's static arguments (a convolution's strides) reads them
            here.
        """
        return self

    # ---- D-RTRL -------------------------------------------------------------
    def dr_zeros(self, operands: Sequence[Any], batch: int, k: int, neuron_shape, dtype) -> jax.Array:
        """A zero trace for one (op, group) pair."""
        raise NotImplementedError(f"op {self.name!r} has no D-RTRL trace layout")

    def dr_outer(self, g: jax.Array, operands: Sequence[Any]) -> jax.Array:
        """The trace increment ``g ⊗ x`` for ``g`` of shape (B, K, N...)."""
        raise NotImplementedError

    def to_trace_neurons(self, hidden_like: jax.Array, operands: Sequence[Any]) -> jax.Array:
        """Maps a hidden-space array (B, K, [K,] N...) to the neuron axis of the trace.

        Applied to ``D`` and ``δ`` before :meth:`dr_decay` / :meth:`dr_contract`. The
        identity for most ops; a sparse op gathers each non-zero's output neuron.
        """
        return hidden_like

    def dr_decay(self, d: jax.Array, trace: jax.Array) -> jax.Array:
        """``D ∘ E`` for a Jacobian block ``d`` of shape (B, K, K, N...)."""
        raise NotImplementedError

    def dr_contract(self, delta: jax.Array, trace: jax.Array) -> jax.Array:
        """``Σ_b Σ_k δ[b, k] ∘ E[b, k]`` in trace space; ``delta`` is (B, K, N...)."""
        raise NotImplementedError

    # ---- chunked D-RTRL (matmul family) ---------------------------------------
    def outer_sum(self, gs: jax.Array, xs: jax.Array, operands: Sequence[Any]) -> Any:
        """``Σ_u g_u ⊗ x_u`` with ``gs`` (U, B, K, N...) and stacked inputs ``xs``."""
        raise NotImplementedError

    def input_vjp_sum(self, xs: jax.Array, cs: jax.Array, operands: Sequence[Any]) -> Any:
        """``Σ_u Σ_b x_u ⊗ c_u`` with ``cs`` (U, B, N...): the weight VJP of a chunk."""
        raise NotImplementedError

    def chunk_input(self, operands: Sequence[Any]) -> jax.Array:
        """The per-step input stored for the chunked form (default: ``x`` itself)."""
        return operands[self.input_argnum]

    # ---- ES-D-RTRL -----------------------------------------------------------
    def es_input(self, operands: Sequence[Any]) -> jax.Array:
        """The per-step input factor that is exponentially smoothed (B, ...)."""
        return operands[self.input_argnum]

    def es_grad(self, x_trace: jax.Array, signal: jax.Array, operands: Sequence[Any]) -> jax.Array:
        """Trace-space gradient ``Σ_b x_trace[b] ⊗ signal[b]`` (a tuple), summed over the
        leading axis: ``x_trace`` (B, ...) from :meth:`es_input`, ``signal`` (B, N...).

        With ``es_foldable`` and ``etrace_grad(..., chunk_size=U)`` it is called once
        per chunk with (U·B, ...) arrays, and ``operands`` are then those of a step run
        on zero inputs: the rule must not read the batch size, nor any operand that
        depends on the step's inputs, from ``operands``.
        """
        raise NotImplementedError(f"op {self.name!r} has no ES-D-RTRL rule")

    # ---- weights ---------------------------------------------------------------
    def trace_space_like(self, operands: Sequence[Any]) -> jax.ShapeDtypeStruct:
        """Shape of the trace-space gradient (default: the single weight)."""
        (i,) = self.weight_argnums
        w = operands[i]
        return jax.ShapeDtypeStruct(jnp.shape(w), jnp.result_type(w))

    def to_weights(self, tgrad: jax.Array, operands: Sequence[Any], op_fn: Callable) -> tuple:
        """Maps a trace-space gradient (a tuple) to one gradient per weight operand."""
        return tuple(tgrad)


def register(rule: TraceOpRule) -> TraceOpRule:
    """Registers a trace-op rule so the compiler recognises ``dt__<rule.name>`` jits.

    Args:
      rule: the rule; its name must be new.

    Raises:
      ValueError: if a rule of that name is already registered.

    Example: a user op is a ``jax.jit`` of a function named ``dt__myop`` plus a
    subclass of :class:`TraceOpRule` registered under ``"myop"``.
    """
    if not isinstance(rule, TraceOpRule):
        raise TypeError(f"register: rule must be a TraceOpRule, got {type(rule).__name__}")
    if rule.name in _RULES:
        raise ValueError(f"register: a trace op named {rule.name!r} is already registered")
    _RULES[rule.name] = rule
    return rule


def get_rule(jit_name: str | None) -> TraceOpRule | None:
    """The rule for a jit equation name (``dt__<name>``), or ``None`` if not a trace op."""
    if not jit_name or not jit_name.startswith(OP_PREFIX):
        return None
    return _RULES.get(jit_name[len(OP_PREFIX) :])


def registered_names() -> tuple[str, ...]:
    return tuple(sorted(_RULES))


def trace_op(name: str, fn: Callable, static_argnames: Sequence[str] = ()) -> Callable:
    """Wraps ``fn`` as the named jit the compiler recognises as trace op ``name``."""
    fn.__name__ = OP_PREFIX + name
    fn.__qualname__ = OP_PREFIX + name
    return jax.jit(fn, static_argnames=tuple(static_argnames))
