"""Physical units (brainunit quantities) at disttrace's boundaries.

Models written in the brainpy.state style keep weights, states and inputs as
``brainunit.Quantity`` values (a conductance in mS, a membrane potential in mV). JAX
itself never sees a unit: a quantity is a pytree whose one leaf is its *mantissa* (the
number in its own unit) and whose unit is static. disttrace keeps that split:

- **trace ops** take quantities, compute on the mantissas inside the named jit the
  compiler recognises, and give their output the product unit (``x`` in mV times ``w``
  in mS is µA), so the compiled jaxpr, the traces and every rule see plain arrays;
- **the model binding** (:class:`~disttrace.compiler.ModuleBinding`) strips each state's
  units when it reads the model (the functional API, the Trainer, checkpoints and
  sharding all see mantissas) and gives them back when it writes the model or runs a
  step, expressing whatever unit the step wrote in the state's own unit;
- **the stateful** ``etrace_grad`` returns each weight's gradient in the unit
  ``loss unit / weight unit`` (a dimensionless loss and a weight in mS: 1/mS, that is
  kohm), what ``brainstate.transform.grad(..., unit_aware=True)`` gives. To apply an
  optax optimizer, which works on numbers, take :func:`mantissas` of the gradients
  and of the parameters and write the result back in the weights' units.

A state's unit is fixed by the value it holds when the binding reads it: a step may
write a value in another unit of the same dimension (V for mV), which is converted, but
not one of another dimension (refused, naming the state).

Example:
  >>> import brainunit as u, jax.numpy as jnp, disttrace as dt
  >>> y = dt.matmul(jnp.ones((2, 3)) * u.mV, jnp.ones((3, 4)) * u.mS)
  >>> str(y.unit)
  'uA'
  >>> dt.units.mantissas({"w": jnp.ones(2) * u.mS})["w"]
  Array([1., 1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import brainunit as u
import jax
import jax.numpy as jnp

__all__ = [
    "UNITLESS",
    "as_array",
    "attach",
    "conform",
    "grad_units",
    "in_unit",
    "loss_mantissa",
    "mantissas",
    "restore",
    "split",
    "strip",
    "unit_of",
]

UNITLESS = u.UNITLESS


def _is_quantity(x) -> bool:
    return isinstance(x, u.Quantity)


def unit_of(x) -> u.Unit:
    """The unit of ``x``: a quantity's, ``UNITLESS`` for anything else."""
    return x.unit if _is_quantity(x) else UNITLESS


def as_array(x):
    """``x`` as a JAX array, or as a quantity of JAX arrays when it is a quantity
    (``jnp.asarray`` refuses quantities that are not dimensionless)."""
    return u.Quantity(jnp.asarray(x.mantissa), unit=x.unit) if _is_quantity(x) else jnp.asarray(x)


def split(x) -> tuple[Any, u.Unit]:
    """``(mantissa, unit)`` of a quantity; ``(x, UNITLESS)`` for anything else."""
    return (x.mantissa, x.unit) if _is_quantity(x) else (x, UNITLESS)


def attach(y, unit: u.Unit):
    """``y`` (a plain array) as a quantity of ``unit``; ``y`` itself when ``unit`` is
    ``UNITLESS``, and a plain array scaled by the unit's factor when ``unit`` is a
    dimensionless scale (mV/V: 1e-3), as brainunit's ``maybe_decimal`` gives."""
    if unit.is_unitless:
        return y
    return u.maybe_decimal(u.Quantity(y, unit=unit))


def in_unit(who: str, arg: str, value, unit: u.Unit):
    """The mantissa of ``value`` expressed in ``unit`` (no operation when it already is).

    Raises:
      ValueError: if ``value``'s dimension is not ``unit``'s (a plain array counts as
        dimensionless), naming ``who``'s argument ``arg``, the unit given and the one
        required.
    """
    given = unit_of(value)
    if given == unit:
        return split(value)[0]
    if not given.has_same_dim(unit):
        raise ValueError(
            f"{who}: argument {arg!r} must be in a unit of the dimension of {unit} (the unit it is added to or "
            f"stored as); got {'a plain array' if not _is_quantity(value) else given}"
        )
    return u.Quantity(value).to_decimal(unit)


def _flat(value) -> tuple[list, Any]:
    return jax.tree.flatten(value, is_leaf=_is_quantity)


def strip(value) -> tuple[Any, tuple]:
    """``(value without units, units)``: every quantity in the pytree ``value``
    replaced by its mantissa, and the unit of each of its leaves (``None`` for a leaf
    that is not a quantity), in leaf order. :func:`restore` inverts it."""
    leaves, tree = _flat(value)
    units = tuple(leaf.unit if _is_quantity(leaf) else None for leaf in leaves)
    if not any(v is not None for v in units):
        return value, units
    return jax.tree.unflatten(tree, [split(leaf)[0] for leaf in leaves]), units


def restore(value, units: Sequence):
    """``value`` (without units) with the units :func:`strip` took off put back."""
    if not any(v is not None for v in units):
        return value
    leaves, tree = jax.tree.flatten(value)
    if len(leaves) != len(units):
        raise ValueError(f"restore: {len(leaves)} leaves for {len(units)} units")
    return jax.tree.unflatten(tree, [x if v is None else u.Quantity(x, unit=v) for x, v in zip(leaves, units)])


def conform(who: str, value, units: Sequence):
    """``value`` (a step's new value of a state) without units, each leaf expressed in
    the unit of ``units`` (:func:`strip` of the state's value before the step).

    Raises:
      ValueError: if a leaf's dimension differs from the state's, naming ``who``.
    """
    leaves, tree = _flat(value)
    if not any(v is not None for v in units) and not any(_is_quantity(leaf) for leaf in leaves):
        return value
    if len(leaves) != len(units):
        raise ValueError(f"{who}: the step wrote {len(leaves)} leaves where the state holds {len(units)}")
    out = []
    for leaf, v in zip(leaves, units):
        out.append(in_unit(who, "value", leaf, UNITLESS if v is None else v))
    return jax.tree.unflatten(tree, out)


def mantissas(tree):
    """``tree`` with every quantity replaced by its mantissa (the number in its own
    unit): what an optax optimizer, which works on plain arrays, takes."""
    return jax.tree.map(lambda x: split(x)[0], tree, is_leaf=_is_quantity)


def loss_mantissa(loss) -> jax.Array:
    """A step loss as a plain array: a quantity's mantissa, anything else as is."""
    return jnp.asarray(split(loss)[0])


def grad_units(grads, units: Sequence, loss_unit: u.Unit):
    """Gradients (plain arrays, the pytree of one parameter) as quantities of
    ``loss_unit / unit`` for each leaf of ``units`` (:func:`strip` of the parameter;
    ``None``: a plain parameter, whose gradient has ``loss_unit``)."""
    leaves, tree = jax.tree.flatten(grads)
    if len(leaves) != len(units):
        raise ValueError(f"grad_units: {len(leaves)} gradient leaves for {len(units)} units")
    out = [attach(g, loss_unit if v is None else loss_unit / v) for g, v in zip(leaves, units)]
    return jax.tree.unflatten(tree, out)
