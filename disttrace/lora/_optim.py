"""``wrap_optimizer``: an optax transformation that never touches frozen leaves.

Built from ``optax.multi_transform``: trainable leaves (LoRA factors, FULL leaves) go
to the wrapped optimizer, frozen ones (FREEZE leaves, the base ``w`` of each
:class:`LoRAWeight`) to ``optax.set_to_zero()``. ``multi_transform`` hands each inner
optimizer its leaves only (the others are ``optax.MaskedNode``), so frozen leaves get
a zero update and hold **no** optimizer state (no Adam moments): the state is as large
as the adapter's. (lorax 0.2 wraps its optimizer the same way; on current JAX its
``lora`` transform no longer runs.)
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from disttrace.lora._factors import LoRAFactors, LoRAWeight
from disttrace.lora._spec import FREEZE, FULL, Decision

__all__ = ["wrap_optimizer"]

TRAINABLE, FROZEN = "trainable", "frozen"


def _label(decision, slot):
    if slot is None:
        return None
    if decision is FREEZE:
        return jax.tree.map(lambda _: FROZEN, slot)
    if decision is FULL:
        return jax.tree.map(lambda _: TRAINABLE, slot)
    if isinstance(slot, LoRAWeight):
        return LoRAWeight(FROZEN, LoRAFactors(TRAINABLE, TRAINABLE, slot.factors.scale))
    if isinstance(slot, LoRAFactors):
        return LoRAFactors(TRAINABLE, TRAINABLE, slot.scale)
    raise ValueError(
        f"wrap_optimizer: a LoRA slot (spec rank {decision}) must hold a LoRAWeight (joined tree) or LoRAFactors "
        f"(adapter); got {type(slot).__name__}"
    )


def wrap_optimizer(tx: optax.GradientTransformation, spec: Any) -> optax.GradientTransformation:
    """``tx`` for the trainable leaves, a zero update and no state for the frozen ones.

    Args:
      tx: any optax gradient transformation.
      spec: the LoRA spec; the wrapped optimizer works on a joined tree
        (:func:`join`) or an adapter tree (:func:`init_lora`) of that spec.

    Returns:
      An optax ``GradientTransformation``.

    Raises:
      ValueError: if ``tx`` is not a gradient transformation or ``spec`` has a bad
        leaf; at ``init``, if the tree does not fit ``spec``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((8, 8)), "b": jnp.zeros(8)}
      >>> spec = lora.make_lora_spec(params, rank=2)
      >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
      >>> opt = lora.wrap_optimizer(optax.adam(1e-3), spec)
      >>> state = opt.init(tree)
      >>> sum(x.size for x in jax.tree.leaves(state))  # mu + nu of A (8x2) and B (2x8), + the step count
      65
    """
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(f"wrap_optimizer: argument 'tx' must be an optax GradientTransformation; got {tx!r}")
    decisions = jax.tree.leaves(spec)
    for i, d in enumerate(decisions):
        if not isinstance(d, Decision) and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ValueError(f"wrap_optimizer: spec leaf #{i} must be FREEZE, FULL or a positive int rank; got {d!r}")
    structure = jax.tree.structure(spec)

    def labels(tree):
        try:
            slots = structure.flatten_up_to(tree)
        except (ValueError, TypeError) as e:
            raise ValueError(f"wrap_optimizer: the optimised tree must have the structure of 'spec'; {e}") from None
        return structure.unflatten([_label(d, s) for d, s in zip(decisions, slots)])

    return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)

