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
"""

from __future__ import annotations

import dataclasses
from typing import Any

from disttrace.compiler import _jax_compat as jc
from disttrace.errors import CompilationError
from disttrace.ops import get_rule

__all__ = ["StepAnalysis", "analyse"]

_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type copy
    copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite
    le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision rem
    round rsqrt select_n sign sin sinh sqrt square sub tan tanh xor broadcast_in_dim stop_gradient
    square""".split()
)
_LOOPS = frozenset({"scan", "while", "cond", "fori_loop"})
# Calls whose body decides: element-wise iff every equation inside is. "jit"/"pjit" are
# the jit calls nested in a custom_jvp body (jax.nn.relu), which the step's inlining
# does not reach.
_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint", "jit", "pjit"})


def _is_elementwise(eqn) -> bool:
    name = eqn.primitive.name
    if name in _ELEMENTWISE:
        return True
    if name == "reshape" or name == "squeeze" or name == "expand_dims":
        ins = [d for d in eqn.invars[0].aval.shape if d != 1]
        outs = [d for d in eqn.outvars[0].aval.shape if d != 1]
        return ins == outs
    if name in _CALLS:
        sub = jc.call_jaxpr_of(eqn)
        return sub is not None and all(_is_elementwise(e) for e in sub.jaxpr.eqns)
    return False


@dataclasses.dataclass
class _Info:
    ew: frozenset = frozenset()
    mixed: dict = dataclasses.field(default_factory=dict)  # source -> (primitive, eqn text)
    taint: dict = dataclasses.field(default_factory=dict)  # param leaf -> (primitive, eqn text)
    param_only: bool = False
    params: frozenset = frozenset()  # for param-only values: the param leaves used


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


def analyse(closed, n_params: int, n_hidden: int, n_aux: int, leaf_names: list[str], hidden_names: list[str]):
    """Runs the analysis on an inlined step jaxpr; see the module docstring.

    Args:
      closed: the step as a closed jaxpr (invars: params, hidden, aux, args; outvars:
        out, hidden_new, aux_new).
      n_params, n_hidden, n_aux: how many invars of each kind lead the list.
      leaf_names: a readable path per parameter leaf (for errors).
      hidden_names: a readable path per hidden state.

    Raises:
      CompilationError: when a structure would make some gradient silently wrong.
    """
    jaxpr = closed.jaxpr
    info: dict[Any, _Info] = {}

    def get(atom) -> _Info:
        if jc.is_literal(atom):
            return _Info(param_only=True)
        return info.get(atom, _Info(param_only=True))

    for v in jaxpr.constvars:
        info[v] = _Info(param_only=True)
    n_aux_in = n_params + n_hidden + n_aux
    aux_out = jaxpr.outvars[len(jaxpr.outvars) - n_aux :] if n_aux else []
    for idx, v in enumerate(jaxpr.invars):
        if idx < n_params:
            info[v] = _Info(param_only=True, params=frozenset({idx}))
        elif idx < n_params + n_hidden:
            info[v] = _Info(ew=frozenset({("h", idx - n_params)}))
        elif idx < n_aux_in and aux_out[idx - n_params - n_hidden] is v:
            # An aux leaf the step passes through unchanged (a frozen weight in a plain
            # State) is the same value at every step of a sequence: a constant, so it may
            # enter a trace-op weight, e.g. W_frozen + s·A·B with A, B parameters.
            info[v] = _Info(param_only=True)
        else:
            info[v] = _Info()

    op_findings: list[dict] = []
    used_params: set[int] = set()
    for e_idx, eqn in enumerate(jaxpr.eqns):
        ins = [get(a) for a in eqn.invars]
        rule = get_rule(jc.jit_name(eqn))
        text = None
        const_op = False
        if rule is not None and not any(ins[wi].params for wi in rule.weight_argnums):
            # No weight comes from a parameter, so there is no trace to keep. With constant
            # weights (a frozen weight in an unwritten State) the op stays a graph node
            # (``weight_params == ()``) so that its input is cut like every trace op's
            # (the diagonal approximation; a frozen *recurrent* weight would otherwise be
            # a non-element-wise hidden dependence); otherwise it is ordinary computation.
            const_op = all(ins[wi].param_only for wi in rule.weight_argnums) and not all(a.param_only for a in ins)
            rule = rule if const_op else None
        if rule is not None:
            j = len(op_findings)
            weights = set()
            for wi in rule.weight_argnums:
                w = ins[wi]
                if not w.param_only:
                    raise CompilationError(
                        f"trace op {rule.name!r} (op #{j}) gets a weight operand #{wi} that is not computed "
                        "from parameters alone; weights must be ParamState values (optionally transformed)",
                        kind="weight_not_param",
                        primitive=eqn.primitive.name,
                        equation=jc.eqn_to_str(eqn),
                    )
                weights |= w.params
            used_params.update(weights)
            taint: dict = {}
            for k, a in enumerate(ins):
                if k in rule.weight_argnums:
                    continue
                taint.update(a.taint)
                if a.param_only and a.params and k == rule.input_argnum:
                    # A parameter used directly as the op *input*: it would get no trace.
                    text = text or jc.eqn_to_str(eqn)
                    for p in a.params:
                        taint.setdefault(p, (eqn.primitive.name, text))
            for k, a in enumerate(ins):
                for src in a.ew | set(a.mixed):
                    if src[0] == "y" and k == rule.input_argnum:
                        op_findings[src[1]]["feeds"].add(j)
            op_findings.append(
                dict(eqn_index=e_idx, rule=rule, weights=frozenset(weights), reach=set(), feeds=set(), const=const_op)
            )
            out = _Info(ew=frozenset({("y", j)}), taint=taint)
            for v in eqn.outvars:
                info[v] = out
            continue

        if all(a.param_only for a in ins):
            params = frozenset().union(*(a.params for a in ins)) if ins else frozenset()
            for v in eqn.outvars:
                info[v] = _Info(param_only=True, params=params)
            continue

        taint: dict = {}
        for a in ins:
            taint.update(a.taint)
            if a.param_only and a.params:
                text = text or jc.eqn_to_str(eqn)
                for p in a.params:
                    taint.setdefault(p, (eqn.primitive.name, text))
        ew_srcs = frozenset().union(*(a.ew for a in ins))
        mixed: dict = {}
        for a in ins:
            for s, where in a.mixed.items():
                mixed.setdefault(s, where)
        if _is_elementwise(eqn):
            out = _Info(ew=ew_srcs, mixed=mixed, taint=taint)
        else:
            text = text or jc.eqn_to_str(eqn)
            for s in ew_srcs:
                mixed.setdefault(s, (eqn.primitive.name, text))
            out = _Info(mixed=mixed, taint=taint)
        for v in eqn.outvars:
            info[v] = out

    outvars = jaxpr.outvars
    n_out = len(outvars) - n_hidden - n_aux
    op_desc = lambda j: f"trace op #{j} ({op_findings[j]['rule'].name}, weights: " + (
        ", ".join(sorted({leaf_names[p] for p in op_findings[j]["weights"]})) or "-"
    ) + ")"

    links = []
    for i in range(n_hidden):
        a = get(outvars[n_out + i])
        name = hidden_names[i]
        if a.param_only and a.params:
            p = min(a.params)
            raise CompilationError(
                f"hidden state {name!r} is computed from parameter {leaf_names[p]!r} outside any trace op; "
                "route the parameter through a disttrace.ops function so it gets a trace",
                kind="param_outside_trace_op",
                path=leaf_names[p],
            )
        for p, (prim, text) in sorted(a.taint.items()):
            kind = "hidden_in_loop" if prim in _LOOPS else "param_outside_trace_op"
            raise CompilationError(
                f"parameter {leaf_names[p]!r} reaches hidden state {name!r} through primitive {prim!r} "
                "outside any trace op, so its online gradient would be silently wrong; use a "
                "disttrace.ops function (matmul, element_wise, conv, ...) for it",
                kind=kind,
                path=leaf_names[p],
                primitive=prim,
                equation=text,
            )
        for src, (prim, text) in sorted(a.mixed.items()):
            if prim in _LOOPS:
                raise CompilationError(
                    f"hidden state {name!r} is computed inside a {prim!r} loop; a model step must "
                    "update its hidden states outside scan/while/cond so their Jacobian can be read",
                    kind="hidden_in_loop",
                    path=name,
                    primitive=prim,
                    equation=text,
                )
            if src[0] == "y" and op_findings[src[1]]["const"]:
                # Nothing is traced through a constant op: how its output reaches h is free.
                op_findings[src[1]]["reach"].add(i)
                continue
            if src[0] == "h":
                raise CompilationError(
                    f"hidden state {name!r} depends on hidden state {hidden_names[src[1]]!r} through the "
                    f"non-element-wise primitive {prim!r}; the diagonal approximation would silently drop "
                    "this dependence. Mix neurons only through trace ops (e.g. disttrace.ops.matmul)",
                    kind="non_elementwise_hidden",
                    path=name,
                    primitive=prim,
                    equation=text,
                )
            raise CompilationError(
                f"the output of {op_desc(src[1])} reaches hidden state {name!r} through the "
                f"non-element-wise primitive {prim!r}; its trace would be wrong. Make the op output "
                "shape match the hidden state and combine them element-wise",
                kind="non_elementwise_op_output",
                path=name,
                primitive=prim,
                equation=text,
            )
        for src in a.ew:
            if src[0] == "h":
                links.append((i, src[1]))
            else:
                op_findings[src[1]]["reach"].add(i)

    out_params: set[int] = set()
    for v in outvars[:n_out]:
        a = get(v)
        out_params |= set(a.taint) | (set(a.params) if a.param_only else set())
    for v in outvars[n_out + n_hidden :]:
        a = get(v)
        if a.taint:
            out_params |= set(a.taint)
    used_params |= out_params
    ops = tuple(
        OpFinding(f["eqn_index"], f["rule"], f["weights"], frozenset(f["reach"]), frozenset(f["feeds"]))
        for f in op_findings
    )
    return StepAnalysis(ops, tuple(links), frozenset(out_params), frozenset(used_params))
