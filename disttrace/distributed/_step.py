"""Putting host values onto a mesh as global arrays, laid out by partition rules.

A sharded step (``disttrace.train.make_train_step``) is written for the *global*
arrays and compiled with ``in_shardings == out_shardings`` (the :class:`PartitionRules`);
these helpers make its inputs: :func:`shard_batch` for one step's ``(x, y)`` and
:func:`put_global` for any other tree (parameters set from the host, a fresh state).

Multi-host: after ``jax.distributed.initialize`` the same functions run in every
process (SPMD). With ``process_local=True`` each process passes only its own rows of
the batch; otherwise every process passes the whole global value and keeps the rows
its devices hold.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding

from disttrace.distributed._rules import PartitionRules

__all__ = ["check_rules", "put_global", "shard_batch"]


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value that every process holds in full."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def check_rules(who: str, rules) -> None:
    """Raises ValueError naming ``who`` unless ``rules`` are :class:`PartitionRules` on a device mesh."""
    if not isinstance(rules, PartitionRules):
        raise ValueError(f"{who}: argument 'rules' must be a PartitionRules (partition_rules(...)); got {type(rules).__name__}")
    if not isinstance(rules.mesh, jax.sharding.Mesh):
        raise ValueError(f"{who}: argument 'rules' was built on an AbstractMesh; build it on make_mesh(...) to run")


def put_global(tree, shardings):
    """Host values (the same in every process) as global arrays with ``shardings``.

    Args:
      tree: a pytree of arrays (numpy or jax) or scalars.
      shardings: a pytree of ``NamedSharding``s of the same structure (e.g.
        ``rules.state_shardings().params``).

    Returns:
      ``tree`` as ``jax.Array``s, each laid out by its sharding.

    Raises:
      ValueError: if the structures differ (the message shows both).

    Example:
      >>> import jax, numpy as np, disttrace.distributed as dd
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> dd.put_global({"w": np.ones((2, 3))}, {"w": NamedSharding(mesh, P(None, "model"))})["w"].sharding.spec
      P(None, 'model')
    """
    leaves, tree_def = jax.tree.flatten(tree)
    sh_leaves, sh_def = jax.tree.flatten(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    if tree_def != sh_def:
        raise ValueError(f"put_global: argument 'tree' must have the structure {sh_def}; got {tree_def}")
    return jax.tree.unflatten(tree_def, [_global_array(v, s) for v, s in zip(leaves, sh_leaves)])


def shard_batch(rules: PartitionRules, x, y, *, process_local: bool = False) -> tuple:
    """``(x, y)`` as global arrays laid out by ``rules`` (batch on ``data``).

    Args:
      rules: from :func:`partition_rules` with a batch.
      x, y: one step's input and target. With ``process_local=False`` (default) every
        process passes the whole global batch and keeps only its devices' rows; with
        ``process_local=True`` each process passes only its own rows (the leading
        axis is ``B / process_count``) in process order.

    Returns:
      ``(x, y)`` as ``jax.Array``s with the shardings of ``rules.batch_shardings()``.

    Raises:
      ValueError: if a leaf's shape is not the one the rules were built for.

    Example:
      >>> import jax, jax.numpy as jnp, disttrace.distributed as dd
      >>> mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> rules = dd.partition_rules({}, mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> x, y = dd.shard_batch(rules, jnp.ones((2, 3)), jnp.ones((2, 4)))
      >>> x.sharding.spec
      P('data',)
    """
    check_rules("shard_batch", rules)
    shardings = rules.batch_shardings()
    leaves, tree = jax.tree.flatten((x, y))
    if tree != rules.batch_tree:
        raise ValueError(f"shard_batch: arguments (x, y) must have the structure {rules.batch_tree}; got {tree}")
    specs = rules.leaves[rules.n_state :]
    n_proc = jax.process_count()
    out = []
    for leaf, rule, sharding in zip(leaves, specs, jax.tree.leaves(shardings)):
        shape = tuple(np.shape(leaf))
        want = rule.shape
        if process_local and rule.shape:
            want = (rule.shape[0] // n_proc, *rule.shape[1:])
        if shape != want:
            raise ValueError(
                f"shard_batch: leaf {rule.path!r} must have shape {want}"
                f"{' (its rows of the global ' + str(rule.shape) + ')' if process_local else ''}; got {shape}"
            )
        if process_local:
            out.append(jax.make_array_from_process_local_data(sharding, np.asarray(leaf), rule.shape))
        else:
            out.append(_global_array(leaf, sharding))
    return jax.tree.unflatten(tree, out)
