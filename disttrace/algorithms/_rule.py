"""The learning-rule protocol: what one eligibility-trace rule is, per trace op.

A *learning rule* owns the trace state of one trace op and turns each step's factors
into a trace-space gradient. Everything else — running the model, reading the
learning signals and Jacobian blocks (``_factors``), scanning over time, chunking,
mapping trace-space gradients to parameters — is the learner's (``_online``), shared
by every rule. So a new rule costs one module: a :class:`LearningRule` class, and an
:class:`Algorithm` (a spec with ``rules(graph)``) that says which op gets which rule.

Per step ``t``, for a rule bound to op ``y = op(x, W)`` reaching hidden groups ``G``:

.. math::
    (\\tilde g_t, s_t) = \\mathrm{update}(s_{t-1}, F_t)

where ``F_t`` (:class:`OpFactors`) holds, per group, ``δ^{prev}_t = ∂L_t/∂h_{t-1}``,
``δ^{new}_t`` (partial ``∂L_t/∂h_t``), the per-neuron Jacobian block ``D_t`` and
``∂h_t/∂y_t``, plus the op's operands; ``\\tilde g_t`` is in the op rule's trace
space (``TraceOpRule.to_weights`` maps it to the weights).

Two kinds of rule, by where their gradient comes from (``dimension``):

- ``"param"``: the trace lives in the parameter dimension and gives
  ``δ^{prev}_t · E_{t-1}``; the same-step term ``∂L_t/∂W|_{direct}`` is added by the
  learner (D-RTRL, and any rule exact in the previous-hidden form, DESIGN.md §2);
- ``"io"``: the rule's gradient is all of the weight's gradient (the learner holds
  the weights constant in the direct term and computes ``δ^{new}``, and the bypass
  signals where the compiler finds bypass paths): ES-D-RTRL and e-prop-like rules.

Optional chunked form (``etrace_grad(..., chunk_size=U)``): a rule with
``chunked = True`` implements ``chunk_step`` (per step inside a chunk: advance what
must be advanced per step and return per-step factors to keep, stacked over the
chunk by ``lax.scan``) and ``chunk_end`` (once per chunk: contract the kept factors).
With ``chunk_direct = True`` the learner also holds the op's weights constant in the
direct term and hands the rule ``∂L_t/∂y_t`` as ``F_t.y_grad`` to fold into its
chunk contraction.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

__all__ = ["Algorithm", "LearningRule", "OpFactors", "tree_add"]


class OpFactors(NamedTuple):
    """One step's factors for one trace op (tuples are aligned with ``op.groups``).

    Attributes:
      operands: the op's operands this step (e.g. ``(x (B, I), W (I, O))``).
      g: per group ``∂h_t/∂y_t``, (B, K, N...).
      jac: per group the Jacobian blocks ``D_t``, (B, K, K, N...).
      delta_prev: per group ``∂L_t/∂h_{t-1}``, (B, K, N...).
      delta_new: per group the partial ``∂L_t/∂h_t`` (``"io"`` rules only, else ``()``).
      delta_bypass: per group the part of ``δ^{prev}`` that bypasses the group's new
        values, or ``None`` where the compiler proved it zero (``"io"`` rules).
      y_bypass: ``∂L_t/∂y_t`` along same-step paths that skip the op's groups (op
        output shape), or ``None`` (``"io"`` rules).
      y_grad: ``∂L_t/∂y_t`` over all same-step paths (op output shape) when the
        rule's chunked form folds the direct term (``chunk_direct``), else ``None``.
      t: () int32, time steps seen before this one (saturating; see ``OnlineState``).
    """

    operands: tuple
    g: tuple
    jac: tuple
    delta_prev: tuple
    delta_new: tuple
    delta_bypass: tuple
    y_bypass: Any
    y_grad: Any
    t: jax.Array


@runtime_checkable
class LearningRule(Protocol):
    """An eligibility-trace rule bound to one trace op (see the module docstring).

    Attributes:
      name: the rule's name (``"d_rtrl"``, ``"es_d_rtrl"``, ...).
      dimension: ``"param"`` or ``"io"`` (where its gradient comes from).
      chunked: whether ``chunk_step``/``chunk_end`` are implemented for this op.
      chunk_direct: in chunk mode, fold the same-step term (``F.y_grad``) itself.
      chunk_reads_weights: ``chunk_end`` needs the op's parameter-only operands.
    """

    name: str
    dimension: str
    chunked: bool
    chunk_direct: bool
    chunk_reads_weights: bool

    def init(self) -> Any:
        """The rule's zero state: a NamedTuple pytree (its fields document shapes)."""

    def zero_grad(self) -> tuple:
        """Zeros shaped like one trace-space gradient of the op."""

    def update(self, state: Any, f: OpFactors) -> tuple[tuple, Any]:
        """One step: ``(trace-space gradient, new state)``."""


@runtime_checkable
class Algorithm(Protocol):
    """An algorithm spec: which learning rule each trace op of a graph gets.

    ``rules(graph)`` returns one entry per ``graph.ops`` (in order): a
    :class:`LearningRule` bound to that op, or ``None`` for an op that reaches no
    hidden state (its weights get their exact same-step gradient only).
    """

    def rules(self, graph) -> tuple:
        """One :class:`LearningRule` or ``None`` per op of ``graph``."""


def tree_add(a: tuple, b: tuple) -> tuple:
    """Element-wise sum of two equally long tuples of arrays.

    Raises:
      ValueError: if the lengths differ (a rule whose ``zero_grad`` and ``update``
        disagree on the gradient layout).
    """
    return tuple(x + y for x, y in zip(a, b, strict=True))
