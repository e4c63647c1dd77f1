"""Compiler: a model's one-step jaxpr -> :class:`ETraceGraph`.

Modules: ``_functional`` (brainstate states -> pytrees), ``_layout`` (the flat step
order, :class:`StepLayout`), ``_trace`` (tracing and inlining the step), ``_analysis``
(dataflow), ``_groups`` (hidden groups), ``_opnodes`` (trace-op nodes and keys),
``_states`` (parameter kinds, written aux states), ``_memory`` (aux states that
carry a gradient path, refused), ``_attributes`` (memory in Python attributes,
refused), ``_rng`` (brainstate's random key threaded through the step),
``_control_flow`` (cond/switch converted to select, inner scans and static-trip while
loops unrolled, under a :class:`ControlFlowPolicy`), ``_compile``
(the phase order), ``_graph`` (result types), ``_executor`` (running the step with
hooks), ``_bypass`` (bypass paths).

Which states carry memory across steps: ``HiddenState`` (traced: the online gradient
flows through it), ``ParamState`` (learned), any other ``State`` (carried without
gradient; allowed only if the loss does not depend on a learned value it carries:
running statistics and counters are fine), brainstate's global random key (threaded
under ``RNG_PATH`` when the model draws from it). A plain Python attribute may not. ``_jax_compat`` is the only module in disttrace that touches JAX
internals; every read of a jaxpr goes through it.
"""

from disttrace.compiler._bypass import bypass_groups as bypass_groups
from disttrace.compiler._bypass import bypass_ops as bypass_ops
from disttrace.compiler._compile import compile_etrace_graph as compile_etrace_graph
from disttrace.compiler._control_flow import ControlFlowPolicy as ControlFlowPolicy
from disttrace.compiler._executor import op_function as op_function
from disttrace.compiler._executor import op_operands as op_operands
from disttrace.compiler._executor import op_weights as op_weights
from disttrace.compiler._executor import run_step as run_step
from disttrace.compiler._functional import ModuleBinding as ModuleBinding
from disttrace.compiler._functional import path_str as path_str
from disttrace.compiler._graph import CompilationRecord as CompilationRecord
from disttrace.compiler._graph import DiagnosticKind as DiagnosticKind
from disttrace.compiler._graph import ETraceGraph as ETraceGraph
from disttrace.compiler._graph import HiddenGroup as HiddenGroup
from disttrace.compiler._graph import TraceKey as TraceKey
from disttrace.compiler._graph import TraceOpNode as TraceOpNode
from disttrace.compiler._jax_compat import is_tracer as is_tracer
from disttrace.compiler._layout import StepLayout as StepLayout
from disttrace.compiler._rng import RNG_PATH as RNG_PATH

__all__ = [
    "bypass_groups",
    "bypass_ops",
    "CompilationRecord",
    "ControlFlowPolicy",
    "DiagnosticKind",
    "ETraceGraph",
    "HiddenGroup",
    "ModuleBinding",
    "RNG_PATH",
    "StepLayout",
    "TraceKey",
    "TraceOpNode",
    "compile_etrace_graph",
    "is_tracer",
    "op_function",
    "op_operands",
    "op_weights",
    "path_str",
    "run_step",
]
