"""Does a saved state fit a restore target? Checked leaf by leaf before Orbax reads a byte.

Orbax restores onto whatever abstract tree it is given and fails deep inside TensorStore
(or silently broadcasts) when a leaf is missing or of another shape. Comparing Orbax's
metadata of the saved tree with the target first turns that into one message naming
every leaf that differs, and leaves the caller's state untouched.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["abstract_target", "check_fits"]


def _leaf_name(path) -> str:
    """Orbax's name of a leaf: its keys joined by '.' (dict keys and tuple indices as str)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(getattr(k, "key", k)))
    return ".".join(parts)


def _saved_leaves(tree) -> dict[str, Any]:
    """name -> array metadata of a step's saved state tree (Orbax's metadata)."""
    out = {}
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "name")):
        if hasattr(leaf, "shape") and hasattr(leaf, "name"):
            out[leaf.name] = leaf
    return out


def abstract_target(target) -> Any:
    """A pytree of ``ShapeDtypeStruct``s with shardings from ``target`` (see ``Checkpointer.restore``).

    Raises:
      ValueError: if a leaf has no sharding (a NumPy array, say).
    """
    if hasattr(target, "abstract_state"):  # PartitionRules
        return target.abstract_state()

    def leaf(x):
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            raise ValueError(
                "Checkpointer.restore: argument 'target' must hold arrays or jax.ShapeDtypeStructs with a "
                f"sharding (or be PartitionRules); got a leaf {type(x).__name__} of shape {getattr(x, 'shape', '?')} "
                "without one"
            )
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, target)


def check_fits(saved_tree, abstract, *, step: int, directory: str) -> None:
    """Compares Orbax's metadata tree of a saved state with an abstract target.

    Raises:
      ValueError: naming the leaves missing in the checkpoint, missing in the target, or
        of another shape or dtype (the first 8, and how many more).
    """
    saved = _saved_leaves(saved_tree)
    wanted = {_leaf_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    problems = [f"missing in the checkpoint: {n}" for n in sorted(set(wanted) - set(saved))]
    problems += [f"not in the target: {n}" for n in sorted(set(saved) - set(wanted))]
    for n in sorted(set(saved) & set(wanted)):
        s, w = saved[n], wanted[n]
        if tuple(s.shape) != tuple(w.shape) or jax.numpy.dtype(s.dtype) != jax.numpy.dtype(w.dtype):
            problems.append(f"{n}: saved {jax.numpy.dtype(s.dtype).name}{list(s.shape)}, "
                            f"target {jax.numpy.dtype(w.dtype).name}{list(w.shape)}")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"Checkpointer.restore: step {step} in {directory} does not fit argument 'target': {shown}")
