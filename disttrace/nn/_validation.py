"""Argument checks specific to the layers (sizes, input shapes, time constants); the
generic ones (``positive_int``, ``number``, ...) are :mod:`disttrace.checks`'s, re-exported
here so a layer imports one module. Every message names the layer, the argument, the
value given and what is allowed."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import brainstate
import brainunit as u
import jax.numpy as jnp

from disttrace.checks import ArgumentTypeError
from disttrace.checks import boolean as boolean
from disttrace.checks import non_negative_int as non_negative_int
from disttrace.checks import number as number
from disttrace.checks import one_of as one_of
from disttrace.checks import positive_int as positive_int

__all__: list[str] = []


def size(who: str, arg: str, value) -> tuple[int, ...]:
    """An int or a sequence of positive ints (brainstate's ``in_size`` convention) as a tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ValueError(f"{who}: argument {arg!r} must be a positive int or a non-empty tuple; got {value!r}")
        return tuple(positive_int(who, arg, v) for v in value)
    return (positive_int(who, arg, value),)


def features(who: str, x, n: int, name: str = "x") -> None:
    """Checks that the last axis of ``x`` has ``n`` features."""
    shape = jnp.shape(x)
    if not shape or shape[-1] != n:
        raise ValueError(f"{who}: argument {name!r} must have shape (..., {n}); got {shape}")


def trailing(who: str, x, shape: tuple[int, ...], name: str = "x") -> bool:
    """Checks that ``x`` is ``shape`` or ``(B, *shape)``; returns whether it has a batch axis."""
    got = tuple(jnp.shape(x))
    if got == tuple(shape):
        return False
    if len(got) == len(shape) + 1 and got[1:] == tuple(shape):
        return True
    raise ValueError(f"{who}: argument {name!r} must have shape {tuple(shape)} or (B, *{tuple(shape)}); got {got}")


def steps(who: str, arg: str, value, allow_zero: bool = False) -> float:
    """A time constant in simulation steps: a number of steps, or a ``brainunit``
    quantity (e.g. ``5 * u.ms``) divided by ``brainstate.environ.get_dt()``.

    Raises:
      ArgumentTypeError: if ``value`` is neither a real number (``bool`` excluded) nor a
        time quantity.
      ValueError: if it is not finite or not > 0 (>= 0 with ``allow_zero``).
    """
    if isinstance(value, u.Quantity):
        value = float(u.maybe_decimal(value / brainstate.environ.get_dt()))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"{who}: argument {arg!r} must be a number of steps or a time quantity (e.g. 5 * u.ms); "
            f"got {value!r} ({type(value).__name__})"
        )
    return number(who, arg, value, low=0.0, low_open=not allow_zero)
