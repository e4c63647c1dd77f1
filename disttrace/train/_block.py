"""Many online steps per dispatch: K consecutive stream steps in one jitted ``lax.scan``.

A stream step of a small model takes well under a millisecond of arithmetic, and one
Python dispatch of a jitted step (argument handling, the transfer of one step's batch,
launching the executable) costs about as much: the host loop, not the math, sets the
pace. A *block* ``(K, B, ...)`` of K consecutive steps runs as

.. math::
    (s_k, θ_k) = \\mathrm{train\\_step}(s_{k-1}, θ_{k-1}, x_k, y_k), \\quad k = 1..K,

inside one executable: one parameter update per step, exactly as K calls of
:func:`~disttrace.train.make_train_step`'s step (the scan body *is* that step's function,
so on CPU the results are bitwise equal; a test checks it), with the state's buffers
donated. The block's batch axis is axis 1 (``P(None, *spec)`` of one step's spec: time
is not split across devices). The non-finite policy applies to each step inside the
block, and the state after a block is the state after its K steps (the step counter
advanced by K): a checkpoint after a block equals one after K single steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from disttrace import distributed as dd
from disttrace.train._state import TrainState
from disttrace.train._step import jit_train_steps

__all__ = ["block_shardings", "make_block_step", "shard_block"]


def block_shardings(rules: dd.PartitionRules) -> tuple:
    """``NamedSharding``s of a block ``(xs, ys)``: one step's spec with an unsplit leading
    time axis, ``P(None, *spec)``."""
    return jax.tree.map(lambda s: NamedSharding(rules.mesh, PartitionSpec(None, *s)), rules.batch_specs())


def shard_block(rules: dd.PartitionRules, xs, ys, *, process_local: bool = False) -> tuple:
    """A block ``(xs, ys)`` of K steps as global arrays laid out by :func:`block_shardings`.

    Args:
      rules: from ``disttrace.train.partition_rules`` with one step's batch.
      xs, ys: K steps' inputs and targets: each leaf is ``(K, *step_shape)`` (so the
        batch axis is axis 1). With ``process_local=True`` each process passes its own
        rows of the batch axis, ``(K, B / process_count, ...)``. A leaf that is already
        a ``jax.Array`` with the block's sharding is used as it is (no copy).

    Returns:
      ``(xs, ys)`` as ``jax.Array``s.

    Raises:
      ValueError: if the structure is not the rules' batch, a leaf has no leading axis
        or not one step's shape after it, or the leaves disagree on K (the leaf is named).
    """
    dd.check_rules("shard_block", rules)
    leaves, tree = jax.tree.flatten((xs, ys))
    if tree != rules.batch_tree:
        raise ValueError(f"shard_block: arguments (xs, ys) must have the structure {rules.batch_tree}; got {tree}")
    n_proc = jax.process_count()
    k = None
    out = []
    for leaf, rule, sharding in zip(leaves, rules.leaves[rules.n_state :], jax.tree.leaves(block_shardings(rules))):
        shape = tuple(np.shape(leaf))
        step = rule.shape
        if process_local and step:
            step = (step[0] // n_proc, *step[1:])
        if len(shape) != len(step) + 1 or shape[1:] != step or (k is not None and shape[0] != k):
            want = "(" + ", ".join(["K" if k is None else str(k), *map(str, step)]) + ")"
            raise ValueError(
                f"shard_block: leaf {rule.path!r} must have shape {want} (K steps of one step's "
                f"{'rows ' if process_local else ''}{step}); got {shape}"
            )
        k = shape[0]
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            out.append(leaf)
        elif process_local:
            out.append(jax.make_array_from_process_local_data(sharding, np.asarray(leaf), (k, *rule.shape)))
        else:
            host = np.asarray(leaf)
            out.append(jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index]))
    if k == 0:
        raise ValueError("shard_block: a block must hold at least one step; got K = 0")
    return jax.tree.unflatten(tree, out)


def make_block_step(
    learner, optimizer: optax.GradientTransformation, rules: dd.PartitionRules, *, donate: bool = True,
    nonfinite: str = "ignore", max_skips: int = 10,
) -> Callable:
    """K online steps in one jitted ``lax.scan``: ``block(state, xs, ys) -> (state, losses)``.

    Args:
      learner: from ``disttrace.compile(..., loss_fn=...)``.
      optimizer: an optax transformation (the same as for ``init_train_state``).
      rules: from ``disttrace.train.partition_rules`` with ONE step's batch, on a device mesh.
      donate: donate the input state's buffers to the output.
      nonfinite, max_skips: the non-finite policy, applied to each step of the block
        (:func:`~disttrace.train.train_step`).

    Returns:
      ``block(state, xs, ys) -> (state, losses)``: ``xs``/``ys`` K steps (leaves
      ``(K, B, ...)``, laid out by :func:`shard_block`), ``losses`` (K,) replicated; the
      state after the K steps, as K calls of :func:`~disttrace.train.make_train_step`'s
      step would leave it. Each K compiles once.

    Raises:
      ValueError: as :func:`~disttrace.train.make_train_step`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
      >>> opt, mesh = optax.sgd(0.1), dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> rules = dt.train.partition_rules(learner, opt, mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> block = dt.train.make_block_step(learner, opt, rules)
      >>> state = dt.train.init_train_state(learner, opt, rules)
      >>> state, losses = block(state, *dt.train.shard_block(rules, jnp.ones((5, 2, 3)), jnp.zeros((5, 2, 4))))
      >>> int(state.step), losses.shape
      (5, (5,))
    """
    return jit_train_steps(
        "make_block_step", learner, optimizer, rules, _scan, block_shardings,
        donate=donate, nonfinite=nonfinite, max_skips=max_skips,
    )


def _scan(step: Callable) -> Callable:
    """``block(state, xs, ys) -> (state, losses (K,))``: ``step`` over the K steps."""

    def block(state: TrainState, xs, ys):
        return jax.lax.scan(lambda s, xy: step(s, *xy), state, (xs, ys))

    return block
