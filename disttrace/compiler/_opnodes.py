"""Trace-op nodes: each trace op the analysis found, as a :class:`TraceOpNode`.

Owns, per op: its rule bound to the instance (the compiler reads the op body's
static arguments through ``_jax_compat`` and hands the rule plain data, an
:class:`~disttrace.ops._registry.OpBody`); the parameters its weights come from; the
hidden groups it reaches (none for a constant op); the check that its output
broadcasts onto each of them; its stable key (its weight paths, ``#n`` for a repeated
use of the same weights: :class:`~disttrace.compiler.TraceKey`); and the records of
ops that keep no trace (constant weights, same-step-only and memoryless weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._analysis import OpFinding, StepAnalysis
from disttrace.compiler._functional import path_str
from disttrace.compiler._graph import CompilationRecord, DiagnosticKind, HiddenGroup, TraceOpNode
from disttrace.compiler._groups import Grouping
from disttrace.compiler._trace import TracedStep
from disttrace.errors import CompilationError
from disttrace.ops._registry import ConvWindow, OpBody

__all__ = ["OpNodes", "build_op_nodes", "op_body"]


@dataclasses.dataclass(frozen=True)
class OpNodes:
    """The trace ops of a step and the records they produced."""

    ops: tuple[TraceOpNode, ...]
    records: tuple[CompilationRecord, ...]


def op_body(inner) -> OpBody:
    """The plain-data description of an op body (a closed jaxpr) its rule may specialise on."""
    return OpBody(convs=tuple(ConvWindow(**c) for c in jc.convolutions(inner)))


class _Keys:
    """Stable op keys: the weight paths, with ``#n`` on the n-th repeated use (tied weights)."""

    def __init__(self):
        self._uses: dict[str, int] = {}

    def next(self, weight_params: Sequence[tuple]) -> str:
        if not weight_params:
            return ""
        key = "+".join(path_str(p) for p in weight_params)
        uses = self._uses.get(key, 0)
        self._uses[key] = uses + 1
        return key if uses == 0 else f"{key}#{uses}"


def build_op_nodes(step: TracedStep, found: StepAnalysis, grouping: Grouping) -> OpNodes:
    """One :class:`TraceOpNode` per op the analysis found, in step order.

    Raises:
      CompilationError: (kind ``"op_output_shape"``) if an op's output does not
        broadcast onto a hidden group it reaches.
    """
    eqns = jc.eqns(step.closed)
    keys = _Keys()
    ops, records = [], []
    for j, f in enumerate(found.ops):
        eqn = eqns[f.eqn_index]
        inner = jc.call_jaxpr_of(eqn)
        rule = f.rule.specialize(op_body(inner))
        weight_params = tuple(sorted({step.leaf_owner[p] for p in f.weight_leaves}))
        # a constant op (no weight from a parameter) keeps no trace: it reaches no group
        group_ids = tuple(sorted({grouping.group_of[i] for i in f.hidden_reached})) if weight_params else ()
        y = jc.eqn_outvars(eqn)[0]
        for g in group_ids:
            _check_output_shape(j, rule.name, eqn, weight_params, grouping.groups[g], step.hidden_names)
        records += _op_records(j, rule.name, weight_params, group_ids, found.ops)
        ops.append(
            TraceOpNode(
                key=keys.next(weight_params),
                index=j,
                eqn_index=f.eqn_index,
                rule=rule,
                weight_params=weight_params,
                groups=group_ids,
                feeds_ops=tuple(sorted(f.feeds_ops)),
                inner=inner,
                operands=tuple(jc.shape_dtype(v) for v in jc.eqn_invars(eqn)),
                out=jc.shape_dtype(y),
            )
        )
    return OpNodes(tuple(ops), tuple(records))


def _check_output_shape(j, name, eqn, weight_params, group: HiddenGroup, hidden_names) -> None:
    y_shape = jc.aval_shape(jc.eqn_outvars(eqn)[0])
    try:
        ok = jnp.broadcast_shapes(y_shape, group.shape) == group.shape
    except ValueError:
        ok = False
    if not ok:
        raise CompilationError(
            f"trace op #{j} ({name}) has output shape {y_shape} but reaches hidden group "
            f"{[hidden_names[m] for m in group.members]} of shape {group.shape}",
            kind="op_output_shape",
            path=", ".join(path_str(p) for p in weight_params),
            equation=jc.eqn_to_str(eqn),
        )


def _op_records(j, name, weight_params, group_ids, findings: Sequence[OpFinding]) -> list[CompilationRecord]:
    """Records for an op that keeps no trace: constant weights, or weights reaching no group."""
    if not weight_params:
        return [
            CompilationRecord(
                DiagnosticKind.CONSTANT_OP,
                f"op{j}",
                f"trace op #{j} ({name}) has constant weights (no ParamState): no trace, no gradient; "
                "its input is cut like every trace op's",
            )
        ]
    if group_ids:
        return []
    # Same-step only if a downstream op (transitively) reaches a hidden state;
    # an op feeding only memoryless ops (a readout) loses nothing.
    same_step = _feeds_hidden(j, findings)
    kind = DiagnosticKind.SAME_STEP_ONLY if same_step else DiagnosticKind.NON_TEMPORAL_PARAM
    msg = (
        "reaches hidden states only through another trace op: it gets its exact same-step gradient"
        if same_step
        else "does not reach a hidden state: it gets its exact spatial gradient"
    )
    return [CompilationRecord(kind, path_str(p), f"trace op #{j} ({name}) {msg}") for p in weight_params]


def _feeds_hidden(j: int, findings: Sequence[OpFinding]) -> bool:
    """Whether an op fed (transitively) by op ``j``'s output reaches a hidden state."""
    seen, stack = set(), list(findings[j].feeds_ops)
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if findings[k].hidden_reached:
            return True
        stack.extend(findings[k].feeds_ops)
    return False
