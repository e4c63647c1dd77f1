"""Control flow inside a model step: ``cond`` to ``select``, inner loops unrolled.

The analysis (``_analysis``) reads one flat list of equations: a hidden state or a
trace op inside a ``cond``, ``scan`` or ``while`` body is invisible to it, and a
hidden state computed by one has no readable one-step Jacobian. So, before the
analysis, :func:`canonicalize_control_flow` rewrites the step (once, at compile time)
into a semantically identical flat jaxpr, as braintrace 0.2.8's canonicalisation
does, under a :class:`ControlFlowPolicy`:

- ``cond`` / ``switch`` (``lax.cond``, ``lax.switch``, ``brainstate.transform.cond``):
  every branch is inlined and each output becomes ``select_n(index, out_0, ...,
  out_{n-1})``. ``select_n`` is element-wise, its JVP selects the tangents and its
  transpose hands each branch its own cotangent (zero for the others), so for
  branches with finite values and Jacobians the step's values and derivatives are
  unchanged: D-RTRL on the converted step is exact where it is on a select-free one.
  A ``cond`` whose index is a compile-time constant keeps only its branch.
- ``scan`` of static length ``L <= scan_unroll_limit`` (``lax.scan``, ``fori_loop``
  with static bounds, ``brainstate.transform.for_loop``): the body is inlined ``L``
  times, carries threaded through, ``xs[i]`` sliced and the ``ys`` stacked.
  Unrolling computes exactly what the loop computes.
- ``while`` whose trip count is a compile-time constant ``n <= while_unroll_limit``
  (a counter started from a constant and stepped by constants): the body is inlined
  ``n`` times. A ``while`` that carries values computed from a hidden state or a
  parameter and cannot be unrolled (its predicate depends on data, its trip count
  exceeds the limit, or it has side effects) is refused with
  :class:`~disttrace.errors.NotSupportedError`: JAX has no reverse-mode rule for a
  ``while`` of unknown length, so neither BPTT nor the online learners could
  differentiate through it.

Only control flow that carries a value computed from a parameter or a hidden state
(*relevant*) is rewritten; the rest (input preprocessing, say) stays as it is, at no
cost. A relevant ``cond`` or ``scan`` left opaque (``cond="opaque"``, a scan longer
than the limit, side effects) reaches the analysis as before, which refuses it if a
hidden state is computed inside it.

How the trip count is found: the rewrite re-traces the step equation by equation,
evaluating at trace time every equation whose operands are constants and whose
results are numeric scalars (loop counters and predicates; never arrays, so no array
moves into the jaxpr's constants). A ``while`` is first run in a throw-away trace
with its non-constant operands abstract: if its predicate stays a constant at every
iteration, the number of iterations is the trip count, whatever the data.

Caveat of ``cond`` conversion (as in braintrace): both branches run every step. A
dead branch with a NaN/infinite *Jacobian* (a ``cond`` guarding ``sqrt`` of a negative
number) turns the reverse-mode gradient into NaN (``0 * inf``): guard the operand
inside the branch (``sqrt(where(ok, x, 1.0))``) or use ``cond="opaque"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._graph import CompilationRecord, DiagnosticKind
from disttrace.compiler._layout import StepLayout
from disttrace.errors import NotSupportedError
from disttrace.ops import get_rule

__all__ = ["ControlFlowPolicy", "canonicalize_control_flow"]

_NONE: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class ControlFlowPolicy:
    """How control flow inside a model step is compiled (see the module docstring).

    braintrace 0.2.8's ``ControlFlowPolicy`` is a frozen dataclass of knobs, not an
    enum; this one has its six fields, in its order, so a braintrace policy ports by
    changing the import, and one of disttrace's own (``while_unroll_limit``, last).
    ``cond`` and ``scan_unroll_limit`` behave as in braintrace, with its defaults. For
    the other braintrace fields disttrace implements one value: the default here.
    braintrace's other values (``while_hidden="opaque-fwd"``: a forward-mode Jacobian
    through a ``while``; ``etp_in_control_flow="exclude"``; ``scan_descent="auto"``:
    traces folded over a scan too long to unroll) raise :class:`NotSupportedError`;
    disttrace instead unrolls a ``while`` of static trip count.

    Attributes:
      cond: ``"convert"`` (default): ``cond``/``switch`` become ``select_n`` over the
        inlined branches; ``"opaque"``: left as they are (a hidden state computed
        inside one is then refused), except one whose index is a compile-time
        constant (a loop counter in an unrolled loop), which keeps only its branch
        under either setting: that is exact and runs no dead branch.
      scan_unroll_limit: the longest ``scan`` that is unrolled (default 16); ``0``
        unrolls none. A longer one stays a ``scan`` (a hidden state computed inside
        it is then refused).
      while_hidden: ``"error"``: a ``while`` carrying a hidden state or parameter that
        cannot be unrolled raises :class:`NotSupportedError`.
      etp_in_control_flow: ``"error"``: a trace op inside a loop left opaque is not
        traced; its weight reaching a hidden state through the loop is refused.
      scan_descent: ``"off"``: no structured descent into a scan too long to unroll.
      fixpoint_iteration_limit: a positive int, accepted for braintrace's sake: this
        rewrite descends into nested control flow in one pass, it does not iterate.
      while_unroll_limit: the largest static trip count of a ``while`` that is
        unrolled (default 16); ``0`` unrolls none.

    Raises:
      ValueError: on a value braintrace does not accept either (``cond="select"``, a
        negative limit).
      ArgumentTypeError: on a limit that is not an int (``bool`` included).
      NotSupportedError: (``kind="unsupported_option"``) on a braintrace value
        disttrace does not implement.

    Example:
      >>> ControlFlowPolicy(cond="opaque").cond
      'opaque'
    """

    cond: str = "convert"
    scan_unroll_limit: int = 16
    while_hidden: str = "error"
    etp_in_control_flow: str = "error"
    scan_descent: str = "off"
    fixpoint_iteration_limit: int = 64
    while_unroll_limit: int = 16

    def __post_init__(self):
        who = "ControlFlowPolicy"
        checks.one_of(who, "cond", self.cond, ("convert", "opaque"))
        checks.non_negative_int(who, "scan_unroll_limit", self.scan_unroll_limit)
        checks.positive_int(who, "fixpoint_iteration_limit", self.fixpoint_iteration_limit)
        checks.non_negative_int(who, "while_unroll_limit", self.while_unroll_limit)
        for name, ours, theirs in _BRAINTRACE_ONLY:
            value = checks.one_of(who, name, getattr(self, name), (ours, *theirs))
            if value != ours:
                raise NotSupportedError(
                    f"{who}: argument {name!r} = {value!r} is a braintrace mode disttrace does not implement; "
                    f"use {ours!r}: {_WHY[name]}",
                    kind="unsupported_option",
                    path=name,
                )


# braintrace fields of which disttrace implements one value: (field, ours, braintrace's others)
_BRAINTRACE_ONLY = (
    ("while_hidden", "error", ("opaque-fwd",)),
    ("etp_in_control_flow", "error", ("exclude",)),
    ("scan_descent", "off", ("auto",)),
)
_WHY = {
    "while_hidden": "a while loop is unrolled when its trip count is static and at most while_unroll_limit, "
    "and refused otherwise (JAX has no reverse mode through it)",
    "etp_in_control_flow": "a trace op inside a loop left opaque is never silently dropped; raise "
    "scan_unroll_limit / while_unroll_limit so the loop is unrolled",
    "scan_descent": "a scan up to scan_unroll_limit is unrolled; raise the limit for a longer one",
}


def canonicalize_control_flow(
    closed,
    layout: StepLayout,
    leaf_names: Sequence[str],
    hidden_names: Sequence[str],
    policy: ControlFlowPolicy,
) -> tuple[Any, tuple[CompilationRecord, ...]]:
    """The step with its relevant control flow rewritten (module docstring), and the records.

    Args:
      closed: the inlined step jaxpr (invars and outvars ordered by ``layout``).
      layout: the step's flat order.
      leaf_names: a readable path per parameter leaf.
      hidden_names: a readable path per hidden state.
      policy: what to rewrite.

    Returns:
      ``(closed, records)``: ``closed`` unchanged (the same object) when the step has no
      control flow; one record per kind of rewrite and state concerned.

    Raises:
      NotSupportedError: (kinds ``"while_dynamic_trip_count"``,
        ``"while_trip_count_too_large"``, ``"while_with_effects"``) for a ``while``
        carrying values computed from a hidden state or parameter that cannot be
        unrolled; ``path`` names the state, ``primitive`` is ``"while"``.
    """
    if not any(jc.is_loop(e) for e in jc.eqns(closed)):
        return closed, ()
    found: list = []

    def rewritten(*args):
        rewriter = _Rewriter(policy)
        ins = layout.split_inputs(args)
        for name, v in zip(leaf_names, ins.params):
            rewriter.mark([v], frozenset({("param", name)}))
        for name, v in zip(hidden_names, ins.hidden):
            rewriter.mark([v], frozenset({("hidden", name)}))
        outs = jc.interpret(closed, args, hook=rewriter)
        found.append(rewriter.records)
        return outs

    new = jc.make_closed_jaxpr(rewritten, *(jc.shape_dtype(v) for v in jc.invars(closed)))
    return new, tuple(dict.fromkeys(found[-1]))


def _state(sources: frozenset) -> str:
    """The state to name for a set of sources: a hidden state first, else a parameter."""
    hidden = sorted(n for kind, n in sources if kind == "hidden")
    return hidden[0] if hidden else min(n for _, n in sources)


def _describe(sources: frozenset) -> str:
    name = _state(sources)
    kind = "hidden state" if ("hidden", name) in sources else "parameter"
    return f"{kind} {name!r}"


class _Rewriter:
    """The equation hook that rewrites control flow while the step is re-traced.

    Tracks, for every value it produced, the parameters and hidden states it was
    computed from (``live``: ``id(value) -> (value, sources)``; the value is kept so
    its id cannot be reused), which decides what is relevant and what errors name.
    In ``probing`` mode (counting a ``while``'s trips in a throw-away trace) every
    loop counts as relevant and nothing is raised or recorded.
    """

    def __init__(self, policy: ControlFlowPolicy, probing: bool = False):
        self.policy = policy
        self.probing = probing
        self.live: dict[int, tuple[Any, frozenset]] = {}
        self.records: list[CompilationRecord] = []

    # ---- sources ----------------------------------------------------------------------
    def sources(self, value) -> frozenset:
        entry = self.live.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else _NONE

    def sources_of(self, values: Sequence) -> frozenset:
        return frozenset().union(*(self.sources(v) for v in values)) if values else _NONE

    def mark(self, values: Sequence, sources: frozenset) -> None:
        if sources:
            for v in values:
                if jc.is_tracer(v):
                    self.live[id(v)] = (v, self.sources(v) | sources)

    def record(self, kind: DiagnosticKind, sources: frozenset, message: str) -> None:
        if not self.probing:
            self.records.append(CompilationRecord(kind, _state(sources), message))

    # ---- the hook ---------------------------------------------------------------------
    def __call__(self, eqn, invals: list) -> list:
        sources = self.sources_of(invals)
        if jc.is_jit_call(eqn) and get_rule(jc.jit_name(eqn)) is None:
            # a jit inside a branch or loop body: inlined, like the step's own jits
            return jc.interpret(jc.call_jaxpr_of(eqn), invals, hook=self)
        if jc.is_cond(eqn):
            return self._cond(eqn, invals, sources)
        if jc.is_scan(eqn):
            return self._scan(eqn, invals, sources)
        if jc.is_while(eqn):
            return self._while(eqn, invals, sources)
        if jc.is_foldable(eqn) and not any(jc.is_tracer(v) for v in invals):
            # a constant scalar (a loop counter, a predicate): evaluated now, so that
            # loop trip counts and cond indices become known
            with jax.ensure_compile_time_eval():
                return jc.bind_equation(eqn, invals)
        return self._bind(eqn, invals, sources)

    def _bind(self, eqn, invals: list, sources: frozenset) -> list:
        outs = jc.bind_equation(eqn, invals)
        self.mark(outs, sources)
        return outs

    def _relevant(self, sources: frozenset) -> bool:
        return self.probing or bool(sources)

    # ---- cond -------------------------------------------------------------------------
    def _cond(self, eqn, invals: list, sources: frozenset) -> list:
        index, operands = invals[0], invals[1:]
        branches = jc.cond_parts(eqn).branches
        if not jc.is_tracer(index):  # known at compile time: only its branch runs
            k = min(max(int(index), 0), len(branches) - 1)
            return jc.interpret(branches[k], operands, hook=self)
        if not self._relevant(sources) or self.policy.cond == "opaque" or jc.has_effects(eqn):
            return self._bind(eqn, invals, sources)
        per_branch = [jc.interpret(b, operands, hook=self) for b in branches]
        outs = []
        for k, var in enumerate(jc.eqn_outvars(eqn)):
            cases = [_as_array(outs_b[k], var) for outs_b in per_branch]
            out = jax.lax.select_n(index, *cases) if len(cases) > 1 else cases[0]
            self.mark([out], self.sources(index) | self.sources_of(cases))
            outs.append(out)
        self.record(
            DiagnosticKind.COND_CONVERTED,
            sources,
            f"a {len(branches)}-branch cond converted to select_n: every branch runs each step",
        )
        return outs

    # ---- scan -------------------------------------------------------------------------
    def _scan(self, eqn, invals: list, sources: frozenset) -> list:
        sp = jc.scan_parts(eqn)
        if not self._relevant(sources):
            return self._bind(eqn, invals, sources)
        if sp.length > self.policy.scan_unroll_limit or jc.has_effects(eqn):
            why = "it has side effects" if jc.has_effects(eqn) else (
                f"its length {sp.length} exceeds ControlFlowPolicy.scan_unroll_limit={self.policy.scan_unroll_limit}"
            )
            self.record(DiagnosticKind.CONTROL_FLOW_OPAQUE, sources, f"a scan left as it is: {why}")
            return self._bind(eqn, invals, sources)
        n_c, n_carry = sp.num_consts, sp.num_carry
        consts, carry, xs = invals[:n_c], invals[n_c : n_c + n_carry], invals[n_c + n_carry :]
        ys_at: dict[int, list] = {}
        for i in reversed(range(sp.length)) if sp.reverse else range(sp.length):
            x_i = []
            for x in xs:
                piece = jax.lax.index_in_dim(x, i, axis=0, keepdims=False)
                self.mark([piece], self.sources(x))
                x_i.append(piece)
            outs = jc.interpret(sp.body, [*consts, *carry, *x_i], hook=self)
            carry, ys_at[i] = outs[:n_carry], outs[n_carry:]
        ys = []
        for k, var in enumerate(jc.eqn_outvars(eqn)[n_carry:]):
            if sp.length == 0:
                ys.append(jnp.zeros(jc.aval_shape(var), jc.aval_dtype(var)))
                continue
            steps = [ys_at[i][k] for i in range(sp.length)]
            y = jnp.stack([_as_array(s, var, step=True) for s in steps])
            self.mark([y], self.sources_of(steps))
            ys.append(y)
        self.record(DiagnosticKind.SCAN_UNROLLED, sources, f"a scan of length {sp.length} unrolled")
        return [*carry, *ys]

    # ---- while ------------------------------------------------------------------------
    def _while(self, eqn, invals: list, sources: frozenset) -> list:
        wp = jc.while_parts(eqn)
        if not self._relevant(sources):
            return self._bind(eqn, invals, sources)
        limit = self.policy.while_unroll_limit
        trips = None if jc.has_effects(eqn) else _trip_count(wp, invals, self.policy)
        if trips is None or trips > limit:
            if not self.probing and any(self.sources(v) and jc.is_tracer(v) and _inexact(v) for v in invals):
                raise _while_error(eqn, sources, trips, limit)
            return self._bind(eqn, invals, sources)
        n_cc, n_bc = wp.cond_nconsts, wp.body_nconsts
        body_consts, carry = invals[n_cc : n_cc + n_bc], invals[n_cc + n_bc :]
        for _ in range(trips):
            carry = jc.interpret(wp.body, [*body_consts, *carry], hook=self)
        self.record(DiagnosticKind.WHILE_UNROLLED, sources, f"a while loop of static trip count {trips} unrolled")
        return list(carry)


def _trip_count(wp: jc.WhileParts, invals: list, policy: ControlFlowPolicy) -> int | None:
    """The trip count of a ``while`` if it is a compile-time constant, else ``None``;
    ``while_unroll_limit + 1`` stands for any count above the limit.

    Runs the loop in a throw-away trace in which every non-constant operand is an
    abstract stand-in: the count is static iff the predicate is a constant at every
    iteration.
    """
    limit = policy.while_unroll_limit
    traced = [i for i, v in enumerate(invals) if jc.is_tracer(v)]
    n_cc, n_bc = wp.cond_nconsts, wp.body_nconsts
    found: list = []

    def probe(*stand_ins):
        vals = list(invals)
        for i, s in zip(traced, stand_ins):
            vals[i] = s
        cond_consts, body_consts, carry = vals[:n_cc], vals[n_cc : n_cc + n_bc], vals[n_cc + n_bc :]
        rewriter = _Rewriter(policy, probing=True)
        for n in range(limit + 1):
            (pred,) = jc.interpret(wp.cond, [*cond_consts, *carry], hook=rewriter)
            if jc.is_tracer(pred):
                return found.append(None)
            if not bool(pred):
                return found.append(n)
            if n < limit:
                carry = jc.interpret(wp.body, [*body_consts, *carry], hook=rewriter)
        return found.append(limit + 1)

    jc.make_closed_jaxpr(probe, *(jax.ShapeDtypeStruct(jnp.shape(invals[i]), invals[i].dtype) for i in traced))
    return found[0]


def _while_error(eqn, sources: frozenset, trips: int | None, limit: int) -> NotSupportedError:
    what = _describe(sources)
    if jc.has_effects(eqn):
        kind, why = "while_with_effects", "it has side effects, which unrolling would repeat or drop"
    elif trips is None:
        kind, why = "while_dynamic_trip_count", (
            "its trip count depends on data (its predicate is not a compile-time constant)"
        )
    else:
        kind, why = "while_trip_count_too_large", (
            f"its trip count exceeds ControlFlowPolicy.while_unroll_limit={limit}"
        )
    return NotSupportedError(
        f"a 'while' loop in the step carries values computed from {what}, but it cannot be unrolled: {why}. "
        "JAX cannot differentiate a while loop of unknown length in reverse mode, so no gradient can flow "
        "through it. Give it a static trip count (e.g. lax.fori_loop or lax.scan with Python-int bounds), "
        "raise ControlFlowPolicy.while_unroll_limit, or move the loop out of the step",
        kind=kind,
        path=_state(sources),
        primitive=jc.primitive_name(eqn),
        equation=jc.eqn_to_str(eqn),
    )


def _inexact(value) -> bool:
    return bool(jnp.issubdtype(value.dtype, jnp.inexact))


def _as_array(value, var, *, step: bool = False):
    """A branch or body result as an array of ``var``'s dtype (a literal comes back as a
    Python or NumPy scalar); ``step``: ``var`` is a stacked ``ys`` of which it is one slice."""
    if jc.is_tracer(value):
        return value
    shape = jc.aval_shape(var)[1:] if step else jc.aval_shape(var)
    return jnp.broadcast_to(jnp.asarray(value, jc.aval_dtype(var)), shape)
