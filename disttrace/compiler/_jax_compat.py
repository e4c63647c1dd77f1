"""The only module of disttrace that touches JAX internals.

Everything the compiler needs from jaxprs (variable and literal types, equation
parameters, binding an equation, recursing into call primitives) goes through the
small functions below. They detect capabilities instead of pinning JAX versions:
a JAX upgrade that moves an internal breaks this one file, not the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex

__all__ = [
    "ClosedJaxpr",
    "Jaxpr",
    "JaxprEqn",
    "Literal",
    "Var",
    "bind_equation",
    "call_jaxpr_of",
    "eqn_to_str",
    "interpret",
    "is_jit_call",
    "is_literal",
    "jit_name",
    "make_closed_jaxpr",
    "sub_jaxprs",
]

ClosedJaxpr = jex.core.ClosedJaxpr
Jaxpr = jex.core.Jaxpr
JaxprEqn = jex.core.JaxprEqn
Literal = jex.core.Literal
Var = jex.core.Var

# Names the jit primitive has had across JAX versions ("pjit" before 0.7, "jit" after).
_JIT_NAMES = frozenset({"jit", "pjit"})


def make_closed_jaxpr(fn: Callable, *args: Any) -> ClosedJaxpr:
    """Traces ``fn(*args)`` (args may be arrays or ``jax.ShapeDtypeStruct``)."""
    return jax.make_jaxpr(fn)(*args)


def is_literal(atom: Any) -> bool:
    return isinstance(atom, Literal)


def is_jit_call(eqn: JaxprEqn) -> bool:
    return eqn.primitive.name in _JIT_NAMES


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
