"""The eligibility-trace graph: what the compiler found in one model step, as data.

Owns the compiler's result types: :class:`ETraceGraph` (the inlined step jaxpr with
its :class:`~disttrace.compiler.StepLayout`, hidden groups, trace ops, parameter kinds
and diagnostics), :class:`HiddenGroup`, :class:`TraceOpNode`, the one spelling of a
trace's name (:class:`TraceKey`) and the recorded decisions (:class:`CompilationRecord`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from disttrace.compiler._functional import path_str
from disttrace.compiler._layout import StepLayout
from disttrace.ops import TraceOpRule

__all__ = ["CompilationRecord", "DiagnosticKind", "ETraceGraph", "HiddenGroup", "TraceKey", "TraceOpNode"]


@dataclasses.dataclass(frozen=True, order=True)
class TraceKey:
    """The one name of an eligibility trace: which weight, which hidden group.

    Derived from state paths, never from positions in the jaxpr, so adding an
    unrelated layer to a model leaves every other trace's key unchanged and a
    checkpoint restores traces by name. Its string form is the key used in learner
    state dicts, partition-rule paths and checkpoints.

    Attributes:
      op: the trace op's name: its weight parameters' paths joined with ``"+"``
        (e.g. ``"layers.0.weight"``, ``"lora.A+lora.B"``); when several ops use the same
        weights (tied weights), the second and later in step order get ``"#1"``,
        ``"#2"``, ... appended.
      group: the path of the hidden group's first state (e.g. ``"layers.0.V"``), or
        ``None`` for a per-op trace (ES-D-RTRL's input trace).

    Example:
      >>> str(TraceKey("layers.0.weight", "layers.0.V"))
      'layers.0.weight->layers.0.V'
      >>> str(TraceKey("layers.0.weight"))
      'layers.0.weight'
    """

    op: str
    group: str | None = None

    def __str__(self) -> str:
        return self.op if self.group is None else f"{self.op}->{self.group}"


class DiagnosticKind(enum.Enum):
    """Decisions the compiler records (tests assert on these, not on message text)."""

    NON_TEMPORAL_PARAM = "non_temporal_param"  # spatial gradient only (e.g. a readout)
    SAME_STEP_ONLY = "same_step_only"  # reaches hidden only through another trace op
    UNUSED_PARAM = "unused_param"
    AUX_STATE_WRITTEN = "aux_state_written"  # a non-hidden state carries values across steps
    CONSTANT_OP = "constant_op"  # a trace op with constant (frozen) weights: cut, no trace
    COND_CONVERTED = "cond_converted"  # a cond/switch became select_n over its inlined branches
    SCAN_UNROLLED = "scan_unrolled"  # a fixed-length scan inlined once per iteration
    WHILE_UNROLLED = "while_unrolled"  # a while of static trip count inlined once per iteration
    CONTROL_FLOW_OPAQUE = "control_flow_opaque"  # a relevant loop left as it is (see ControlFlowPolicy)


@dataclasses.dataclass(frozen=True)
class CompilationRecord:
    kind: DiagnosticKind
    path: str
    message: str


@dataclasses.dataclass(frozen=True)
class HiddenGroup:
    """Hidden states that update each other element-wise (one K×K block per neuron).

    Attributes:
      index: position in :attr:`ETraceGraph.groups`.
      members: indices into :attr:`ETraceGraph.hidden_paths`, in block order.
      shape: common state shape (B, *N).
      dtype: common dtype.
      name: the path of its first state (``"layers.0.V"``), its stable name.
    """

    index: int
    members: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: Any
    name: str = ""

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def neuron_shape(self) -> tuple[int, ...]:
        return self.shape[1:]


@dataclasses.dataclass(frozen=True)
class TraceOpNode:
    """One trace-op equation of the step.

    Attributes:
      index: position in :attr:`ETraceGraph.ops`.
      eqn_index: position of the op's equation in the inlined step jaxpr.
      rule: the op's (instance-specialised) trace rule.
      weight_params: paths of the parameters the op's weights are computed from.
      groups: indices of the hidden groups its output reaches element-wise.
      feeds_ops: indices of ops whose input this op's output reaches (same step).
      inner: the op body as a closed jaxpr (evaluated for weight VJPs).
      operands: shape/dtype structs of the op's operands.
      out: shape/dtype struct of the op output ``y``.
      key: its stable name (:attr:`TraceKey.op`), ``""`` for a constant op.
    """

    index: int
    eqn_index: int
    rule: TraceOpRule
    weight_params: tuple[tuple, ...]
    groups: tuple[int, ...]
    feeds_ops: tuple[int, ...]
    inner: Any
    operands: tuple
    out: Any
    key: str = ""

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.out.shape)


@dataclasses.dataclass(frozen=True)
class ETraceGraph:
    """Result of :func:`compile_etrace_graph`.

    Attributes:
      jaxpr: the inlined step as a closed jaxpr whose invars and outvars are ordered
        by ``layout``.
      param_paths / hidden_paths / aux_paths: state paths in invar order.
      param_tree / aux_tree / arg_tree / out_tree: treedefs of those groups.
      hidden_shapes: shape of every hidden state.
      groups, ops: the hidden groups and trace ops.
      param_kinds: path -> ``"trace"``, ``"direct"`` or ``"unused"``.
      records: diagnostics.
      batch_size: leading axis of every hidden state.
      hidden_group_of: hidden index -> group index.
      layout: the flat order of the step's inputs and outputs (the only code that
        knows it: slice with ``layout.params(seq)``, ``layout.hidden_new(outs)``, ...).
    """

    jaxpr: Any
    param_paths: tuple
    hidden_paths: tuple
    aux_paths: tuple
    param_tree: Any
    aux_tree: Any
    arg_tree: Any
    out_tree: Any
    arg_shapes: tuple
    hidden_shapes: tuple
    groups: tuple[HiddenGroup, ...]
    ops: tuple[TraceOpNode, ...]
    param_kinds: dict
    records: tuple[CompilationRecord, ...]
    batch_size: int
    hidden_group_of: tuple[int, ...]  # hidden index -> group index
    layout: StepLayout

    def group_of(self, hidden_path) -> HiddenGroup:
        return self.groups[self.hidden_group_of[self.hidden_paths.index(hidden_path)]]

    def trace_key(self, op: int | TraceOpNode, group: int | None = None) -> str:
        """The string :class:`TraceKey` of op ``op``'s trace for group ``group`` (an index
        into :attr:`groups`), or of its per-op trace when ``group`` is ``None``."""
        node = self.ops[op] if isinstance(op, int) else op
        return str(TraceKey(node.key, None if group is None else self.groups[group].name))

    def __str__(self) -> str:
        lines = [f"ETraceGraph(batch_size={self.batch_size})"]
        lines.append(f"  hidden groups ({len(self.groups)}):")
        for g in self.groups:
            names = ", ".join(path_str(self.hidden_paths[m]) for m in g.members)
            lines.append(f"    [{g.index}] K={g.k} shape={g.shape}: {names}")
        lines.append(f"  trace ops ({len(self.ops)}):")
        for op in self.ops:
            ws = ", ".join(path_str(p) for p in op.weight_params) or "-"
            reach = ", ".join(f"group {g}" for g in op.groups) or (
                "no hidden state (same-step gradient)" if op.weight_params else "constant weights (no trace)"
            )
            lines.append(f"    [{op.index}] {op.name} y{op.out_shape} weights: {ws} -> {reach}")
            for g in op.groups:
                lines.append(f"        trace {self.trace_key(op, g)}")
        lines.append("  parameters:")
        for p, kind in self.param_kinds.items():
            lines.append(f"    {path_str(p)}: {kind}")
        if self.records:
            lines.append("  diagnostics:")
            for r in self.records:
                lines.append(f"    {r.kind.value}: {r.path}: {r.message}")
        return "\n".join(lines)
