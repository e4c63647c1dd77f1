"""Partition rules: one ``PartitionSpec`` per leaf of a state pytree and of the batch.

The rules are data: :class:`PartitionRules` is a table ``path -> spec`` that can be
printed (:meth:`PartitionRules.table`), changed per path (``overrides``, a mapping of
path regex -> spec) and is checked against the mesh before anything runs.

The state is any pytree; what each leaf is comes from the *roles declared by the state
types* (``sharding_roles``, see ``_state``), never from matching field names. Paths join
the pytree keys with ``/``; a model path tuple prints dotted (``('layers', 0, 'weight')``
-> ``layers.0.weight``). Defaults by role (DESIGN §4), ``B`` batch, ``K`` states per
hidden group, ``N`` neurons, ``O`` op outputs; paths as in a
:class:`disttrace.train.TrainState`:

==========================================  =====================================
leaf (role)                                 default spec
==========================================  =====================================
``params/<p>`` (param)                      last (output/neuron) axis on ``model``
                                            (``params="model"``) or replicated
                                            (``params="replicated"``); scalars
                                            replicated
``opt_state/.../<p>`` (opt)                 the spec of parameter ``<p>`` when the
                                            leaf has its shape (Adam's ``mu``,
                                            ``nu``); otherwise (counts, factored
                                            moments) replicated
``learner_state/hidden/<h>`` (hidden)       ``P('data', ..., 'model')``; (B,):
(B, ..., N)                                 ``P('data')``
``learner_state/traces/<key>/<i>`` (trace)  ``P('data', None, ..., 'model')``: the
                                            D-RTRL trace (B, K, I, O) (matmul,
                                            LoRA), its bias part (B, K, O), conv
                                            (B, K, P, F, O), element-wise
                                            (B, K, N...), sparse (B, K, nnz) and
                                            the ES-D-RTRL output trace (B, K, N...)
``learner_state/x_traces/<key>`` (x_trace)  ``P('data')``
(B, I...)
``learner_state/aux/...`` (aux)             replicated
counters, RNG keys (count, rng)             replicated
``x/...``, ``y/...`` (B, ...)               ``P('data')``; scalars replicated
==========================================  =====================================

So the D-RTRL trace, the memory that grows as B·|W|, is split B-wise over ``data``
and O-wise over ``model``: per device it is ``1/(data·model)`` of the whole.

Overrides are matched with ``re.fullmatch`` in the order given; the first match
wins. An override of a parameter also moves the optimizer leaves that follow it.
Every override must apply to some leaf (a typo, or a key shadowed by earlier ones, is an
error, not a silent no-op).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from disttrace.distributed._mesh import AXES
from disttrace.distributed._state import key_str, leaf_roles

__all__ = ["LeafRule", "PartitionRules", "partition_rules"]

_PARAM_MODES = ("model", "replicated")


@dataclasses.dataclass(frozen=True)
class LeafRule:
    """The spec of one leaf and where it came from.

    Attributes:
      path: e.g. ``"learner_state/hidden/layers.0.V"``.
      shape: the leaf's global shape.
      dtype: its dtype.
      spec: its ``PartitionSpec``.
      source: ``"default: <role>"``, ``"follows params/<p>"`` or ``"override <regex>"``.
    """

    path: str
    shape: tuple[int, ...]
    dtype: Any
    spec: PartitionSpec
    source: str


def _spec_axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _last_axis(ndim: int, first: str | None) -> PartitionSpec:
    """``first`` on axis 0 and ``model`` on the last axis (``ndim >= 2``)."""
    if ndim == 0:
        return PartitionSpec()
    if ndim == 1:
        return PartitionSpec(first) if first else PartitionSpec("model")
    return PartitionSpec(first, *([None] * (ndim - 2)), "model")


def _default(role: str, ndim: int, params: str) -> PartitionSpec:
    if ndim == 0 or role in ("opt", "aux", "count", "rng", "replicated"):
        return PartitionSpec()
    if role == "param":
        return _last_axis(ndim, None) if params == "model" else PartitionSpec()
    if role in ("hidden", "trace"):
        return _last_axis(ndim, "data")
    if role in ("x_trace", "batch"):
        return PartitionSpec("data")
    raise AssertionError(role)


def _mesh_shape(mesh) -> dict[str, int]:
    return dict(mesh.shape)


def _check_spec(path: str, shape: tuple[int, ...], spec: PartitionSpec, mesh_shape: dict[str, int]) -> None:
    where = f"leaf {path!r} of shape {shape} with spec {spec} on mesh {mesh_shape}"
    fix = f"choose sizes divisible by the mesh axes or override this path, e.g. overrides={{{re.escape(path)!r}: PartitionSpec()}}"
    if len(spec) > len(shape):
        raise ValueError(f"partition rules: {where}: the spec has {len(spec)} entries for {len(shape)} axes; {fix}")
    used: set[str] = set()
    for axis, (dim, entry) in enumerate(zip(shape, spec)):
        names = _spec_axes(entry)
        for name in names:
            if not isinstance(name, str) or name not in mesh_shape:
                raise ValueError(
                    f"partition rules: {where}: unknown mesh axis {name!r}; allowed: {sorted(mesh_shape)} or None"
                )
            if name in used:
                raise ValueError(f"partition rules: {where}: mesh axis {name!r} is used twice")
            used.add(name)
        size = math.prod(mesh_shape[n] for n in names)
        if dim % size:
            raise ValueError(
                f"partition rules: {where}: axis {axis} has size {dim}, which mesh axes {names} (size {size}) "
                f"do not divide; {fix}"
            )


@dataclasses.dataclass(frozen=True, eq=False)
class PartitionRules:
    """Specs for every leaf of a state pytree and of one step's batch ``(x, y)``.

    Use :func:`partition_rules` to build one.

    Attributes:
      mesh: the mesh the specs refer to (a ``Mesh``, or an ``AbstractMesh`` for
        layout arithmetic without devices).
      leaves: one :class:`LeafRule` per leaf: the state's leaves, then the batch's.
    """

    mesh: Mesh | AbstractMesh
    leaves: tuple[LeafRule, ...]
    state_tree: Any
    batch_tree: Any
    n_state: int

    @property
    def specs(self) -> dict[str, PartitionSpec]:
        """``path -> PartitionSpec`` for every leaf, in tree order."""
        return {leaf.path: leaf.spec for leaf in self.leaves}

    def state_specs(self):
        """The specs as a pytree shaped like the state."""
        return jax.tree.unflatten(self.state_tree, [leaf.spec for leaf in self.leaves[: self.n_state]])

    def batch_specs(self) -> tuple:
        """The specs of ``(x, y)``, shaped like the example batch."""
        return jax.tree.unflatten(self.batch_tree, [leaf.spec for leaf in self.leaves[self.n_state :]])

    def state_shardings(self):
        """``NamedSharding``s shaped like the state."""
        return jax.tree.map(lambda s: NamedSharding(self.mesh, s), self.state_specs())

    def abstract_state(self):
        """``jax.ShapeDtypeStruct``s with their ``NamedSharding``s, shaped like the
        state (a restore or AOT-compile target; needs a concrete ``Mesh``)."""
        leaves = [
            jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(self.mesh, leaf.spec))
            for leaf in self.leaves[: self.n_state]
        ]
        return jax.tree.unflatten(self.state_tree, leaves)

    def batch_shardings(self) -> tuple:
        """``NamedSharding``s of ``(x, y)`` (``()`` when the rules were built without a batch)."""
        return jax.tree.map(lambda s: NamedSharding(self.mesh, s), self.batch_specs())

    def leaf_bytes_per_device(self, leaf: LeafRule) -> int:
        """Bytes of one device's shard of ``leaf``."""
        mesh_shape = _mesh_shape(self.mesh)
        split = math.prod(mesh_shape[n] for e in leaf.spec for n in _spec_axes(e))
        return math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize // split

    def bytes_per_device(self, prefix: str = "") -> int:
        """Bytes per device of the leaves whose path starts with ``prefix`` (all by default)."""
        return sum(self.leaf_bytes_per_device(leaf) for leaf in self.leaves if leaf.path.startswith(prefix))

    def table(self) -> str:
        """A printable table: path, shape, dtype, spec, MiB per device, rule source."""
        rows = [
            (leaf.path, str(leaf.shape), np.dtype(leaf.dtype).name, str(leaf.spec),
             f"{self.leaf_bytes_per_device(leaf) / 2**20:.3f}", leaf.source)
            for leaf in self.leaves
        ]
        head = ("path", "shape", "dtype", "spec", "MiB/dev", "rule")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        lines = [f"mesh {_mesh_shape(self.mesh)}", fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        lines += [fmt(r) for r in rows]
        lines.append(f"total per device: {self.bytes_per_device() / 2**20:.3f} MiB")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _compile_overrides(overrides) -> list[tuple[str, re.Pattern, PartitionSpec]]:
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"partition_rules: argument 'overrides' must be a mapping of path regex -> PartitionSpec; got "
            f"{type(overrides).__name__}"
        )
    out = []
    for pattern, spec in overrides.items():
        if not isinstance(pattern, str):
            raise ValueError(f"partition_rules: argument 'overrides' keys must be regex strings; got {pattern!r}")
        if not isinstance(spec, PartitionSpec):
            raise ValueError(
                f"partition_rules: argument 'overrides'[{pattern!r}] must be a jax.sharding.PartitionSpec; got "
                f"{spec!r}"
            )
        try:
            out.append((pattern, re.compile(pattern), spec))
        except re.error as e:
            raise ValueError(f"partition_rules: argument 'overrides' key {pattern!r} is not a valid regex: {e}") from e
    return out


def _flatten(tree, prefix: tuple[str, ...] = ()):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(prefix + tuple(key_str(k) for k in kp), leaf) for kp, leaf in flat], treedef


def _abstract_leaf(x, who: str) -> jax.ShapeDtypeStruct:
    if who == "batch" and not hasattr(x, "dtype"):
        x = jnp.asarray(x)  # a Python scalar target (e.g. a mask): its device dtype
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise ValueError(
            f"partition_rules: argument {who!r} must hold arrays or jax.ShapeDtypeStructs; got a leaf "
            f"{type(x).__name__}"
        )
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


def partition_rules(
    state,
    mesh: Mesh | AbstractMesh,
    batch: tuple | None = None,
    *,
    params: str = "model",
    overrides: Mapping[str, PartitionSpec] | None = None,
    roles: Mapping[str, str] | None = None,
) -> PartitionRules:
    """Partition rules for any state pytree (and one step's batch) on ``mesh``.

    Args:
      state: the state: a pytree of arrays or ``jax.ShapeDtypeStruct``s (e.g.
        ``jax.eval_shape`` of its constructor, so nothing is allocated). Leaf roles come
        from the ``sharding_roles`` its types declare (``_state``); a
        :class:`disttrace.train.TrainState` declares all of them
        (``disttrace.train.partition_rules`` builds one for a learner).
      mesh: a mesh with axes ``'data'`` and ``'model'`` (:func:`make_mesh`), or a
        ``jax.sharding.AbstractMesh`` for layout arithmetic without devices.
      batch: one step's ``(x, y)``: arrays or ``jax.ShapeDtypeStruct``s, batch-leading;
        ``None``: rules for the state alone.
      params: ``"model"`` (the last axis of every parameter on ``model``) or
        ``"replicated"``.
      overrides: ``{path_regex: PartitionSpec}``; ``re.fullmatch`` on the paths of
        :attr:`PartitionRules.specs`, first match wins.
      roles: ``field -> role`` for the root, when its type declares none (e.g. a
        plain dict state).

    Returns:
      A validated :class:`PartitionRules`.

    Raises:
      ValueError: on a bad argument, an override that matches no leaf, or a spec that
        does not fit its leaf (an unknown axis, too many entries, or a mesh axis that
        does not divide the dimension); the message names the leaf path, its shape and
        the mesh.

    Example:
      >>> import jax.numpy as jnp, disttrace.distributed as dd
      >>> from jax.sharding import AbstractMesh
      >>> state = {"params": {"w": jnp.zeros((3, 4))}, "hidden": jnp.zeros((2, 4))}
      >>> rules = dd.partition_rules(state, AbstractMesh((2, 2), ("data", "model")),
      ...                            roles={"params": "param", "hidden": "hidden"})
      >>> rules.specs
      {'hidden': P('data', 'model'), 'params/w': P(None, 'model')}
    """
    if params not in _PARAM_MODES:
        raise ValueError(f"partition_rules: argument 'params' must be one of {_PARAM_MODES}; got {params!r}")
    if not isinstance(mesh, Mesh | AbstractMesh):
        raise ValueError(f"partition_rules: argument 'mesh' must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    mesh_shape = _mesh_shape(mesh)
    if not set(AXES) <= set(mesh_shape):
        raise ValueError(
            f"partition_rules: argument 'mesh' must have axes {AXES} (see make_mesh); got axes {tuple(mesh_shape)}"
        )
    if batch is not None and (not isinstance(batch, tuple) or len(batch) != 2):
        raise ValueError(f"partition_rules: argument 'batch' must be one step's (x, y); got {type(batch).__name__}")
    rules = _compile_overrides(overrides)
    matched: set[str] = set()

    def override(path: str) -> tuple[PartitionSpec, str] | None:
        for pattern, regex, spec in rules:
            if regex.fullmatch(path):
                matched.add(pattern)
                return spec, f"override {pattern!r}"
        return None

    shapes = jax.tree.map(lambda x: _abstract_leaf(x, "state"), state)
    state_roles = leaf_roles(state, roles)
    state_leaves, state_tree = _flatten(shapes)
    if batch is None:
        batch_leaves, batch_tree = [], jax.tree.structure(())
    else:
        batch_leaves, batch_tree = _flatten(jax.tree.map(lambda x: _abstract_leaf(x, "batch"), batch))
        batch_leaves = [((("x", "y")[int(keys[0])],) + keys[1:], leaf) for keys, leaf in batch_leaves]

    # parameters first, so that optimizer leaves follow the final (overridden) param specs
    param_specs: dict[tuple[str, ...], tuple[str, tuple, PartitionSpec]] = {}
    resolved = []
    for (keys, leaf), (_, role, anchor) in zip(state_leaves, state_roles, strict=True):
        path = "/".join(keys)
        spec, source = _default(role, leaf.ndim, params), f"default: {role}"
        if role == "param":
            spec, source = override(path) or (spec, source)
            param_specs[keys[anchor:]] = (path, leaf.shape, spec)
        resolved.append([keys, path, leaf, spec, source, role])
    for item in resolved:
        keys, path, leaf, spec, source, role = item
        if role == "param":
            continue
        if role == "opt":
            # optax keeps param-structured subtrees whole: the longest param key path that
            # ends this leaf's path is its parameter (a shorter one could be another param)
            follows = [(len(sfx), p) for sfx, p in param_specs.items() if sfx and keys[-len(sfx):] == sfx]
            follow = max(follows, key=lambda f: f[0])[1] if follows else None
            if follow is not None and follow[1] == leaf.shape:
                spec, source = follow[2], f"follows {follow[0]}"
        item[3:5] = override(path) or (spec, source)
    leaves = [LeafRule(path, tuple(leaf.shape), leaf.dtype, spec, source) for _, path, leaf, spec, source, _ in resolved]
    for keys, leaf in batch_leaves:
        path = "/".join(keys)
        spec, source = override(path) or (_default("batch", leaf.ndim, params), "default: batch")
        leaves.append(LeafRule(path, tuple(leaf.shape), leaf.dtype, spec, source))

    unmatched = [p for p, _, _ in rules if p not in matched]
    if unmatched:
        raise ValueError(
            f"partition_rules: argument 'overrides' key(s) {unmatched} apply to no leaf (they match no path, or "
            f"every path they match is taken by an earlier key); paths are e.g. {[leaf.path for leaf in leaves[:6]]} "
            f"(print PartitionRules.table() for all)"
        )
    for leaf in leaves:
        _check_spec(leaf.path, leaf.shape, leaf.spec, mesh_shape)
    return PartitionRules(mesh, tuple(leaves), state_tree, batch_tree, len(state_leaves))
