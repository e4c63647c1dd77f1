"""The sharded online train step: one stream step, online gradient, optax update.

.. math::
    (s_t, \\hat y_t, g_t) = \\mathrm{learner.step}(s_{t-1}, θ_{t-1}, x_t, y_t), \\qquad
    θ_t = θ_{t-1} + \\mathrm{optax}(g_t)

The step is written for the *global* arrays and compiled once with
``in_shardings == out_shardings`` (the :class:`PartitionRules`), so its result does not
depend on the mesh and the state's layout does not drift from step to step. With the
batch split over ``data``, every batch contraction of the gradient (``Σ_b δ[b] ∘ E[b]``
for D-RTRL, ``Σ_b ε^x[b] ⊗ s[b]`` for ES-D-RTRL) becomes a per-device partial sum plus
an all-reduce over ``data`` inserted by XLA's SPMD partitioner: for a loss that is a
mean over the batch this *is* the mean over ``data`` of the per-shard gradients. The
only difference to one device is the order of float additions.

Multi-host: after ``jax.distributed.initialize`` the same functions run in every
process (SPMD); batches enter as global arrays through :func:`shard_batch`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from disttrace.distributed._rules import PartitionRules
from disttrace.distributed._state import TrainState, train_state

__all__ = ["init_train_state", "make_train_step", "shard_batch"]


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value that every process holds in full."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _check_rules(who: str, rules) -> None:
    if not isinstance(rules, PartitionRules):
        raise ValueError(f"{who}: argument 'rules' must be a PartitionRules (partition_rules(...)); got {type(rules).__name__}")
    if not isinstance(rules.mesh, jax.sharding.Mesh):
        raise ValueError(f"{who}: argument 'rules' was built on an AbstractMesh; build it on make_mesh(...) to run")


def init_train_state(learner, optimizer: optax.GradientTransformation, rules: PartitionRules) -> TrainState:
    """A fresh :class:`TrainState` laid out by ``rules``.

    Parameters come from the host (every process must hold the same values: same
    seed); optimizer state and traces are created directly in their shards, so a
    trace larger than one device never exists unsharded.

    Args:
      learner: from ``disttrace.compile``.
      optimizer: an optax transformation.
      rules: from :func:`partition_rules` on a device mesh.

    Returns:
      ``TrainState`` whose every leaf has the sharding of ``rules.state_shardings()``.

    Raises:
      ValueError: if ``rules`` is not a :class:`PartitionRules` on a device mesh.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> rules = dd.partition_rules(learner, optax.sgd(0.1), mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> state = dd.init_train_state(learner, optax.sgd(0.1), rules)
      >>> state.learner_state.traces["op0/g0"][0].sharding.spec
      P('data', None, None, 'model')
    """
    _check_rules("init_train_state", rules)
    shardings = rules.state_shardings()
    params = jax.tree.map(_global_array, learner.params(), shardings.params)

    def build(params):
        fresh = train_state(learner, optimizer)
        return fresh._replace(params=params, opt_state=optimizer.init(params))

    return jax.jit(build, out_shardings=shardings)(params)


def shard_batch(rules: PartitionRules, x, y, *, process_local: bool = False) -> tuple:
    """``(x, y)`` as global arrays laid out by ``rules`` (batch on ``data``).

    Args:
      rules: from :func:`partition_rules`.
      x, y: one step's input and target. With ``process_local=False`` (default) every
        process passes the whole global batch and keeps only its devices' rows; with
        ``process_local=True`` each process passes only its own rows (the leading
        axis is ``B / process_count``) in process order.

    Returns:
      ``(x, y)`` as ``jax.Array``s with the shardings of ``rules.batch_shardings()``.

    Raises:
      ValueError: if a leaf's shape is not the one the rules were built for.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> rules = dd.partition_rules(learner, optax.sgd(0.1), mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> x, y = dd.shard_batch(rules, jnp.ones((2, 3)), jnp.ones((2, 4)))
      >>> x.sharding.spec
      P('data',)
    """
    _check_rules("shard_batch", rules)
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


def make_train_step(
    learner, optimizer: optax.GradientTransformation, rules: PartitionRules, *, donate: bool = True
) -> Callable:
    """The jitted, sharded online step ``step(state, x, y) -> (state, loss)``.

    Args:
      learner: from ``disttrace.compile(..., loss_fn=...)`` (an online learner, or
        ``BPTT`` with its one-step horizon).
      optimizer: an optax transformation (the same as for :func:`init_train_state`).
      rules: from :func:`partition_rules` on a device mesh.
      donate: donate the input state's buffers to the output (halves peak memory of
        the traces; the state passed in is invalid afterwards).

    Returns:
      ``step(state, x, y) -> (state, loss)``: ``state`` a :class:`TrainState` laid out
      by ``rules`` (returned with the same shardings), ``x``/``y`` one step's global
      batch (:func:`shard_batch`), ``loss`` the replicated scalar ``loss_fn(out, y)``.

    Raises:
      ValueError: if the learner has no ``loss_fn`` or ``rules`` is not on a device mesh.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=mse)
      >>> mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> opt = optax.sgd(0.1)
      >>> rules = dd.partition_rules(learner, opt, mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> step = dd.make_train_step(learner, opt, rules)
      >>> state, loss = step(dd.init_train_state(learner, opt, rules), *dd.shard_batch(rules, jnp.ones((2, 3)), jnp.ones((2, 4))))
      >>> int(state.step), loss.shape
      (1, ())
    """
    _check_rules("make_train_step", rules)
    if getattr(learner, "loss_fn", None) is None:
        raise ValueError("make_train_step: argument 'learner' has no loss_fn; pass loss_fn=... to disttrace.compile")
    state_sh = rules.state_shardings()
    loss_sh = NamedSharding(rules.mesh, PartitionSpec())

    def step(state: TrainState, x, y):
        learner_state, out, grads = learner.step(state.learner_state, state.params, x, y)
        grads = jax.lax.with_sharding_constraint(grads, state_sh.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss = jnp.asarray(learner.loss_fn(out, y))
        return TrainState(params, opt_state, learner_state, state.step + 1), loss

    return jax.jit(
        step,
        in_shardings=(state_sh, *rules.batch_shardings()),
        out_shardings=(state_sh, loss_sh),
        donate_argnums=(0,) if donate else (),
    )
