"""Exceptions raised by disttrace.

Every user-facing error says what was given, what is allowed and, where possible,
how to fix it. Compiler problems carry structured data (the state or parameter
path, the primitive and the jaxpr equation) so tests can assert on fields rather
than message text.
"""

from __future__ import annotations

__all__ = ["CompilationError", "DisttraceError"]


class DisttraceError(Exception):
    """Base class of every error raised by disttrace."""


class CompilationError(DisttraceError):
    """A model's one-step function cannot be turned into an eligibility-trace graph.

    Attributes:
      kind: short machine-readable reason (e.g. ``"param_outside_trace_op"``,
        ``"hidden_in_loop"``, ``"non_elementwise_hidden"``).
      path: the parameter or hidden-state path the problem concerns, or ``None``.
      primitive: name of the offending JAX primitive, or ``None``.
      equation: the offending jaxpr equation as text, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        path: str | None = None,
        primitive: str | None = None,
        equation: str | None = None,
    ):
        details = []
        if path is not None:
            details.append(f"path: {path}")
        if primitive is not None:
            details.append(f"primitive: {primitive}")
        if equation is not None:
            details.append(f"equation: {equation}")
        full = message if not details else message + "\n  " + "\n  ".join(details)
        super().__init__(full)
        self.kind = kind
        self.path = path
        self.primitive = primitive
        self.equation = equation
