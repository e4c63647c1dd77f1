"""Running a compiled step with the hooks the online algorithms need.

:func:`run_step` evaluates the graph's jaxpr equation by equation. At each trace op
it can (1) record the op's operands, (2) add a perturbation to the op output (to read
``∂h/∂y`` by a JVP), (3) stop the gradient through the op *input* (``cut``: the
diagonal approximation ignores paths from one neuron to another through trace
ops) and (4) stop the gradient through the op *weights* (weights whose gradient comes
from an IO-dimension trace instead of from the same-step VJP).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import jax

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._graph import ETraceGraph, TraceOpNode

__all__ = ["op_function", "op_operands", "op_weights", "run_step"]


def op_function(op: TraceOpNode):
    """The op body as a function of its operands (for weight VJPs)."""
    return lambda *operands: jc.interpret(op.inner, operands)[0]


def run_step(
    graph: ETraceGraph,
    param_leaves: Sequence[Any],
    hidden: Sequence[Any],
    aux_leaves: Sequence[Any],
    arg_leaves: Sequence[Any],
    *,
    perturb: dict[int, Any] | None = None,
    cut: bool = False,
    stop_weights: frozenset[int] = frozenset(),
    hidden_perturb: Sequence[Any] | None = None,
    detach_hidden: bool | Collection[int] = False,
):
    """One model step.

    Args:
      graph: the compiled graph.
      param_leaves, hidden, aux_leaves, arg_leaves: flat inputs in graph order.
      perturb: op index -> array added to that op's output.
      cut: stop gradients through every op's input operand.
      stop_weights: op indices whose weight operands get ``stop_gradient``.
      hidden_perturb: one array per hidden state, added to its new value where it
        is computed (so ``∂L/∂perturbation = ∂L_t/∂h_t`` through every later use).
      detach_hidden: with ``hidden_perturb``, stop the gradient of the new hidden values
        where they are computed: all of them (``True``) or those with these indices, so
        that gradients keep only the paths that bypass them.

    Returns:
      ``(out_leaves, hidden_new, aux_new_leaves, operands)`` where ``operands`` maps
      op index -> the tuple of operands it was called with.
    """
    hooks = _OpHooks(graph, perturb, cut, stop_weights)
    writes = None if hidden_perturb is None else _HiddenWrites(graph, hidden_perturb, detach_hidden)
    flat = graph.layout.flat_inputs(param_leaves, hidden, aux_leaves, arg_leaves)
    outs = jc.interpret(graph.jaxpr, flat, hook=hooks, on_write=writes)
    h_new = graph.layout.hidden_new(outs)
    if writes is not None:
        h_new = writes.finish(h_new)
    return graph.layout.out(outs), h_new, graph.layout.aux_new(outs), hooks.records


class _OpHooks:
    """The equation hook of :func:`run_step`: at each trace op, records its operands and
    applies the cut, the weight stops and the output perturbation."""

    def __init__(self, graph: ETraceGraph, perturb, cut: bool, stop_weights: frozenset[int]):
        self.by_eqn = {op.eqn_index: op for op in graph.ops}
        self.eqn_pos = {id(e): i for i, e in enumerate(jc.eqns(graph.jaxpr))}
        self.perturb, self.cut, self.stop_weights = perturb, cut, stop_weights
        self.records: dict[int, tuple] = {}

    def __call__(self, eqn, invals):
        op = self.by_eqn.get(self.eqn_pos.get(id(eqn), -1))
        if op is None:
            return None
        self.records[op.index] = tuple(invals)
        vals = list(invals)
        rule = op.rule
        if self.cut and rule.input_argnum is not None:
            vals[rule.input_argnum] = jax.lax.stop_gradient(vals[rule.input_argnum])
        if op.index in self.stop_weights:
            for wi in rule.weight_argnums:
                vals[wi] = jax.lax.stop_gradient(vals[wi])
        outs = jc.bind_equation(eqn, vals)
        if self.perturb is not None and op.index in self.perturb:
            outs = [outs[0] + self.perturb[op.index]] + outs[1:]
        return outs


class _HiddenWrites:
    """The write hook of :func:`run_step`: adds ``hidden_perturb`` to each new hidden value
    where it is computed, detaching it first where asked."""

    def __init__(self, graph: ETraceGraph, hidden_perturb: Sequence[Any], detach_hidden: bool | Collection[int]):
        self.hidden_perturb = hidden_perturb
        self.detach_hidden = detach_hidden
        self.where: dict[Any, int] = {}
        for i, v in enumerate(graph.layout.hidden_new(jc.outvars(graph.jaxpr))):
            if not jc.is_literal(v):
                self.where.setdefault(v, i)
        self.done: set[int] = set()

    def detached(self, i: int) -> bool:
        return bool(self.detach_hidden) if isinstance(self.detach_hidden, bool) else i in self.detach_hidden

    def _apply(self, i: int, val):
        return (jax.lax.stop_gradient(val) if self.detached(i) else val) + self.hidden_perturb[i]

    def __call__(self, var, val):
        i = self.where.get(var)
        if i is None:
            return val
        self.done.add(i)
        return self._apply(i, val)

    def finish(self, h_new: list) -> list:
        # a state passed through unchanged (or constant) is written by no equation
        return [h if i in self.done else self._apply(i, h) for i, h in enumerate(h_new)]


def op_operands(graph: ETraceGraph, param_leaves, hidden, aux_leaves, arg_leaves) -> dict[int, tuple]:
    """Every op's operands (op index -> tuple) for one step on the given values.

    Used where only the parameter-only operands matter (weights, constant index
    arrays): the hidden/aux/arg inputs then only fill the signature and under jit the
    rest of the step is dead code.
    """
    return run_step(graph, param_leaves, hidden, aux_leaves, arg_leaves)[3]


def op_weights(graph: ETraceGraph, param_leaves, hidden, aux_leaves, arg_leaves) -> dict[int, tuple]:
    """The weight operands of every op as functions of the parameters (see :func:`op_operands`)."""
    records = op_operands(graph, param_leaves, hidden, aux_leaves, arg_leaves)
    return {j: tuple(ops[i] for i in graph.ops[j].rule.weight_argnums) for j, ops in records.items()}
