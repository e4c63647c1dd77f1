"""Memory the online gradient cannot see: aux states that carry a gradient path.

Only a ``HiddenState`` is traced. Any other ``State`` (*aux*: ``ShortTermState``,
``BatchState``, a plain ``State``) is carried from one step to the next without
gradient. That is exact as long as no gradient would flow through it: BPTT
differentiates through the carried value, the online learners cannot. So an aux state
is refused when, at once,

- its **new value depends on the parameters or hidden states** (directly, or through
  another aux state that does): what it carries to the next step is a function of
  what is learned; and
- its **old value reaches the model output or a hidden state's new value** (directly,
  or through another aux state's new value that does): the loss depends on it.

Both through differentiable values only: a dependence passed through
``stop_gradient`` or through an integer, boolean or key-typed value carries no
gradient (so neither does brainstate's random key, raw integer data, nor an integer
step counter). Left allowed, and recorded as ``AUX_STATE_WRITTEN`` (``_states``):
running statistics that only feed themselves (batch norm in fit mode), step counters,
input statistics, frozen weights. Measured on a leaky model that kept part of its
memory in a ``ShortTermState``: D-RTRL's gradient was 78% off BPTT's, without any
error, before this check.

The dependence is read from the inlined step jaxpr by a forward pass in which every
equation's outputs depend on all its inputs (conservative for loops and calls).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._functional import path_str
from disttrace.compiler._trace import TracedStep
from disttrace.errors import CompilationError

__all__ = ["check_aux_memory"]

_THETA = -1  # the source "parameters or hidden states"; aux leaves are sources 0, 1, ...
_NONE: frozenset = frozenset()


def _sources(step: TracedStep) -> tuple[list, list, list]:
    """Per output: the differentiable sources it depends on (``_THETA``, aux leaf indices).

    Returns ``(out, hidden_new, aux_new)`` lists of frozensets.
    """
    closed, layout = step.closed, step.layout
    ins = layout.split_inputs(jc.invars(closed))
    src: dict = {}
    for v in (*ins.params, *ins.hidden):
        src[v] = frozenset({_THETA}) if jc.is_inexact(v) else _NONE
    for i, v in enumerate(ins.aux):
        src[v] = frozenset({i}) if jc.is_inexact(v) else _NONE
    get = lambda atom: _NONE if jc.is_literal(atom) else src.get(atom, _NONE)
    for eqn in jc.eqns(closed):
        found = _NONE if jc.is_stop_gradient(eqn) else frozenset().union(*map(get, jc.eqn_invars(eqn)))
        for v in jc.eqn_outvars(eqn):
            src[v] = found if jc.is_inexact(v) else _NONE
    outs = layout.split_outputs(jc.outvars(closed))
    return [get(v) for v in outs.out], [get(v) for v in outs.hidden_new], [get(v) for v in outs.aux_new]


def _closure(start: set, edges) -> set:
    """Grows ``start`` by ``edges(i)`` until nothing is added."""
    found, todo = set(start), list(start)
    while todo:
        for j in edges(todo.pop()):
            if j not in found:
                found.add(j)
                todo.append(j)
    return found


def check_aux_memory(step: TracedStep, state_types: Mapping[tuple, str]) -> None:
    """Raises if an aux state carries a gradient path across steps (module docstring).

    Args:
      step: the traced step.
      state_types: aux path -> the state's type name (for the message).

    Raises:
      CompilationError: ``kind="aux_state_memory"``, ``path`` the first such state.
    """
    out, hidden_new, aux_new = _sources(step)
    # aux leaves whose new value depends on the parameters or hidden states
    learned = {i for i, s in enumerate(aux_new) if _THETA in s}
    feeds = lambda i: [j for j, s in enumerate(aux_new) if i in s]  # aux leaf i -> new values it reaches
    learned = _closure(learned, feeds)
    # aux leaves whose old value reaches the loss
    direct = set().union(*out, *hidden_new) - {_THETA}
    read_by = lambda j: [i for i in aux_new[j] if i != _THETA]  # new value j -> old values it reads
    loss = _closure(direct, read_by)
    bad = learned & loss
    if not bad:
        return
    paths = [p for p, value in step.aux.items() for _ in jax.tree.leaves(value)]
    first = min(bad)
    p = paths[first]
    where = _where(first, out, hidden_new, step)
    raise CompilationError(
        f"{state_types.get(p, 'State')} {path_str(p)!r} carries memory across steps that depends on the learned "
        f"values, and its old value reaches {where}; it is not a HiddenState, so the online gradient through "
        "it would be silently dropped. Keep memory the loss depends on in a brainstate.HiddenState (it is then "
        "traced), or read it through jax.lax.stop_gradient if no gradient should flow through it",
        kind="aux_state_memory",
        path=path_str(p),
    )


def _where(leaf: int, out: list, hidden_new: list, step: TracedStep) -> str:
    """Where aux leaf ``leaf``'s old value is read first: the output, a hidden state or another aux state."""
    if any(leaf in s for s in out):
        return "the model output"
    for name, s in zip(step.hidden_names, hidden_new):
        if leaf in s:
            return f"hidden state {name!r}"
    return "another non-hidden state that does"
