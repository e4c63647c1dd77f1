"""Between the three trees of a LoRA model: base params, adapter, and the joined tree.

- ``params``: the base weights (frozen).
- ``lora_params`` (the *adapter*, from :func:`init_lora`): per spec leaf
  :class:`LoRAFactors`, a FULL array, or ``None`` for FREEZE. Everything that trains.
- the *joined* tree (:func:`join`): per spec leaf :class:`LoRAWeight` (base + factors),
  the FULL array, or the frozen array. Pure model functions take it, the helpers of
  ``disttrace.lora`` (``matmul``, ``conv``, ``embedding``) apply it without forming
  ``W + s·A·B``, and :func:`wrap_optimizer` optimises it with frozen leaves excluded.

:func:`split_trainable` and :func:`join` are inverse: ``join(*split_trainable(t, spec),
spec) == t``. Saving only the trainable half and joining it to the base weights later
is an adapter-only checkpoint. :func:`merge` folds everything back to plain weights.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.lora._factors import LoRAFactors, LoRAWeight
from disttrace.lora._spec import FREEZE, FULL, check_rank, matrix_shape

__all__ = ["join", "merge", "split_trainable"]


def _slots(who: str, name: str, spec: Any, tree: Any) -> list:
    """``tree``'s subtree at every leaf of ``spec`` (spec is a prefix of ``tree``)."""
    try:
        return jax.tree.structure(spec).flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: argument {name!r} must have the structure of 'spec' at its leaves; {e}") from None


def _check_factors(who: str, path: str, factors, shape, rank) -> None:
    if not isinstance(factors, LoRAFactors):
        raise ValueError(f"{who}: slot {path} must hold LoRAFactors (spec rank {rank}); got {type(factors).__name__}")
    n_in, n_out = matrix_shape(tuple(shape))
    if factors.a.shape != (n_in, rank) or factors.b.shape != (rank, n_out):
        raise ValueError(
            f"{who}: slot {path} must hold factors a {(n_in, rank)} and b {(rank, n_out)} for a weight of shape "
            f"{tuple(shape)}; got a {factors.a.shape} and b {factors.b.shape}"
        )


def _merge_flat(ws: list, slots: list, decisions: tuple) -> list:
    out = []
    for decision, w, slot in zip(decisions, ws, slots):
        if decision is FREEZE:
            out.append(w)
        elif decision is FULL:
            out.append(slot)
        else:
            out.append(w + slot.delta(w.shape).astype(w.dtype))
    return out


_merge_donating = jax.jit(_merge_flat, static_argnums=2, donate_argnums=0)


def _spec_paths(spec) -> list[str]:
    return [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(spec)[0]]


def merge(params: Any, lora_params: Any, spec: Any, *, donate: bool = False) -> Any:
    """Plain weights ``W + s·A·B`` (LoRA leaves), the adapter's value (FULL), ``W`` (FREEZE).

    Args:
      params: base weights (or the frozen half of :func:`split_trainable`: FULL slots
        are not read and may be ``None``).
      lora_params: the adapter (from :func:`init_lora` or training).
      spec: the spec both were made with.
      donate: donate ``params``'s buffers to the result (the base arrays must not be
        used afterwards; on accelerators the merge then needs no second copy).

    Returns:
      A tree with the structure of ``spec``, every slot a plain array.

    Raises:
      ValueError: if the trees do not fit ``spec`` (naming the argument and slot).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((4, 3))}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> lp = lora.init_lora(params, spec, jax.random.PRNGKey(0))
      >>> bool((lora.merge(params, lp, spec)["w"] == 1.0).all())  # B = 0 at init
      True
    """
    who = "merge"
    checks.boolean(who, "donate", donate)
    decisions = tuple(jax.tree.leaves(spec))
    ws = _slots(who, "params", spec, params)
    slots = _slots(who, "lora_params", spec, lora_params)
    for path, decision, w, slot in zip(_spec_paths(spec), decisions, ws, slots):
        if decision is FULL:
            if slot is None or (w is not None and jnp.shape(slot) != jnp.shape(w)):
                raise ValueError(
                    f"{who}: FULL slot {path} of 'lora_params' must be an array"
                    + (f" of shape {jnp.shape(w)}" if w is not None else "") + f"; got {slot!r:.80}"
                )
            continue
        if w is None:
            raise ValueError(f"{who}: slot {path} of 'params' is None; give the base weight")
        if decision is not FREEZE:
            check_rank(f"{who}: spec leaf {path}", decision, tuple(jnp.shape(w)))
            _check_factors(who, path, slot, jnp.shape(w), decision)
    structure = jax.tree.structure(spec)
    merged = (_merge_donating if donate else _merge_flat)(ws, slots, decisions)
    return jax.tree.unflatten(structure, merged)


def join(frozen: Any, trainable: Any, spec: Any) -> Any:
    """The joined tree: :class:`LoRAWeight` for LoRA leaves, arrays elsewhere.

    Args:
      frozen: base weights (``params``, or the first half of :func:`split_trainable`;
        its FULL slots are ignored and may be ``None``).
      trainable: the adapter (``lora_params``, or the second half of
        :func:`split_trainable`).
      spec: the spec.

    Returns:
      A tree with the structure of ``spec`` at its leaves: ``LoRAWeight(w, factors)``
      for a rank, the trainable array for FULL, the frozen array for FREEZE.

    Raises:
      ValueError: if the trees do not fit ``spec`` (naming the argument and slot).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> type(tree["w"]).__name__, tree["b"].shape
      ('LoRAWeight', (3,))
    """
    who = "join"
    decisions = jax.tree.leaves(spec)
    f_slots = _slots(who, "frozen", spec, frozen)
    t_slots = _slots(who, "trainable", spec, trainable)
    paths = _spec_paths(spec)
    out = []
    for path, decision, w, slot in zip(paths, decisions, f_slots, t_slots):
        if decision is FREEZE:
            if w is None:
                raise ValueError(f"{who}: FREEZE slot {path} of 'frozen' is None; give the base weight")
            out.append(w)
        elif decision is FULL:
            if slot is None:
                raise ValueError(f"{who}: FULL slot {path} of 'trainable' is None; give the trained array")
            out.append(slot)
        else:
            if w is None:
                raise ValueError(f"{who}: LoRA slot {path} of 'frozen' is None; give the base weight")
            _check_factors(who, path, slot, jnp.shape(w), decision)
            out.append(LoRAWeight(w, slot))
    return jax.tree.unflatten(jax.tree.structure(spec), out)


def split_trainable(tree: Any, spec: Any) -> tuple[Any, Any]:
    """Splits a joined tree into ``(frozen, trainable)``; :func:`join` undoes it.

    ``trainable`` holds exactly what training changes (factors and FULL leaves; ``None``
    at FREEZE slots), so saving it alone is an adapter-only checkpoint.

    Args:
      tree: a joined tree (from :func:`join`).
      spec: its spec.

    Returns:
      ``frozen`` (base arrays; ``None`` at FULL slots) and ``trainable``.

    Raises:
      ValueError: if ``tree`` does not fit ``spec``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> frozen, trainable = lora.split_trainable(tree, spec)
      >>> trainable["b"] is None, type(trainable["w"]).__name__
      (True, 'LoRAFactors')
    """
    who = "split_trainable"
    structure = jax.tree.structure(spec)
    paths = _spec_paths(spec)
    frozen, trainable = [], []
    for path, decision, slot in zip(paths, jax.tree.leaves(spec), _slots(who, "tree", spec, tree)):
        if decision is FREEZE:
            frozen.append(slot)
            trainable.append(None)
        elif decision is FULL:
            frozen.append(None)
            trainable.append(slot)
        else:
            if not isinstance(slot, LoRAWeight):
                raise ValueError(f"{who}: slot {path} of 'tree' must be a LoRAWeight (spec rank {decision}); "
                                 f"got {type(slot).__name__}")
            frozen.append(slot.w)
            trainable.append(slot.factors)
    return jax.tree.unflatten(structure, frozen), jax.tree.unflatten(structure, trainable)
