"""Argument checks shared by the layers: every message names the layer, the argument,
the value given and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

import brainstate
import brainunit as u
import jax.numpy as jnp

__all__: list[str] = []


def positive_int(who: str, arg: str, value) -> int:
    """``value`` as an int >= 1, or a ValueError naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer) or value < 1:
        raise ValueError(f"{who}: argument {arg!r} must be a positive int; got {value!r}")
    return int(value)


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
    quantity (e.g. ``5 * u.ms``) divided by ``brainstate.environ.get_dt()``."""
    if isinstance(value, u.Quantity):
        value = float(u.maybe_decimal(value / brainstate.environ.get_dt()))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: argument {arg!r} must be a number of steps or a time quantity; got {value!r}") from None
    if not (value > 0 or (allow_zero and value == 0)):
        raise ValueError(f"{who}: argument {arg!r} must be {'>= 0' if allow_zero else '> 0'} (steps); got {value!r}")
    return value
