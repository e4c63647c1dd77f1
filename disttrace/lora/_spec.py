"""LoRA specs: which leaf of a parameter tree is frozen, fully tuned, or low-rank adapted.

A *spec* is a pytree with the structure of the parameters whose leaves are
:data:`FREEZE`, :data:`FULL` or an int rank ``r``. A leaf of shape (*lead, O) is
adapted as a matrix (prod(lead), O): a dense (I, O) weight as itself, a channels-last
conv kernel (*window, C_in, C_out) over (prod(window)·C_in) × C_out, so ``r`` is a
rank of that matrix, never a window size. The rank must satisfy
``1 <= r <= min(prod(lead), O)``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from disttrace import checks

__all__ = ["FREEZE", "FULL", "Decision", "check_rank", "lora_scale", "make_lora_spec", "matrix_shape"]


class Decision(enum.Enum):
    """What happens to a parameter leaf that is not low-rank adapted."""

    FREEZE = "freeze"  # kept as it is: no update, no optimizer state, no trace
    FULL = "full"  # trained in full


FREEZE = Decision.FREEZE
FULL = Decision.FULL


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(in, out) of the matrix a leaf of ``shape`` (*lead, O) is adapted as.

    Example:
      >>> from disttrace.lora import matrix_shape
      >>> matrix_shape((3, 3, 16, 32))  # a 3x3 conv kernel, 16 -> 32 channels
      (144, 32)
    """
    return math.prod(shape[:-1]), shape[-1]


def check_rank(where: str, rank, shape: tuple[int, ...]) -> int:
    """``rank`` as an int in ``[1, min(in, out)]`` for a leaf of ``shape``, else ValueError.

    Args:
      where: what the rank belongs to, for the message (a leaf path or an argument).
      rank: the rank given.
      shape: the leaf's shape (at least 2-D).

    Raises:
      ValueError: naming ``where``, the value and the allowed range.
    """
    if len(shape) < 2:
        raise ValueError(f"{where}: a LoRA rank needs a leaf with at least 2 dims (a matrix or kernel); got shape {shape}")
    n_in, n_out = matrix_shape(shape)
    if isinstance(rank, bool) or not isinstance(rank, int | jnp.integer) or not 1 <= rank <= min(n_in, n_out):
        raise ValueError(
            f"{where}: rank must be an int with 1 <= r <= min(in, out) = {min(n_in, n_out)} for shape {shape} "
            f"(adapted as a {n_in}x{n_out} matrix); got {rank!r}"
        )
    return int(rank)


def lora_scale(rank: int, alpha: float = 1.0, rslora: bool = False) -> float:
    """The factor ``s`` of ``W + s·A·B``: ``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA.

    rsLoRA (Kalajdzievski, 2023) keeps the update's scale stable as ``r`` grows.

    Raises:
      ArgumentTypeError: if ``alpha`` is not a number or ``rslora`` not a bool.
      ValueError: if ``alpha`` is not finite and > 0.

    Example:
      >>> from disttrace.lora import lora_scale
      >>> lora_scale(4, alpha=8.0), lora_scale(4, alpha=8.0, rslora=True)
      (2.0, 4.0)
    """
    alpha = checks.number("LoRA", "alpha", alpha, low=0.0, low_open=True)
    checks.boolean("LoRA", "rslora", rslora)
    return alpha / (math.sqrt(rank) if rslora else rank)


def _plain_path(path) -> tuple:
    """A jax key path as plain keys: dict keys, sequence indices, attribute names."""
    out = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
        else:
            out.append(str(k))
    return tuple(out)


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def check_decision(where: str, decision, leaf) -> Decision | int:
    """Validates one spec leaf against its parameter leaf; returns it (ranks as int)."""
    if isinstance(decision, Decision):
        if decision is FULL and not _is_float(leaf):
            raise ValueError(f"{where}: FULL needs a floating-point leaf; got dtype {jnp.result_type(leaf)}")
        return decision
    if isinstance(decision, bool) or not isinstance(decision, int | jnp.integer):
        raise ValueError(f"{where}: a spec leaf must be FREEZE, FULL or an int rank; got {decision!r}")
    if not _is_float(leaf):
        raise ValueError(f"{where}: LoRA needs a floating-point leaf; got dtype {jnp.result_type(leaf)}")
    return check_rank(where, decision, tuple(jnp.shape(leaf)))


def _default_decision(rank: int, tune_vectors: bool, leaf) -> Decision | int:
    if not _is_float(leaf):
        return FREEZE
    shape = tuple(jnp.shape(leaf))
    if len(shape) >= 2:
        return min(rank, *matrix_shape(shape))  # a matrix smaller than `rank` gets its full rank
    return FULL if tune_vectors else FREEZE


def make_lora_spec(
    params: Any,
    decision_fn: Callable[[tuple, Any], Decision | int] | None = None,
    rank: int = 8,
    tune_vectors: bool = False,
) -> Any:
    """Decides, per leaf of ``params``, FREEZE, FULL or a LoRA rank.

    Default: floating leaves with 2 or more dims (matrices (I, O), channels-last conv
    kernels (*window, C_in, C_out)) get LoRA of rank ``min(rank, in, out)``; vectors and
    scalars are frozen, or fully tuned with ``tune_vectors=True``; integer leaves are
    frozen.

    Args:
      params: a pytree of arrays.
      decision_fn: ``decision_fn(path, leaf) -> FREEZE | FULL | int``, with ``path`` a
        tuple of plain keys (dict keys, sequence indices, attribute names); replaces the
        default for every leaf.
      rank: the default rank (>= 1).
      tune_vectors: fully tune vectors and scalars instead of freezing them.

    Returns:
      The spec: a pytree with the structure of ``params``.

    Raises:
      ValueError: on a bad argument, or a decision that does not fit its leaf (the
        message names the leaf path, the value and what is allowed).

    Example:
      >>> import jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.zeros((16, 32)), "b": jnp.zeros(32)}
      >>> spec = lora.make_lora_spec(params, rank=4)
      >>> spec["w"], spec["b"]
      (4, <Decision.FREEZE: 'freeze'>)
    """
    rank = checks.positive_int("make_lora_spec", "rank", rank)
    checks.boolean("make_lora_spec", "tune_vectors", tune_vectors)
    if decision_fn is not None and not callable(decision_fn):
        raise ValueError(f"make_lora_spec: argument 'decision_fn' must be callable or None; got {decision_fn!r}")
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for path, leaf in leaves:
        where = f"make_lora_spec: leaf {jax.tree_util.keystr(path) or '<root>'}"
        if decision_fn is None:
            decision = _default_decision(rank, tune_vectors, leaf)
        else:
            decision = decision_fn(_plain_path(path), leaf)
        out.append(check_decision(where, decision, leaf))
    return jax.tree.unflatten(tree, out)


def check_spec(who: str, params: Any, spec: Any) -> list[tuple[str, Any, Any]]:
    """Checks that ``spec`` fits ``params``; returns ``(path, decision, leaf)`` per leaf.

    Raises:
      ValueError: naming ``who``'s argument ``spec`` on a structure mismatch or a bad leaf.
    """
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params)
    s_leaves, s_tree = jax.tree.flatten(spec)
    if p_tree != s_tree:
        raise ValueError(
            f"{who}: argument 'spec' must have the structure of 'params' (make it with make_lora_spec(params)); "
            f"got {s_tree} for params {p_tree}"
        )
    out = []
    for (path, leaf), decision in zip(p_leaves, s_leaves):
        where = f"{who}: spec leaf {jax.tree_util.keystr(path) or '<root>'}"
        out.append((jax.tree_util.keystr(path), check_decision(where, decision, leaf), leaf))
    return out
