"""The only module of disttrace that touches JAX internals.

Everything the compiler reads from a jaxpr goes through the small functions below:
the equations, variables and literals of a jaxpr; an equation's primitive, operands,
results and parameters; abstract shapes and dtypes; the jaxprs nested in calls; the
parts of ``cond``/``scan``/``while`` equations (for ``_control_flow``); the
primitive families the analysis treats alike (element-wise, reshapes, loops, calls);
the static parameters of a convolution; binding and interpreting equations. The rest
of the compiler holds equations and variables only as opaque handles it passes back
here, and the ops never see an equation.

Primitive families are sets of primitive *objects* found in ``jax.lax`` or
``jax.extend.core.primitives``, not name strings: a primitive renamed between JAX
versions (the jit primitive was ``"pjit"`` before JAX 0.7; ``jax.checkpoint``'s is
``"remat2"`` where a list of names said ``"remat"``) is still the same object. Only where no object can be found in the installed JAX (a primitive
an older JAX had and this one removed) does a family fall back to matching the name.
These functions detect capabilities instead of pinning JAX versions: a JAX upgrade
that moves an internal breaks this one file, not the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend as jex

__all__ = [
    "ClosedJaxpr",
    "ELEMENTWISE",
    "Jaxpr",
    "JaxprEqn",
    "Literal",
    "PrimitiveSet",
    "Var",
    "aval_dtype",
    "aval_shape",
    "CondParts",
    "ScanParts",
    "WhileParts",
    "bind_equation",
    "call_jaxpr_of",
    "cond_parts",
    "constvars",
    "convolutions",
    "eqn_invars",
    "eqn_outvars",
    "eqn_to_str",
    "eqns",
    "interpret",
    "invars",
    "has_effects",
    "is_call",
    "is_cond",
    "is_elementwise_primitive",
    "is_foldable",
    "is_inexact",
    "is_jit_call",
    "is_literal",
    "is_loop",
    "is_reshape",
    "is_scan",
    "is_stop_gradient",
    "is_tracer",
    "is_while",
    "jit_name",
    "make_closed_jaxpr",
    "outvars",
    "primitive",
    "primitive_name",
    "scan_parts",
    "shape_dtype",
    "sub_jaxprs",
    "while_parts",
]

ClosedJaxpr = jex.core.ClosedJaxpr
Jaxpr = jex.core.Jaxpr
JaxprEqn = jex.core.JaxprEqn
Literal = jex.core.Literal
Var = jex.core.Var
Primitive = jex.core.Primitive

# Where primitive objects are looked up: the public ``jax.lax`` first, then
# ``jax.extend.core.primitives`` (call primitives such as ``jit_p`` live only there).
_PRIMITIVE_MODULES = tuple(m for m in (jax.lax, getattr(jex.core, "primitives", None)) if m is not None)


class PrimitiveSet:
    """A family of JAX primitives, matched by object identity.

    Built from ``(attribute names, fallback names)`` entries: the first attribute
    found in :data:`_PRIMITIVE_MODULES` is the member; only an entry none of whose
    attributes exists in the installed JAX is matched by its fallback names instead.
    """

    def __init__(self, entries: Iterable[tuple[tuple[str, ...], tuple[str, ...]]]):
        objects, names = set(), set()
        for attrs, fallback in entries:
            found = _find_primitive(attrs)
            if found is None:
                names.update(fallback)
            else:
                objects.add(found)
        self.objects = frozenset(objects)
        self.fallback_names = frozenset(names)

    def __contains__(self, prim: Any) -> bool:
        return prim in self.objects or getattr(prim, "name", None) in self.fallback_names


def _find_primitive(attrs: Sequence[str]) -> Primitive | None:
    for attr in attrs:
        for module in _PRIMITIVE_MODULES:
            p = getattr(module, attr, None)
            if isinstance(p, Primitive):
                return p
    return None


def _same(*names: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Entries for primitives exposed as ``<name>_p`` (fallback: the name itself)."""
    return [((f"{n}_p",), (n,)) for n in names]


# Primitives whose every output element depends only on the same element of each
# operand (after broadcasting a scalar or size-1 axes): the hidden dynamics the
# diagonal approximation keeps exactly. ``broadcast_in_dim`` only repeats values.
ELEMENTWISE = PrimitiveSet(
    _same(
        *"""abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type copy
        cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite le
        lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision rem round
        rsqrt select_n sign sin sinh sqrt square sub tan tanh xor broadcast_in_dim stop_gradient""".split()
    )
)
# Shape-only primitives: element-wise when they only add or drop axes of size 1.
# (``expand_dims`` is no primitive: it lowers to ``broadcast_in_dim``.)
_RESHAPES = PrimitiveSet(_same("reshape", "squeeze"))
# Control flow: a hidden state updated inside one has no readable one-step Jacobian.
# (``fori_loop`` is no primitive: it lowers to ``scan`` or ``while``.)
_LOOPS = PrimitiveSet(_same("scan", "while", "cond"))
_COND = PrimitiveSet(_same("cond"))
_SCAN = PrimitiveSet(_same("scan"))
_WHILE = PrimitiveSet(_same("while"))
# The jit call, named "pjit" before JAX 0.7 and exposed as ``pjit_p`` then.
_JIT = PrimitiveSet([(("jit_p", "pjit_p"), ("jit", "pjit"))])
# Calls whose body decides: element-wise iff every equation inside is. The jit calls
# are those nested in a custom_jvp body (jax.nn.relu), which the step's inlining does
# not reach. ``custom_vjp_call_jaxpr`` existed only in older JAX: no object can be
# found in newer versions, so it is matched by name there (it never occurs).
_CALLS = PrimitiveSet(
    [
        (("custom_jvp_call_p",), ("custom_jvp_call",)),
        (("custom_vjp_call_p",), ("custom_vjp_call",)),
        (("custom_vjp_call_jaxpr_p",), ("custom_vjp_call_jaxpr",)),
        (("remat_p", "checkpoint_p"), ("remat", "checkpoint", "remat2")),
        (("jit_p", "pjit_p"), ("jit", "pjit")),
    ]
)
_CONV = PrimitiveSet([(("conv_general_dilated_p",), ("conv_general_dilated",))])
_STOP_GRADIENT = PrimitiveSet(_same("stop_gradient"))


# ---- reading jaxprs ------------------------------------------------------------------
def _open(jaxpr: ClosedJaxpr | Jaxpr) -> Jaxpr:
    return jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr


def eqns(jaxpr: ClosedJaxpr | Jaxpr) -> Sequence[JaxprEqn]:
    """The equations of a (closed) jaxpr, in order."""
    return _open(jaxpr).eqns


def invars(jaxpr: ClosedJaxpr | Jaxpr) -> Sequence[Var]:
    return _open(jaxpr).invars


def outvars(jaxpr: ClosedJaxpr | Jaxpr) -> Sequence[Any]:
    """The results of a (closed) jaxpr: variables or literals."""
    return _open(jaxpr).outvars


def constvars(jaxpr: ClosedJaxpr | Jaxpr) -> Sequence[Var]:
    return _open(jaxpr).constvars


def eqn_invars(eqn: JaxprEqn) -> Sequence[Any]:
    """An equation's operands: variables or literals."""
    return eqn.invars


def eqn_outvars(eqn: JaxprEqn) -> Sequence[Var]:
    return eqn.outvars


def primitive(eqn: JaxprEqn) -> Primitive:
    return eqn.primitive


def primitive_name(eqn: JaxprEqn) -> str:
    return eqn.primitive.name


def aval_shape(atom: Any) -> tuple[int, ...]:
    """The static shape of a variable or literal."""
    return tuple(atom.aval.shape)


def aval_dtype(atom: Any) -> Any:
    return atom.aval.dtype


def shape_dtype(atom: Any) -> jax.ShapeDtypeStruct:
    """A variable's or literal's abstract value as a ``jax.ShapeDtypeStruct``."""
    return jax.ShapeDtypeStruct(aval_shape(atom), aval_dtype(atom))


# ---- primitive families ----------------------------------------------------------------
def is_elementwise_primitive(eqn: JaxprEqn) -> bool:
    """Whether the equation's primitive is element-wise (see :data:`ELEMENTWISE`)."""
    return eqn.primitive in ELEMENTWISE


def is_reshape(eqn: JaxprEqn) -> bool:
    """Whether the equation only changes its operand's shape (reshape, squeeze)."""
    return eqn.primitive in _RESHAPES


def is_loop(eqn_or_primitive: Any) -> bool:
    """Whether an equation (or a primitive) is control flow (scan, while, cond)."""
    return getattr(eqn_or_primitive, "primitive", eqn_or_primitive) in _LOOPS


def is_cond(eqn: JaxprEqn) -> bool:
    """Whether the equation is ``cond`` (``lax.cond``, ``lax.switch``)."""
    return eqn.primitive in _COND


def is_scan(eqn: JaxprEqn) -> bool:
    """Whether the equation is ``scan`` (``lax.scan``, ``fori_loop`` with static bounds)."""
    return eqn.primitive in _SCAN


def is_while(eqn: JaxprEqn) -> bool:
    """Whether the equation is ``while`` (``lax.while_loop``, ``fori_loop`` with traced bounds)."""
    return eqn.primitive in _WHILE


def has_effects(eqn: JaxprEqn) -> bool:
    """Whether the equation has side effects (I/O callbacks, ordered prints, state)."""
    return bool(getattr(eqn, "effects", ()))


def is_foldable(eqn: JaxprEqn) -> bool:
    """Whether the equation may be evaluated at trace time when its operands are constants.

    Only plain primitives (no call, loop or effect) whose every result is a numeric
    scalar: loop counters and predicates, never arrays (folding those would move
    their values into the jaxpr's constants) nor random keys.
    """
    if eqn.primitive in _LOOPS or eqn.primitive in _CALLS or has_effects(eqn):
        return False
    for v in eqn.outvars:
        dtype = aval_dtype(v)
        if aval_shape(v) != () or jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
            return False
    return True


class CondParts(NamedTuple):
    """A ``cond`` equation's parts: operands are ``(index, *operands)``."""

    branches: tuple  # one closed jaxpr per branch, each ``operands -> outputs``


class ScanParts(NamedTuple):
    """A ``scan`` equation's parts: operands are ``(*consts, *carry, *xs)``,
    results ``(*carry, *ys)``; the body maps ``(*consts, *carry, *x) -> (*carry, *y)``."""

    body: Any  # closed jaxpr
    num_consts: int
    num_carry: int
    length: int
    reverse: bool


class WhileParts(NamedTuple):
    """A ``while`` equation's parts: operands are ``(*cond_consts, *body_consts, *carry)``,
    results the final carry; ``cond: (*cond_consts, *carry) -> pred``, ``body:
    (*body_consts, *carry) -> carry``."""

    cond: Any  # closed jaxpr
    body: Any  # closed jaxpr
    cond_nconsts: int
    body_nconsts: int


def _closed(sub: Any) -> ClosedJaxpr:
    return sub if isinstance(sub, ClosedJaxpr) else ClosedJaxpr(sub, ())


def cond_parts(eqn: JaxprEqn) -> CondParts:
    return CondParts(tuple(_closed(b) for b in eqn.params["branches"]))


def scan_parts(eqn: JaxprEqn) -> ScanParts:
    p = eqn.params
    return ScanParts(
        _closed(p["jaxpr"]), int(p["num_consts"]), int(p["num_carry"]), int(p["length"]), bool(p["reverse"])
    )


def while_parts(eqn: JaxprEqn) -> WhileParts:
    p = eqn.params
    return WhileParts(
        _closed(p["cond_jaxpr"]), _closed(p["body_jaxpr"]), int(p["cond_nconsts"]), int(p["body_nconsts"])
    )


def is_stop_gradient(eqn: JaxprEqn) -> bool:
    """Whether the equation is ``stop_gradient`` (no gradient flows through it)."""
    return eqn.primitive in _STOP_GRADIENT


def is_inexact(atom: Any) -> bool:
    """Whether a variable's or literal's dtype is floating or complex (can carry a gradient).

    PRNG key dtypes, integers and booleans are not.
    """
    dtype = aval_dtype(atom)
    try:
        return bool(jax.numpy.issubdtype(dtype, jax.numpy.inexact))
    except TypeError:  # pragma: no cover - an extended dtype numpy cannot classify
        return False


def is_tracer(value: Any) -> bool:
    """Whether ``value`` is a JAX tracer (a value that exists only while a function is traced)."""
    return isinstance(value, jax.core.Tracer)


def is_call(eqn: JaxprEqn) -> bool:
    """Whether the equation calls a body that decides its structure (custom_jvp/vjp, remat, jit)."""
    return eqn.primitive in _CALLS


def convolutions(jaxpr: ClosedJaxpr | Jaxpr) -> tuple[dict, ...]:
    """The static parameters of every convolution equation of a jaxpr, as plain data.

    Returns:
      One dict per ``conv_general_dilated`` equation, in order, with ``strides``,
      ``padding`` (``(low, high)`` pairs), ``lhs_dilation``, ``rhs_dilation``,
      ``dimension_numbers`` (``(lhs_spec, rhs_spec, out_spec)`` axis tuples),
      ``feature_group_count`` and ``batch_group_count``; all Python ints and tuples.
    """
    found = []
    for eqn in eqns(jaxpr):
        if eqn.primitive not in _CONV:
            continue
        p = eqn.params
        dn = p["dimension_numbers"]
        found.append(
            dict(
                strides=tuple(int(s) for s in p["window_strides"]),
                padding=tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
                lhs_dilation=tuple(int(d) for d in p.get("lhs_dilation") or ()),
                rhs_dilation=tuple(int(d) for d in p.get("rhs_dilation") or ()),
                dimension_numbers=tuple(tuple(int(a) for a in spec) for spec in dn),
                feature_group_count=int(p.get("feature_group_count", 1)),
                batch_group_count=int(p.get("batch_group_count", 1)),
            )
        )
    return tuple(found)


def make_closed_jaxpr(fn: Callable, *args: Any) -> ClosedJaxpr:
    """Traces ``fn(*args)`` (args may be arrays or ``jax.ShapeDtypeStruct``)."""
    return jax.make_jaxpr(fn)(*args)


def is_literal(atom: Any) -> bool:
    return isinstance(atom, Literal)


def is_jit_call(eqn: JaxprEqn) -> bool:
    return eqn.primitive in _JIT


def jit_name(eqn: JaxprEqn) -> str | None:
    """The function name a jit equation was created with, else ``None``."""
    if not is_jit_call(eqn):
        return None
    return eqn.params.get("name")


def call_jaxpr_of(eqn: JaxprEqn) -> ClosedJaxpr | None:
    """The callee of a call-like equation (jit, custom_jvp/vjp call, remat), or ``None``."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is None:
            continue
        if isinstance(sub, ClosedJaxpr):
            return sub
        if isinstance(sub, Jaxpr):
            return ClosedJaxpr(sub, ())
    return None


def sub_jaxprs(eqn: JaxprEqn) -> list[Jaxpr]:
    """All jaxprs nested in an equation's parameters (loops, conds, calls)."""
    return list(jex.core.jaxprs_in_params(eqn.params))


def eqn_to_str(eqn: JaxprEqn, limit: int = 300) -> str:
    """A one-line rendering of an equation for error messages."""
    try:
        text = str(eqn)
    except Exception:  # pragma: no cover - printing must never mask the real error
        text = f"{eqn.primitive.name}(...)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bind_equation(eqn: JaxprEqn, invals: Sequence[Any]) -> list[Any]:
    """Evaluates one equation on ``invals`` (concrete or traced); returns its outputs."""
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    # Older JAX returned (subfuns, params); newer returns params only.
    if isinstance(bind_params, tuple):
        subfuns, params = bind_params
        args = [*subfuns, *invals]
    else:
        params = bind_params
        args = list(invals)
    ctx = getattr(eqn, "ctx", None)
    manager = getattr(ctx, "manager", None)
    if manager is not None:
        with manager:
            ans = eqn.primitive.bind(*args, **params)
    else:
        ans = eqn.primitive.bind(*args, **params)
    return list(ans) if eqn.primitive.multiple_results else [ans]


EqnHook = Callable[[JaxprEqn, list[Any]], "list[Any] | None"]


def interpret(
    closed: ClosedJaxpr,
    args: Sequence[Any],
    *,
    hook: EqnHook | None = None,
    inline_jit: Callable[[JaxprEqn], bool] | None = None,
    on_write: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """Evaluates a closed jaxpr equation by equation.

    Args:
      closed: the jaxpr.
      args: one value per invar.
      hook: called as ``hook(eqn, invals)`` before each equation; a non-``None``
        return is used as that equation's outputs instead of binding it.
      inline_jit: for jit equations for which this returns True, the callee is
        interpreted recursively (so ``hook`` also sees its equations) instead of
        being bound as one call.
      on_write: called as ``on_write(var, value)`` for every equation output of the
        top-level jaxpr; its return replaces the value.

    Returns:
      The values of the jaxpr's outvars.
    """
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}

    def read(atom):
        return atom.val if isinstance(atom, Literal) else env[atom]

    for var, val in zip(jaxpr.constvars, closed.consts):
        env[var] = val
    if len(args) != len(jaxpr.invars):
        raise ValueError(f"interpret: expected {len(jaxpr.invars)} arguments, got {len(args)}")
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = hook(eqn, invals) if hook is not None else None
        if outs is None:
            if inline_jit is not None and is_jit_call(eqn) and inline_jit(eqn):
                outs = interpret(call_jaxpr_of(eqn), invals, hook=hook, inline_jit=inline_jit)
            else:
                outs = bind_equation(eqn, invals)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val if on_write is None else on_write(var, val)
    return [read(v) for v in jaxpr.outvars]
