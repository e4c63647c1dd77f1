"""``compile_etrace_graph``: a model's one step -> :class:`ETraceGraph`."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._analysis import analyse
from disttrace.compiler._functional import ModuleBinding, path_str
from disttrace.compiler._graph import CompilationRecord, DiagnosticKind, ETraceGraph, HiddenGroup, TraceOpNode
from disttrace.errors import CompilationError
from disttrace.ops import get_rule

__all__ = ["compile_etrace_graph"]


def _leaf_names(paths, values) -> list[str]:
    names = []
    for p in paths:
        leaves = jax.tree_util.tree_leaves_with_path(values[p])
        for kp, _ in leaves:
            suffix = "".join(str(k) for k in kp)
            names.append(path_str(p) + suffix)
    return names


def _leaf_owner(paths, values) -> list[tuple]:
    owner = []
    for p in paths:
        owner += [p] * len(jax.tree.leaves(values[p]))
    return owner


def compile_etrace_graph(
    model, *example_args, binding: ModuleBinding | None = None, warn: bool = True
) -> ETraceGraph:
    """Reads ``model(*example_args)`` as a jaxpr and returns its eligibility-trace graph.

    The model's states must already exist (``brainstate.nn.init_all_states``); every
    ``HiddenState`` must have a leading batch axis of the same size.

    Args:
      model: a ``brainstate.nn.Module`` whose step is ``model(*args)``.
      *example_args: one step's inputs (arrays or pytrees of arrays).
      binding: the state partition to use (default: computed from ``model``).
      warn: emit a ``UserWarning`` for weights that get only their same-step gradient
        (they are recorded in ``graph.records`` either way).

    Returns:
      The graph: hidden groups, trace ops and the groups they reach, diagnostics.
      ``print(graph)`` shows a summary.

    Raises:
      CompilationError: if a structure would make an online gradient silently wrong
        (a parameter outside trace ops reaching a hidden state, a hidden state updated
        inside a loop, a non-element-wise hidden-to-hidden dependence, ...).
      ValueError: if the model has no hidden state or inconsistent batch axes.
    """
    binding = ModuleBinding.of(model) if binding is None else binding
    params, hidden, aux = binding.values()
    if not hidden:
        raise ValueError(
            "compile_etrace_graph: the model has no HiddenState; create them in init_state(batch_size) "
            "and call brainstate.nn.init_all_states(model, batch_size=B) first"
        )
    hidden_paths = tuple(hidden)
    batch = None
    for p, v in hidden.items():
        if not isinstance(v, jax.Array) or v.ndim < 2:
            raise ValueError(
                f"compile_etrace_graph: hidden state {path_str(p)!r} must be an array of shape (B, ...) with "
                f"a batch axis; got {getattr(v, 'shape', type(v).__name__)}"
            )
        if batch is None:
            batch = v.shape[0]
        elif v.shape[0] != batch:
            raise ValueError(
                f"compile_etrace_graph: hidden state {path_str(p)!r} has batch {v.shape[0]} but others have {batch}"
            )

    param_leaves, param_tree = jax.tree.flatten(params)
    aux_leaves, aux_tree = jax.tree.flatten(aux)
    arg_leaves, arg_tree = jax.tree.flatten(example_args)
    arg_leaves = [jnp.asarray(a) for a in arg_leaves]
    hidden_list = [hidden[p] for p in hidden_paths]
    n_p, n_h, n_a = len(param_leaves), len(hidden_list), len(aux_leaves)
    pure = binding.pure()
    out_tree_box = []

    def flat_step(*leaves):
        ps = jax.tree.unflatten(param_tree, leaves[:n_p])
        hs = dict(zip(hidden_paths, leaves[n_p : n_p + n_h]))
        ax = jax.tree.unflatten(aux_tree, leaves[n_p + n_h : n_p + n_h + n_a])
        args = jax.tree.unflatten(arg_tree, leaves[n_p + n_h + n_a :])
        out, h_new, a_new = pure(ps, hs, ax, *args)
        out_leaves, out_tree = jax.tree.flatten(out)
        out_tree_box.append(out_tree)
        return (*out_leaves, *[h_new[p] for p in hidden_paths], *jax.tree.leaves(a_new))

    flat_args = [*param_leaves, *hidden_list, *aux_leaves, *arg_leaves]
    structs = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in flat_args]
    raw = jc.make_closed_jaxpr(flat_step, *structs)
    not_op = lambda eqn: get_rule(jc.jit_name(eqn)) is None
    closed = jc.make_closed_jaxpr(lambda *a: jc.interpret(raw, a, inline_jit=not_op), *structs)
    for i, p in enumerate(hidden_paths):
        new_aval = closed.jaxpr.outvars[len(closed.jaxpr.outvars) - n_h - n_a + i].aval
        if tuple(new_aval.shape) != tuple(hidden_list[i].shape) or new_aval.dtype != hidden_list[i].dtype:
            raise ValueError(
                f"compile_etrace_graph: hidden state {path_str(p)!r} changes from "
                f"{hidden_list[i].dtype}{list(hidden_list[i].shape)} to {new_aval.dtype}{list(new_aval.shape)} "
                "in one step; a step must keep each state's shape and dtype"
            )

    leaf_names = _leaf_names(tuple(params), params)
    leaf_owner = _leaf_owner(tuple(params), params)
    hidden_names = [path_str(p) for p in hidden_paths]
    found = analyse(closed, n_p, n_h, n_a, leaf_names, hidden_names)

    # hidden groups: union-find over element-wise links
    parent = list(range(n_h))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in found.hidden_links:
        parent[root(i)] = root(j)
    roots = sorted({root(i) for i in range(n_h)}, key=lambda r: min(i for i in range(n_h) if root(i) == r))
    groups, group_of = [], [0] * n_h
    for gi, r in enumerate(roots):
        members = tuple(i for i in range(n_h) if root(i) == r)
        shapes = {tuple(hidden_list[m].shape) for m in members}
        dtypes = {hidden_list[m].dtype for m in members}
        if len(shapes) > 1 or len(dtypes) > 1:
            desc = ", ".join(f"{hidden_names[m]}: {hidden_list[m].dtype}{list(hidden_list[m].shape)}" for m in members)
            raise CompilationError(
                f"hidden states that update each other element-wise must share shape and dtype; got {desc}",
                kind="group_shape_mismatch",
                path=hidden_names[members[0]],
            )
        for m in members:
            group_of[m] = gi
        groups.append(HiddenGroup(gi, members, shapes.pop(), dtypes.pop()))

    ops = []
    records = []
    for j, f in enumerate(found.ops):
        eqn = closed.jaxpr.eqns[f.eqn_index]
        inner = jc.call_jaxpr_of(eqn)
        rule = f.rule.specialize(inner.jaxpr.eqns)
        weight_params = tuple(sorted({leaf_owner[p] for p in f.weight_leaves}))
        # a constant op (no weight from a parameter) keeps no trace: it reaches no group
        group_ids = tuple(sorted({group_of[i] for i in f.hidden_reached})) if weight_params else ()
        y_shape = tuple(eqn.outvars[0].aval.shape)
        for g in group_ids:
            try:
                jnp.broadcast_shapes(y_shape, groups[g].shape)
                ok = jnp.broadcast_shapes(y_shape, groups[g].shape) == groups[g].shape
            except ValueError:
                ok = False
            if not ok:
                raise CompilationError(
                    f"trace op #{j} ({rule.name}) has output shape {y_shape} but reaches hidden group "
                    f"{[hidden_names[m] for m in groups[g].members]} of shape {groups[g].shape}",
                    kind="op_output_shape",
                    path=", ".join(path_str(p) for p in weight_params),
                    equation=jc.eqn_to_str(eqn),
                )
        if not weight_params:
            records.append(
                CompilationRecord(
                    DiagnosticKind.CONSTANT_OP,
                    f"op{j}",
                    f"trace op #{j} ({rule.name}) has constant weights (no ParamState): no trace, no gradient; "
                    "its input is cut like every trace op's",
                )
            )
        elif not group_ids:
            # Same-step only if a downstream op (transitively) reaches a hidden state;
            # an op feeding only memoryless ops (a readout) loses nothing.
            same_step = _feeds_hidden(j, found.ops)
            kind = DiagnosticKind.SAME_STEP_ONLY if same_step else DiagnosticKind.NON_TEMPORAL_PARAM
            msg = (
                "reaches hidden states only through another trace op: it gets its exact same-step gradient"
                if same_step
                else "does not reach a hidden state: it gets its exact spatial gradient"
            )
            for p in weight_params:
                records.append(CompilationRecord(kind, path_str(p), f"trace op #{j} ({rule.name}) {msg}"))
        ops.append(
            TraceOpNode(
                index=j,
                eqn_index=f.eqn_index,
                rule=rule,
                weight_params=weight_params,
                groups=group_ids,
                feeds_ops=tuple(sorted(f.feeds_ops)),
                inner=inner,
                operands=tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars),
                out=jax.ShapeDtypeStruct(y_shape, eqn.outvars[0].aval.dtype),
            )
        )

    param_kinds = {}
    trace_params = {p for op in ops if op.groups for p in op.weight_params}
    used = {leaf_owner[p] for p in found.used_params}
    for p in params:
        if p in trace_params:
            param_kinds[p] = "trace"
        elif p in used:
            param_kinds[p] = "direct"
        else:
            param_kinds[p] = "unused"
            records.append(CompilationRecord(DiagnosticKind.UNUSED_PARAM, path_str(p), "not used by the step"))
    # An aux state is written if its new value is not its old value passed through.
    jaxpr = closed.jaxpr
    n_outs = len(jaxpr.outvars)
    aux_in, aux_out = jaxpr.invars[n_p + n_h : n_p + n_h + n_a], jaxpr.outvars[n_outs - n_a :]
    written, leaf = [], 0
    for p, value in aux.items():
        n_leaves = len(jax.tree.leaves(value))
        if any(aux_out[i] is not aux_in[i] for i in range(leaf, leaf + n_leaves)):
            written.append(p)
        leaf += n_leaves
    for p in written:
        records.append(
            CompilationRecord(
                DiagnosticKind.AUX_STATE_WRITTEN,
                path_str(p),
                "non-hidden state: carried across steps without gradient (make it a HiddenState to trace it)",
            )
        )
    for r in records if warn else ():
        if r.kind is DiagnosticKind.SAME_STEP_ONLY:
            warnings.warn(f"disttrace: {r.path}: {r.message}", stacklevel=2)

    return ETraceGraph(
        jaxpr=closed,
        param_paths=tuple(params),
        hidden_paths=hidden_paths,
        aux_paths=tuple(aux),
        param_tree=param_tree,
        aux_tree=aux_tree,
        arg_tree=arg_tree,
        out_tree=out_tree_box[-1],
        arg_shapes=tuple((tuple(a.shape), a.dtype) for a in arg_leaves),
        hidden_shapes=tuple(tuple(h.shape) for h in hidden_list),
        groups=tuple(groups),
        ops=tuple(ops),
        param_kinds=param_kinds,
        records=tuple(records),
        batch_size=batch,
        hidden_group_of=tuple(group_of),
    )


def _feeds_hidden(j: int, ops) -> bool:
    """Whether an op fed (transitively) by op ``j``'s output reaches a hidden state."""
    seen, stack = set(), list(ops[j].feeds_ops)
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if ops[k].hidden_reached:
            return True
        stack.extend(ops[k].feeds_ops)
    return False
