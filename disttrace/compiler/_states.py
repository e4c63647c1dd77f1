"""What the compiler records about the states that are not hidden states.

Owns the last phases of :func:`~disttrace.compiler.compile_etrace_graph`: each
parameter's kind (``"trace"``: a trace op's weight reaching a hidden group;
``"direct"``: used, with its exact same-step gradient; ``"unused"``), and which aux
states the step writes (carried across steps without gradient; ``_memory`` has
already refused those whose carried value the loss depends on), each decision as a
:class:`~disttrace.compiler.CompilationRecord`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import jax

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._analysis import StepAnalysis
from disttrace.compiler._functional import path_str
from disttrace.compiler._graph import CompilationRecord, DiagnosticKind, TraceOpNode
from disttrace.compiler._trace import TracedStep

__all__ = ["aux_records", "classify_params"]


def classify_params(
    step: TracedStep, ops: Sequence[TraceOpNode], found: StepAnalysis
) -> tuple[dict, tuple[CompilationRecord, ...]]:
    """``(param path -> kind, records of the unused ones)``, in parameter order."""
    trace_params = {p for op in ops if op.groups for p in op.weight_params}
    used = {step.leaf_owner[p] for p in found.used_params}
    kinds, records = {}, []
    for p in step.params:
        if p in trace_params:
            kinds[p] = "trace"
        elif p in used:
            kinds[p] = "direct"
        else:
            kinds[p] = "unused"
            records.append(CompilationRecord(DiagnosticKind.UNUSED_PARAM, path_str(p), "not used by the step"))
    return kinds, tuple(records)


def aux_records(step: TracedStep, key_paths: Collection = ()) -> tuple[CompilationRecord, ...]:
    """A record per aux state the step writes (its new value is not its old one passed
    through), random keys (``key_paths``) excepted: a key advances by design."""
    aux_in = step.layout.aux(jc.invars(step.closed))
    aux_out = step.layout.aux_new(jc.outvars(step.closed))
    records, leaf = [], 0
    for p, value in step.aux.items():
        n_leaves = len(jax.tree.leaves(value))
        written = any(aux_out[i] is not aux_in[i] for i in range(leaf, leaf + n_leaves))
        if written and p not in key_paths:
            records.append(
                CompilationRecord(
                    DiagnosticKind.AUX_STATE_WRITTEN,
                    path_str(p),
                    "non-hidden state: carried across steps without gradient (make it a HiddenState to trace it)",
                )
            )
        leaf += n_leaves
    return tuple(records)
