"""Argument checks shared by every layer, and the one spelling of a state path.

The bottom layer, beside :mod:`disttrace.errors`: every public constructor and entry
point validates its plain arguments here, so each message has the same shape —
``"{who}: argument {arg!r} must be {what}; got {value!r}"`` — and names the function,
the argument, what was given and what is allowed.

A value of the wrong *type* raises :class:`ArgumentTypeError` (a ``TypeError``); a
value of the right type but out of range raises ``ValueError``. ``ArgumentTypeError``
also derives from ``ValueError`` so that code written when every bad argument was a
``ValueError`` keeps catching it. ``bool`` is never accepted where a number is meant
(``True`` is an ``int`` to Python, never to a user).

Example:
  >>> from disttrace import checks
  >>> checks.positive_int("Trainer", "batch_size", 32)
  32
  >>> checks.positive_int("Trainer", "batch_size", True)
  Traceback (most recent call last):
  ...
  disttrace.checks.ArgumentTypeError: Trainer: argument 'batch_size' must be a positive int; got True (bool)
  >>> checks.path_str(("layers", 0, "weight"))
  'layers.0.weight'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Hashable, Sequence

__all__ = [
    "ArgumentTypeError",
    "boolean",
    "non_negative_int",
    "number",
    "one_of",
    "path_str",
    "positive_int",
    "unit_interval",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ``ValueError``, for older callers)."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def positive_int(who: str, arg: str, value) -> int:
    """``value`` as an ``int`` >= 1.

    Raises:
      ArgumentTypeError: if ``value`` is not an integer (``bool`` included).
      ValueError: if it is < 1.
    """
    if not _is_int(value):
        raise ArgumentTypeError(f"{who}: argument {arg!r} must be a positive int; got {_got(value)}")
    if value < 1:
        raise ValueError(f"{who}: argument {arg!r} must be a positive int; got {value!r}")
    return int(value)


def non_negative_int(who: str, arg: str, value) -> int:
    """``value`` as an ``int`` >= 0.

    Raises:
      ArgumentTypeError: if ``value`` is not an integer (``bool`` included).
      ValueError: if it is < 0.
    """
    if not _is_int(value):
        raise ArgumentTypeError(f"{who}: argument {arg!r} must be an int >= 0; got {_got(value)}")
    if value < 0:
        raise ValueError(f"{who}: argument {arg!r} must be an int >= 0; got {value!r}")
    return int(value)


def number(
    who: str,
    arg: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` within optional bounds.

    Args:
      low, high: bounds (``None``: unbounded on that side).
      low_open, high_open: exclude the bound itself.

    Raises:
      ArgumentTypeError: if ``value`` is not a real number (``bool`` included).
      ValueError: if it is not finite or lies outside the bounds.
    """
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    what = "a finite number" + (f" in {lo or '(-inf'}, {hi or 'inf)'}" if lo or hi else "")
    if not _is_real(value):
        raise ArgumentTypeError(f"{who}: argument {arg!r} must be {what}; got {_got(value)}")
    v = float(value)
    bad = not math.isfinite(v)
    bad |= low is not None and (v <= low if low_open else v < low)
    bad |= high is not None and (v >= high if high_open else v > high)
    if bad:
        raise ValueError(f"{who}: argument {arg!r} must be {what}; got {value!r}")
    return v


def unit_interval(who: str, arg: str, value, *, high_open: bool = True) -> float:
    """``value`` in [0, 1) (or [0, 1] with ``high_open=False``), e.g. a decay factor."""
    return number(who, arg, value, low=0.0, high=1.0, high_open=high_open)


def boolean(who: str, arg: str, value) -> bool:
    """``value``, which must be a ``bool`` (not 0/1, not a string).

    Raises:
      ArgumentTypeError: otherwise.
    """
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{who}: argument {arg!r} must be True or False; got {_got(value)}")
    return value


def one_of(who: str, arg: str, value: Hashable, allowed: Collection) -> Hashable:
    """``value`` if it is in ``allowed``.

    Raises:
      ValueError: naming the allowed values otherwise.
    """
    try:
        ok = value in allowed
    except TypeError:  # unhashable
        ok = False
    if not ok:
        # sorted by repr: readable ("['alif', 'lif']") and orderable whatever the types
        names = ", ".join(sorted(map(repr, allowed)))
        raise ValueError(f"{who}: argument {arg!r} must be one of [{names}]; got {value!r}")
    return value


def path_str(path: Sequence | str) -> str:
    """The one readable spelling of a state path: its keys joined with ``"."``.

    ``("layers", 0, "weight")`` -> ``"layers.0.weight"``; a string is returned as is.
    """
    if isinstance(path, str):
        return path
    return ".".join(str(p) for p in path)
