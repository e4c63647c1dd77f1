"""braintrace's argument names beside ours, for the ops that take both.

The ops accept braintrace 0.2.8's signatures so that a braintrace model switches by
changing the import. Where braintrace names an argument differently (``weight`` for
our ``w``, ``kernel`` for a conv kernel, ``indices`` for ``idx``) both names are
accepted, by keyword, and giving both is an error rather than a silent choice.
braintrace's ``weight_fn``/``bias_fn``-style transforms are applied to the parameter
*before* the op: the op then sees a parameter-only weight, which the learners map back
to the raw parameter through the VJP of the parameter-only computation (exact, since a
parameter is constant within a sequence).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["one_name", "transformed"]


def one_name(who: str, ours: tuple[str, Any], theirs: tuple[str, Any], *, required: bool = True):
    """The value given under one of two names (ours, braintrace's).

    Args:
      who: the op, for messages.
      ours, theirs: ``(name, value)`` pairs; ``None`` means not given.
      required: whether one of them must be given.

    Raises:
      ValueError: if both are given, or neither where one is required.
    """
    (a, va), (b, vb) = ours, theirs
    if va is not None and vb is not None:
        raise ValueError(f"{who}: give argument {a!r} or its braintrace name {b!r}, not both")
    if required and va is None and vb is None:
        raise ValueError(f"{who}: argument {a!r} (braintrace name {b!r}) is required")
    return va if va is not None else vb


def transformed(who: str, arg: str, fn: Callable | None, value):
    """``fn(value)`` for a braintrace-style transform argument ``arg`` (``None``: ``value``).

    Raises:
      ValueError: if ``fn`` is neither ``None`` nor callable.
    """
    if fn is None or value is None:
        return value
    if not callable(fn):
        raise ValueError(f"{who}: argument {arg!r} must be callable or None; got {type(fn).__name__}")
    return fn(value)
