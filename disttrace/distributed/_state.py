"""Sharding roles: how a state type says where each of its fields goes on a mesh.

A state type (a ``NamedTuple`` or other pytree node class) declares a class attribute
``sharding_roles``, a dict ``field name -> role``. The partition rules (``_rules``) read
roles only from there: they never match field names, so a learner's state and the
training state that holds it each describe themselves, at any depth. A field whose
value is itself of a type that declares roles is resolved by that type (the learner
state inside the training state); a field a type does not list is replicated.

Roles and what the default partition rules make of them (``B`` batch, ``N`` neurons):

- ``"param"``: a model parameter: its last (output) axis on ``model``, or replicated;
- ``"opt"``: optimizer state: the spec of the parameter it mirrors (same key path
  suffix and shape, e.g. Adam's moments), otherwise replicated;
- ``"hidden"``, ``"trace"``: batch-leading, neurons last: ``P('data', ..., 'model')``;
- ``"x_trace"``: batch-leading: ``P('data')``;
- ``"aux"``, ``"count"``, ``"rng"``, ``"replicated"``: replicated.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from disttrace.compiler import path_str

__all__ = ["ROLES", "check_table", "declared_roles", "key_str", "leaf_roles"]

ROLES = ("param", "opt", "hidden", "trace", "x_trace", "aux", "count", "rng", "replicated")


def key_str(k) -> str:
    """One pytree key as it appears in a rule path (a model path tuple prints dotted)."""
    if isinstance(k, jax.tree_util.DictKey):
        return path_str(k.key) if isinstance(k.key, tuple) else str(k.key)
    if isinstance(k, jax.tree_util.GetAttrKey):
        return k.name
    if isinstance(k, jax.tree_util.SequenceKey):
        return str(k.idx)
    if isinstance(k, jax.tree_util.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def declared_roles(node) -> Mapping[str, str] | None:
    """The ``sharding_roles`` table of ``node``'s type, validated, or ``None``.

    Raises:
      ValueError: if the table is not a dict of field name -> one of :data:`ROLES`.

    Example:
      >>> from typing import NamedTuple
      >>> class S(NamedTuple):
      ...     w: object
      ...     n: object
      ...     sharding_roles = {"w": "param", "n": "count"}
      >>> dict(declared_roles(S(1, 2)))
      {'w': 'param', 'n': 'count'}
      >>> declared_roles({"w": 1}) is None
      True
    """
    table = getattr(type(node), "sharding_roles", None)
    return None if table is None else check_table(f"{type(node).__name__}.sharding_roles", table)


def check_table(who: str, table) -> Mapping[str, str]:
    """``table`` if it is a dict of field name -> one of :data:`ROLES`; else ValueError naming ``who``."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{who} must be a dict of field -> role; got {type(table).__name__}")
    for name, role in table.items():
        if role not in ROLES:
            raise ValueError(f"{who}[{name!r}] must be one of {ROLES}; got {role!r}")
    return table


def _child(node, k):
    if isinstance(k, jax.tree_util.GetAttrKey):
        return getattr(node, k.name, None)
    if isinstance(k, jax.tree_util.DictKey):
        return node[k.key]
    if isinstance(k, jax.tree_util.SequenceKey):
        return node[k.idx]
    return None  # a custom node's flattened index: its children carry no declared roles


def leaf_roles(tree, roles: Mapping[str, str] | None = None) -> list[tuple[tuple[str, ...], str, int]]:
    """The role of every leaf of ``tree``, in tree (flatten) order.

    Walks each leaf's key path from the root; every node on the way whose type declares
    ``sharding_roles`` sets the role of the field the path enters (deeper declarations
    win). Leaves reached through no declaration are ``"replicated"``.

    Args:
      tree: any pytree (arrays, ``jax.ShapeDtypeStruct``s, ...).
      roles: a table for the root, used instead of its type's (e.g. for a plain dict
        ``{"params": ..., "opt_state": ...}``).

    Returns:
      ``(keys, role, anchor)`` per leaf: ``keys`` the path as strings, ``role`` one of
      :data:`ROLES`, ``anchor`` the number of leading keys up to and including the field
      that gave the role (``keys[anchor:]`` is the path inside that field, e.g. a
      parameter's path inside ``params``).

    Raises:
      ValueError: on a ``roles`` table or a declared one with an unknown role.

    Example:
      >>> import jax.numpy as jnp
      >>> tree = {"params": {"w": jnp.zeros((2, 3))}, "step": jnp.zeros(())}
      >>> leaf_roles(tree, roles={"params": "param", "step": "count"})
      [(('params', 'w'), 'param', 1), (('step',), 'count', 1)]
    """
    if roles is not None:
        roles = check_table("argument 'roles'", roles)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, _leaf in flat:
        keys = tuple(key_str(k) for k in path)
        role, anchor, node = "replicated", 0, tree
        for depth, k in enumerate(path):
            table = roles if depth == 0 and roles is not None else (declared_roles(node) if node is not None else None)
            if table is not None:
                role, anchor = table.get(keys[depth], "replicated"), depth + 1
            node = _child(node, k) if node is not None else None
        out.append((keys, role, anchor))
    return out
