"""``compile_etrace_graph``: a model's one step -> :class:`ETraceGraph`.

Owns the order of the compiler's phases, each in its own module:

1. check the hidden states and trace the step to one flat jaxpr with every non-op
   jit inlined, in :class:`StepLayout` order (``_trace``), its relevant
   ``cond``/``scan``/``while`` rewritten into flat equations under a
   :class:`ControlFlowPolicy` (``_control_flow``); a module attribute left
   holding a tracer is put back and refused (``_attributes``); a step that draws from
   brainstate's global key is traced again with the key threaded through it
   (``_rng``); check it keeps the states' shapes;
2. refuse memory the online gradient cannot see: a non-hidden state that carries a
   learned value the loss depends on (``_memory``);
3. the dataflow analysis: trace ops, element-wise hidden links, every structure
   that would make a gradient silently wrong (``_analysis``);
4. hidden groups, the union of element-wise links (``_groups``);
5. trace-op nodes with their rules, groups, keys and records (``_opnodes``);
6. parameter kinds and written aux states (``_states``).

Which states may carry memory across steps: a ``HiddenState`` (traced), a
``ParamState`` (learned, constant within a sequence), any other ``State`` (carried
without gradient: allowed only where the loss does not depend on a learned value it
carries, ``_memory``), never a plain Python attribute.
"""

from __future__ import annotations

import warnings

from disttrace.compiler._analysis import analyse
from disttrace.compiler._control_flow import ControlFlowPolicy
from disttrace.compiler._functional import ModuleBinding
from disttrace.compiler._graph import DiagnosticKind, ETraceGraph
from disttrace.compiler._groups import group_hidden
from disttrace.compiler._memory import check_aux_memory
from disttrace.compiler._opnodes import build_op_nodes
from disttrace.compiler._rng import is_key_state
from disttrace.compiler._states import aux_records, classify_params
from disttrace.compiler._trace import TracedStep, check_hidden_states, check_state_shapes, trace_step
from disttrace.errors import CompilationError

__all__ = ["compile_etrace_graph"]


def compile_etrace_graph(
    model,
    *example_args,
    binding: ModuleBinding | None = None,
    warn: bool = True,
    control_flow: ControlFlowPolicy | None = None,
) -> ETraceGraph:
    """Reads ``model(*example_args)`` as a jaxpr and returns its eligibility-trace graph.

    The model's states must already exist (``brainstate.nn.init_all_states``); every
    ``HiddenState`` must have a leading batch axis of the same size.

    Args:
      model: a ``brainstate.nn.Module`` whose step is ``model(*args)``.
      *example_args: one step's inputs (arrays or pytrees of arrays).
      binding: the state partition to use (default: computed from ``model``). If the
        step draws from brainstate's global key and ``binding`` does not thread it, the
        graph is compiled for ``binding.with_rng()`` (``RNG_PATH`` is then among
        ``graph.aux_paths``): run it with that binding.
      warn: emit a ``UserWarning`` for weights that get only their same-step gradient
        (they are recorded in ``graph.records`` either way).
      control_flow: how ``cond``/``switch``, ``scan`` and ``while`` inside the step are
        compiled (default ``ControlFlowPolicy()``: conds become ``select_n``, scans of
        length <= 16 and whiles of static trip count <= 16 are unrolled); each rewrite
        is recorded in ``graph.records``.

    Returns:
      The graph: hidden groups, trace ops and the groups they reach, diagnostics.
      ``print(graph)`` shows a summary.

    Raises:
      CompilationError: if a structure would make an online gradient silently wrong
        (a parameter outside trace ops reaching a hidden state, a hidden state updated
        inside a loop, a non-element-wise hidden-to-hidden dependence, ...), or the
        model keeps memory the online gradient cannot see (``kind="aux_state_memory"``:
        a non-hidden state; ``kind="leaked_tracer_attribute"``: a Python attribute,
        which is put back). ``err.path`` names the state or attribute.
      NotSupportedError: (a ``CompilationError``) for control flow no gradient can pass
        through as written: a ``while`` carrying a hidden state or parameter whose trip
        count is data-dependent or above ``control_flow.while_unroll_limit``, or a hidden
        state computed inside a loop left opaque (``kind="hidden_in_loop"``).
      ValueError: if the model has no hidden state or inconsistent batch axes.
      TypeError: if ``control_flow`` is not a ``ControlFlowPolicy``.
    """
    if control_flow is None:
        control_flow = ControlFlowPolicy()
    elif not isinstance(control_flow, ControlFlowPolicy):
        raise TypeError(
            "compile_etrace_graph: argument 'control_flow' must be a disttrace.compiler.ControlFlowPolicy "
            f"or None; got {type(control_flow).__name__}"
        )
    binding = ModuleBinding.of(model) if binding is None else binding
    batch = check_hidden_states(binding.values()[1])
    binding, step = _trace(binding, example_args, control_flow)
    check_state_shapes(step)
    check_aux_memory(step, {p: type(s).__name__ for p, s in binding.aux.items()})
    found = analyse(step.closed, step.layout, step.leaf_names, step.hidden_names)
    grouping = group_hidden(found.hidden_links, step.hidden_values, step.hidden_names)
    nodes = build_op_nodes(step, found, grouping)
    param_kinds, unused = classify_params(step, nodes.ops, found)
    key_paths = {p for p, s in binding.aux.items() if is_key_state(s)}
    records = step.records + nodes.records + unused + aux_records(step, key_paths)
    for r in records if warn else ():
        if r.kind is DiagnosticKind.SAME_STEP_ONLY:
            warnings.warn(f"disttrace: {r.path}: {r.message}", stacklevel=2)
    return ETraceGraph(
        jaxpr=step.closed,
        param_paths=tuple(step.params),
        hidden_paths=step.hidden_paths,
        aux_paths=tuple(step.aux),
        param_tree=step.param_tree,
        aux_tree=step.aux_tree,
        arg_tree=step.arg_tree,
        out_tree=step.out_tree,
        arg_shapes=tuple((tuple(a.shape), a.dtype) for a in step.arg_leaves),
        hidden_shapes=tuple(tuple(h.shape) for h in step.hidden_values),
        groups=grouping.groups,
        ops=nodes.ops,
        param_kinds=param_kinds,
        records=records,
        batch_size=batch,
        hidden_group_of=grouping.group_of,
        layout=step.layout,
    )


def _trace(
    binding: ModuleBinding, example_args: tuple, control_flow: ControlFlowPolicy
) -> tuple[ModuleBinding, TracedStep]:
    """Traces the step; a step that draws from brainstate's global key which ``binding``
    does not thread is traced again with ``binding.with_rng()``. Returns the binding used."""
    try:
        return binding, trace_step(binding.pure(), binding.values(), example_args, control_flow)
    except CompilationError as err:
        if err.kind != "unbound_randomness":
            raise
    binding = binding.with_rng()
    return binding, trace_step(binding.pure(), binding.values(), example_args, control_flow)
