"""Dataflow analysis of one inlined model step.

Forward over the equations, every variable carries:

- *element-wise sources*: hidden inputs ``('h', i)`` and trace-op outputs ``('y', j)``
  it depends on through element-wise primitives only (the diagonal structure that
  D-RTRL and ES-D-RTRL rely on);
- *mixed sources*: sources reached through a non-element-wise primitive, with the
  first such equation (for error messages);
- *parameter taint*: parameters that entered the data path other than as a trace-op
  weight, with the equation where they did.

Trace-op equations cut the flow: their weights must be parameter-only values
(computed from parameters, literals and aux states the step leaves unchanged, such as
frozen weights), and their output is a fresh source. An op none of whose weights
comes from a parameter is a *constant op*: it is cut too, and where its output goes is
recorded but never refused (nothing is traced through it: it has no hidden group and
the learners keep no trace for it). From what reaches each new hidden value we get the
hidden groups (union of element-wise hidden-to-hidden links), the (op, group)
relations, and every situation in which a gradient would silently be wrong, which
raises :class:`~disttrace.errors.CompilationError`.

:func:`analyse` runs four phases: seed what each input carries (:func:`_seed`, by
:class:`~disttrace.compiler.StepLayout`), the forward pass (:func:`_visit` per
equation), the checks of every new hidden value (:func:`_check_hidden_value`), and
the parameters reaching the output outside trace ops (:func:`_out_params`). Equations
are read only through ``_jax_compat``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._layout import StepLayout
from disttrace.errors import CompilationError, NotSupportedError
from disttrace.ops import TraceOpRule, get_rule

__all__ = ["OpFinding", "StepAnalysis", "analyse"]


def _is_elementwise(eqn) -> bool:
    if jc.is_elementwise_primitive(eqn):
        return True
    if jc.is_reshape(eqn):
        ins = [d for d in jc.aval_shape(jc.eqn_invars(eqn)[0]) if d != 1]
        outs = [d for d in jc.aval_shape(jc.eqn_outvars(eqn)[0]) if d != 1]
        return ins == outs
    if jc.is_call(eqn):
        sub = jc.call_jaxpr_of(eqn)
        return sub is not None and all(_is_elementwise(e) for e in jc.eqns(sub))
    return False


class _Where(NamedTuple):
    """The equation where a source or parameter first left the element-wise path."""

    primitive: str  # its primitive's name
    loop: bool  # whether that primitive is control flow (scan, while, cond)
    equation: str  # the equation as text


def _where(eqn, text: str) -> _Where:
    return _Where(jc.primitive_name(eqn), jc.is_loop(eqn), text)


@dataclasses.dataclass
class _Info:
    """What one variable carries (see the module docstring)."""

    ew: frozenset = frozenset()  # element-wise sources: ("h", i) or ("y", j)
    mixed: dict = dataclasses.field(default_factory=dict)  # source -> _Where
    taint: dict = dataclasses.field(default_factory=dict)  # param leaf -> _Where
    param_only: bool = False
    params: frozenset = frozenset()  # for param-only values: the param leaves used


@dataclasses.dataclass
class _OpDraft:
    """A trace op found by the forward pass; ``reach`` grows while hidden values are checked."""

    eqn_index: int
    rule: TraceOpRule
    weights: frozenset  # param leaves its weights are computed from
    const: bool  # no weight from a parameter: cut, but no trace
    reach: set = dataclasses.field(default_factory=set)  # hidden indices reached
    feeds: set = dataclasses.field(default_factory=set)  # ops whose input it reaches


@dataclasses.dataclass(frozen=True)
class OpFinding:
    eqn_index: int
    rule: Any
    weight_leaves: frozenset
    hidden_reached: frozenset  # hidden indices reached element-wise
    feeds_ops: frozenset


@dataclasses.dataclass(frozen=True)
class StepAnalysis:
    ops: tuple[OpFinding, ...]
    hidden_links: tuple[tuple[int, int], ...]  # (i, j): new h_i depends element-wise on old h_j
    out_params: frozenset  # param leaves reaching the model output outside trace ops
    used_params: frozenset


@dataclasses.dataclass
class _Flow:
    """The state of the forward pass: what every variable carries, the ops found so far."""

    info: dict
    ops: list[_OpDraft] = dataclasses.field(default_factory=list)
    used_params: set = dataclasses.field(default_factory=set)

    def get(self, atom) -> _Info:
        if jc.is_literal(atom):
            return _Info(param_only=True)
        return self.info.get(atom, _Info(param_only=True))

    def set_all(self, eqn, value: _Info) -> None:
        for v in jc.eqn_outvars(eqn):
            self.info[v] = value


@dataclasses.dataclass(frozen=True)
class _Names:
    """Readable names for error messages."""

    leaves: Sequence[str]  # one per parameter leaf
    hidden: Sequence[str]  # one per hidden state


def analyse(closed, layout: StepLayout, leaf_names: Sequence[str], hidden_names: Sequence[str]) -> StepAnalysis:
    """Runs the analysis on an inlined step jaxpr; see the module docstring.

    Args:
      closed: the step as a closed jaxpr whose invars and outvars are ordered by ``layout``.
      layout: the step's flat order.
      leaf_names: a readable path per parameter leaf (for errors).
      hidden_names: a readable path per hidden state.

    Raises:
      CompilationError: when a structure would make some gradient silently wrong.
    """
    names = _Names(leaf_names, hidden_names)
    flow = _seed(closed, layout)
    for e_idx, eqn in enumerate(jc.eqns(closed)):
        _visit(flow, e_idx, eqn)
    links = []
    for i, v in enumerate(layout.hidden_new(jc.outvars(closed))):
        links += _check_hidden_value(flow, i, flow.get(v), names)
    out_params = _out_params(flow, layout, jc.outvars(closed))
    flow.used_params |= out_params
    ops = tuple(
        OpFinding(d.eqn_index, d.rule, d.weights, frozenset(d.reach), frozenset(d.feeds)) for d in flow.ops
    )
    return StepAnalysis(ops, tuple(links), frozenset(out_params), frozenset(flow.used_params))


# ---- phase 1: what the step's inputs carry --------------------------------------------
def _seed(closed, layout: StepLayout) -> _Flow:
    info: dict[Any, _Info] = {v: _Info(param_only=True) for v in jc.constvars(closed)}
    ins = layout.split_inputs(jc.invars(closed))
    for idx, v in enumerate(ins.params):
        info[v] = _Info(param_only=True, params=frozenset({idx}))
    for i, v in enumerate(ins.hidden):
        info[v] = _Info(ew=frozenset({("h", i)}))
    for v, new in zip(ins.aux, layout.aux_new(jc.outvars(closed))):
        # An aux leaf the step passes through unchanged (a frozen weight in a plain
        # State) is the same value at every step of a sequence: a constant, so it may
        # enter a trace-op weight, e.g. W_frozen + s·A·B with A, B parameters.
        info[v] = _Info(param_only=True) if new is v else _Info()
    for v in ins.args:
        info[v] = _Info()
    return _Flow(info)


# ---- phase 2: forward over the equations -------------------------------------------------
def _visit(flow: _Flow, e_idx: int, eqn) -> None:
    ins = [flow.get(a) for a in jc.eqn_invars(eqn)]
    rule, const = _trace_op_rule(eqn, ins)
    if rule is not None:
        _visit_op(flow, e_idx, eqn, ins, rule, const)
    elif all(a.param_only for a in ins):
        params = frozenset().union(*(a.params for a in ins)) if ins else frozenset()
        flow.set_all(eqn, _Info(param_only=True, params=params))
    else:
        flow.set_all(eqn, _propagate(eqn, ins))


def _trace_op_rule(eqn, ins: list[_Info]) -> tuple[TraceOpRule | None, bool]:
    """The rule if the equation is a trace op to cut, and whether it is a constant op."""
    rule = get_rule(jc.jit_name(eqn))
    if rule is None or any(ins[wi].params for wi in rule.weight_argnums):
        return rule, False
    # No weight comes from a parameter, so there is no trace to keep. With constant
    # weights (a frozen weight in an unwritten State) the op stays a graph node
    # (``weight_params == ()``) so that its input is cut like every trace op's
    # (the diagonal approximation; a frozen *recurrent* weight would otherwise be
    # a non-element-wise hidden dependence); otherwise it is ordinary computation.
    const = all(ins[wi].param_only for wi in rule.weight_argnums) and not all(a.param_only for a in ins)
    return (rule if const else None), const


def _visit_op(flow: _Flow, e_idx: int, eqn, ins: list[_Info], rule: TraceOpRule, const: bool) -> None:
    j = len(flow.ops)
    weights = set()
    for wi in rule.weight_argnums:
        if not ins[wi].param_only:
            raise CompilationError(
                f"trace op {rule.name!r} (op #{j}) gets a weight operand #{wi} that is not computed "
                "from parameters alone; weights must be ParamState values (optionally transformed)",
                kind="weight_not_param",
                primitive=jc.primitive_name(eqn),
                equation=jc.eqn_to_str(eqn),
            )
        weights |= ins[wi].params
    flow.used_params.update(weights)
    taint: dict = {}
    text = None
    for k, a in enumerate(ins):
        if k in rule.weight_argnums:
            continue
        taint.update(a.taint)
        if a.param_only and a.params and k == rule.input_argnum:
            # A parameter used directly as the op *input*: it would get no trace.
            text = text or jc.eqn_to_str(eqn)
            for p in a.params:
                taint.setdefault(p, _where(eqn, text))
    for k, a in enumerate(ins):
        for src in a.ew | set(a.mixed):
            if src[0] == "y" and k == rule.input_argnum:
                flow.ops[src[1]].feeds.add(j)
    flow.ops.append(_OpDraft(e_idx, rule, frozenset(weights), const))
    flow.set_all(eqn, _Info(ew=frozenset({("y", j)}), taint=taint))


def _propagate(eqn, ins: list[_Info]) -> _Info:
    """What an ordinary equation's outputs carry."""
    taint: dict = {}
    text = None
    for a in ins:
        taint.update(a.taint)
        if a.param_only and a.params:
            text = text or jc.eqn_to_str(eqn)
            for p in a.params:
                taint.setdefault(p, _where(eqn, text))
    ew_srcs = frozenset().union(*(a.ew for a in ins))
    mixed: dict = {}
    for a in ins:
        for s, where in a.mixed.items():
            mixed.setdefault(s, where)
    if not any(jc.is_inexact(v) for v in jc.eqn_outvars(eqn)):
        # An integer or boolean result (a comparison, a cond index) has zero derivative:
        # no Jacobian entry passes through it, so a mixing dependence it carries is
        # dropped. Element-wise sources are kept, so hidden groups do not change.
        return _Info(ew=ew_srcs if _is_elementwise(eqn) else frozenset(), taint=taint)
    if _is_elementwise(eqn):
        return _Info(ew=ew_srcs, mixed=mixed, taint=taint)
    text = text or jc.eqn_to_str(eqn)
    for s in ew_srcs:
        mixed.setdefault(s, _where(eqn, text))
    return _Info(mixed=mixed, taint=taint)


# ---- phase 3: what reaches each new hidden value ------------------------------------------
_OPAQUE_HINT = (
    ". Control flow is rewritten into flat equations under disttrace.compiler.ControlFlowPolicy "
    "(cond/switch converted to select unless cond='opaque' or it has side effects; scans up to "
    "scan_unroll_limit and whiles of static trip count up to while_unroll_limit unrolled): shorten "
    "the loop, raise the limit, or move the loop out of the step"
)


def _check_hidden_value(flow: _Flow, i: int, a: _Info, names: _Names) -> list[tuple[int, int]]:
    """Raises if new hidden value ``i`` is reached in a way that makes a gradient wrong;
    records which ops reach it and returns its element-wise hidden links."""
    name = names.hidden[i]
    if a.param_only and a.params:
        p = min(a.params)
        raise CompilationError(
            f"hidden state {name!r} is computed from parameter {names.leaves[p]!r} outside any trace op; "
            "route the parameter through a disttrace.ops function so it gets a trace",
            kind="param_outside_trace_op",
            path=names.leaves[p],
        )
    for p, where in sorted(a.taint.items()):
        error = NotSupportedError if where.loop else CompilationError
        raise error(
            f"parameter {names.leaves[p]!r} reaches hidden state {name!r} through primitive {where.primitive!r} "
            "outside any trace op, so its online gradient would be silently wrong; use a "
            "disttrace.ops function (matmul, element_wise, conv, ...) for it"
            + (_OPAQUE_HINT if where.loop else ""),
            kind="hidden_in_loop" if where.loop else "param_outside_trace_op",
            path=names.leaves[p],
            primitive=where.primitive,
            equation=where.equation,
        )
    for src, where in sorted(a.mixed.items()):
        if src[0] == "y" and flow.ops[src[1]].const and not where.loop:
            # Nothing is traced through a constant op: how its output reaches h is free.
            flow.ops[src[1]].reach.add(i)
            continue
        _raise_mixed(flow, i, src, where, names)
    links = []
    for src in a.ew:
        if src[0] == "h":
            links.append((i, src[1]))
        else:
            flow.ops[src[1]].reach.add(i)
    return links


def _raise_mixed(flow: _Flow, i: int, src: tuple, where: _Where, names: _Names) -> None:
    """The error for source ``src`` reaching hidden value ``i`` through a non-element-wise primitive."""
    name, prim = names.hidden[i], where.primitive
    if where.loop:
        raise NotSupportedError(
            f"hidden state {name!r} is computed inside a {prim!r} the compiler left as it is, so its "
            "one-step Jacobian cannot be read" + _OPAQUE_HINT,
            kind="hidden_in_loop",
            path=name,
            primitive=prim,
            equation=where.equation,
        )
    if src[0] == "h":
        raise CompilationError(
            f"hidden state {name!r} depends on hidden state {names.hidden[src[1]]!r} through the "
            f"non-element-wise primitive {prim!r}; the diagonal approximation would silently drop "
            "this dependence. Mix neurons only through trace ops (e.g. disttrace.ops.matmul)",
            kind="non_elementwise_hidden",
            path=name,
            primitive=prim,
            equation=where.equation,
        )
    op = flow.ops[src[1]]
    weights = ", ".join(sorted({names.leaves[p] for p in op.weights})) or "-"
    raise CompilationError(
        f"the output of trace op #{src[1]} ({op.rule.name}, weights: {weights}) reaches hidden state "
        f"{name!r} through the non-element-wise primitive {prim!r}; its trace would be wrong. Make the "
        "op output shape match the hidden state and combine them element-wise",
        kind="non_elementwise_op_output",
        path=name,
        primitive=prim,
        equation=where.equation,
    )


# ---- phase 4: parameters reaching the output outside trace ops -----------------------------
def _out_params(flow: _Flow, layout: StepLayout, outvars) -> set[int]:
    out_params: set[int] = set()
    for v in layout.out(outvars):
        a = flow.get(v)
        out_params |= set(a.taint) | (set(a.params) if a.param_only else set())
    for v in layout.aux_new(outvars):
        out_params |= set(flow.get(v).taint)
    return out_params
