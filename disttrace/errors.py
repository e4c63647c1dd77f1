"""Exceptions raised by disttrace.

Every user-facing error says what was given, what is allowed and, where possible,
how to fix it. Compiler problems carry structured data (the state or parameter
path, the primitive and the jaxpr equation) so tests can assert on fields rather
than message text.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "CompilationError", "DisttraceError", "NonFiniteError", "NotSupportedError"]


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


class NotSupportedError(CompilationError, NotImplementedError):
    """A construct or option disttrace recognises but does not support; the message says
    why and what to use instead.

    braintrace's name, so ``except`` clauses port. A :class:`CompilationError` (same
    fields) and a ``NotImplementedError``. Raised by the compiler for control flow no
    gradient could pass through as written: a ``while`` loop that carries a hidden state
    or parameter and cannot be unrolled (``kind="while_dynamic_trip_count"``,
    ``"while_trip_count_too_large"`` or ``"while_with_effects"``; ``primitive="while"``,
    ``path`` the state), a hidden state computed inside a loop left opaque
    (``kind="hidden_in_loop"``), a braintrace ``ControlFlowPolicy`` value disttrace does
    not implement (``kind="unsupported_option"``). ``kind`` defaults to
    ``"not_supported"``, so ``NotSupportedError(message)`` also works.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "not_supported",
        path: str | None = None,
        primitive: str | None = None,
        equation: str | None = None,
    ):
        super().__init__(message, kind=kind, path=path, primitive=primitive, equation=equation)


class CheckpointError(DisttraceError):
    """A checkpoint step (or a checkpoint directory) cannot be used.

    Raised by :class:`disttrace.checkpoint.Checkpointer` when a step asked for explicitly
    is incomplete (no commit marker: its save never finished) or corrupt (a file is
    missing, truncated or changed since the save, so its checksum no longer matches), and
    when a directory cannot be opened for writing (another live writer holds its lock).

    Attributes:
      step: the step concerned, or ``None`` when the problem is the directory itself.
      path: the step directory, or the file (e.g. the writer lock) the problem concerns.
      reason: what is wrong, in words (e.g. ``"state/_METADATA: missing"``).
    """

    def __init__(self, step: int | None, path: str, reason: str):
        what = f"checkpoint step {step} at {path}" if step is not None else f"checkpoint directory {path}"
        super().__init__(f"{what} cannot be used: {reason}")
        self.step = step
        self.path = path
        self.reason = reason

    def __reduce__(self):
        # rebuilt from its fields, so it survives pickling (e.g. across Ray actors)
        return type(self), (self.step, self.path, self.reason)


class NonFiniteError(DisttraceError):
    """Training met a non-finite value (NaN or infinity) and stopped, or refused to save it.

    Raised by :class:`disttrace.train.Trainer` under its non-finite policy: with
    ``nonfinite="raise"`` at the first step whose input, target, loss or gradient is not
    finite (its update not applied); with ``"skip"`` after ``max_skips`` consecutive such
    steps (each one's update skipped); and by ``Trainer.save`` for a state that holds a
    non-finite value (nothing is written).

    Attributes:
      step: the step concerned (1-based: the trainer's ``step_count`` after it), or
        ``None``.
      leaf: the first non-finite leaf: ``"the input x"``, ``"the target y"``, ``"the loss"``,
        ``"the gradient of <parameter path>"``, or a state path such as
        ``"params/layers.0.weight"``.
      reason: what happened and what was done, in words.
    """

    def __init__(self, step: int | None, leaf: str, reason: str):
        where = f"at step {step}" if step is not None else "in the training state"
        super().__init__(f"non-finite value {where} in {leaf}: {reason}")
        self.step = step
        self.leaf = leaf
        self.reason = reason

    def __reduce__(self):
        # rebuilt from its fields, so it survives pickling (e.g. across processes or Ray actors)
        return type(self), (self.step, self.leaf, self.reason)
