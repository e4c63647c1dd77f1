"""Tracing a model's one step into a flat, inlined jaxpr.

Owns the first phases of :func:`~disttrace.compiler.compile_etrace_graph`: checking
the hidden states (arrays with one common batch axis), tracing ``model(*args)`` as a
pure function of flat leaves in :class:`~disttrace.compiler.StepLayout` order,
inlining every jit that is not a trace op (so the analysis sees one flat list of
equations in which each trace op is one call), rewriting the control flow that
matters into flat equations (``_control_flow``), and checking that the step keeps each
hidden state's shape and dtype. The result, a :class:`TracedStep`, also carries the
readable names of the state leaves that later phases use in keys and messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._control_flow import ControlFlowPolicy, canonicalize_control_flow
from disttrace.compiler._functional import path_str
from disttrace.compiler._layout import StepLayout
from disttrace.compiler._rng import global_key_state
from disttrace.ops import get_rule

__all__ = ["TracedStep", "check_hidden_states", "check_state_shapes", "trace_step"]


@dataclasses.dataclass(frozen=True)
class TracedStep:
    """One model step as a flat, inlined closed jaxpr, and what it was traced from.

    Attributes:
      closed: the step; invars and outvars ordered by ``layout``.
      layout: the flat order.
      params, hidden, aux: path -> current value (the binding's values).
      hidden_paths: hidden-state paths, graph order.
      param_tree, aux_tree, arg_tree, out_tree: treedefs of each group of leaves.
      arg_leaves: the example argument leaves, as arrays.
      leaf_names: a readable path per parameter leaf (``"w"``, ``"lora['a']"``).
      leaf_owner: the parameter path each parameter leaf belongs to.
      hidden_names: a readable path per hidden state.
      records: what the control-flow rewrite did (``CompilationRecord``s).
    """

    closed: Any
    layout: StepLayout
    params: dict
    hidden: dict
    aux: dict
    hidden_paths: tuple
    param_tree: Any
    aux_tree: Any
    arg_tree: Any
    out_tree: Any
    arg_leaves: tuple
    leaf_names: tuple[str, ...]
    leaf_owner: tuple[tuple, ...]
    hidden_names: tuple[str, ...]
    records: tuple = ()

    @property
    def hidden_values(self) -> list:
        return [self.hidden[p] for p in self.hidden_paths]


def check_hidden_states(hidden: dict) -> int:
    """The common batch size of the hidden states.

    Raises:
      ValueError: if there is no hidden state, one is not an array with a batch axis,
        or their batch sizes differ.
    """
    if not hidden:
        raise ValueError(
            "compile_etrace_graph: the model has no HiddenState; create them in init_state(batch_size) "
            "and call brainstate.nn.init_all_states(model, batch_size=B) first"
        )
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
    return batch


def _leaf_names(values: dict) -> tuple[str, ...]:
    names = []
    for p, value in values.items():
        for kp, _ in jax.tree_util.tree_leaves_with_path(value):
            names.append(path_str(p) + "".join(str(k) for k in kp))
    return tuple(names)


def _leaf_owner(values: dict) -> tuple[tuple, ...]:
    owner = []
    for p, value in values.items():
        owner += [p] * len(jax.tree.leaves(value))
    return tuple(owner)


def trace_step(
    pure: Callable,
    values: tuple[dict, dict, dict],
    example_args: tuple,
    control_flow: ControlFlowPolicy | None = None,
) -> TracedStep:
    """Traces one model step into a flat jaxpr with every non-op jit inlined.

    Args:
      pure: the step as ``pure(params, hidden, aux, *args) -> (out, hidden_new, aux_new)``
        (:meth:`ModuleBinding.pure`).
      values: example ``(params, hidden, aux)`` dicts (:meth:`ModuleBinding.values`).
      example_args: one step's inputs.
      control_flow: how ``cond``/``scan``/``while`` in the step are rewritten
        (``None``: ``ControlFlowPolicy()``).

    Raises:
      NotSupportedError: for a ``while`` that carries a hidden state or parameter and
        cannot be unrolled (see ``_control_flow``).
    """
    params, hidden, aux = values
    hidden_paths = tuple(hidden)
    param_leaves, param_tree = jax.tree.flatten(params)
    aux_leaves, aux_tree = jax.tree.flatten(aux)
    arg_leaves, arg_tree = jax.tree.flatten(example_args)
    arg_leaves = [jnp.asarray(a) for a in arg_leaves]
    hidden_list = [hidden[p] for p in hidden_paths]
    layout = StepLayout(len(param_leaves), len(hidden_list), len(aux_leaves), len(arg_leaves))
    out_tree_box = []

    def flat_step(*leaves):
        ins = layout.split_inputs(leaves)
        out, h_new, a_new = pure(
            jax.tree.unflatten(param_tree, ins.params),
            dict(zip(hidden_paths, ins.hidden)),
            jax.tree.unflatten(aux_tree, ins.aux),
            *jax.tree.unflatten(arg_tree, ins.args),
        )
        out_leaves, out_tree = jax.tree.flatten(out)
        out_tree_box.append(out_tree)
        return tuple(layout.flat_outputs(out_leaves, [h_new[p] for p in hidden_paths], jax.tree.leaves(a_new)))

    flat_args = layout.flat_inputs(param_leaves, hidden_list, aux_leaves, arg_leaves)
    structs = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in flat_args]
    # brainstate creates its global key on first use: create it here, outside the trace, so that the
    # key the step's guard saves and puts back is a concrete array, not a tracer of this trace
    global_key_state().value  # noqa: B018 - read for its side effect
    raw = jc.make_closed_jaxpr(flat_step, *structs)
    not_op = lambda eqn: get_rule(jc.jit_name(eqn)) is None
    closed = jc.make_closed_jaxpr(lambda *a: jc.interpret(raw, a, inline_jit=not_op), *structs)
    leaf_names = _leaf_names(params)
    hidden_names = tuple(path_str(p) for p in hidden_paths)
    policy = ControlFlowPolicy() if control_flow is None else control_flow
    closed, records = canonicalize_control_flow(closed, layout, leaf_names, hidden_names, policy)
    return TracedStep(
        closed=closed,
        layout=layout,
        params=params,
        hidden=hidden,
        aux=aux,
        hidden_paths=hidden_paths,
        param_tree=param_tree,
        aux_tree=aux_tree,
        arg_tree=arg_tree,
        out_tree=out_tree_box[-1],
        arg_leaves=tuple(arg_leaves),
        leaf_names=leaf_names,
        leaf_owner=_leaf_owner(params),
        hidden_names=hidden_names,
        records=records,
    )


def check_state_shapes(step: TracedStep) -> None:
    """Raises ``ValueError`` if the step changes a hidden state's shape or dtype."""
    new_values = step.layout.hidden_new(jc.outvars(step.closed))
    for p, old, new in zip(step.hidden_paths, step.hidden_values, new_values):
        new_shape, new_dtype = jc.aval_shape(new), jc.aval_dtype(new)
        if new_shape != tuple(old.shape) or new_dtype != old.dtype:
            raise ValueError(
                f"compile_etrace_graph: hidden state {path_str(p)!r} changes from "
                f"{old.dtype}{list(old.shape)} to {new_dtype}{list(new_shape)} "
                "in one step; a step must keep each state's shape and dtype"
            )
