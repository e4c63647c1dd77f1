"""The online train step: one stream step, online gradient, optax update.

.. math::
    (s_t, \\hat y_t, g_t) = \\mathrm{learner.step}(s_{t-1}, θ_{t-1}, x_t, y_t), \\qquad
    θ_t = θ_{t-1} + \\mathrm{optax}(g_t)

:func:`train_step` is the pure function; :func:`make_train_step` compiles it for the
*global* arrays with ``in_shardings == out_shardings`` (the partition rules), so its
result does not depend on the mesh and the state's layout does not drift from step to
step. With the batch split over ``data``, every batch contraction of the gradient
(``Σ_b δ[b] ∘ E[b]`` for D-RTRL, ``Σ_b ε^x[b] ⊗ s[b]`` for ES-D-RTRL) becomes a
per-device partial sum plus an all-reduce over ``data`` inserted by XLA's SPMD
partitioner: for a loss that is a mean over the batch this *is* the mean over ``data``
of the per-shard gradients. The only difference to one device is the order of float
additions.

Multi-host: after ``jax.distributed.initialize`` the same functions run in every
process (SPMD); batches enter as global arrays through ``disttrace.distributed.shard_batch``.

``nonfinite="skip"`` or ``"raise"`` guards each step (``disttrace.train._nonfinite``): a
step with a non-finite input, target, loss or gradient changes nothing but the step
counter and :class:`~disttrace.train.NonFiniteCounts`, decided inside the step (no host
read). :func:`make_block_step` runs K such steps in one ``lax.scan`` (``_block``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec

from disttrace import distributed as dd
from disttrace.train._nonfinite import check_policy, finite_flags, guard
from disttrace.train._state import TrainState
from disttrace.units import loss_mantissa

__all__ = ["apply_gradients", "make_train_step", "train_step"]


def apply_gradients(optimizer: optax.GradientTransformation, state: TrainState, grads) -> TrainState:
    """One optimizer update of ``state`` with ``grads`` (a pytree like ``state.params``);
    the step counter advances, the learner state is unchanged (jit-able)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state, step=state.step.increment())


def train_step(
    learner, optimizer: optax.GradientTransformation, state: TrainState, x, y, *, grad_shardings=None,
    nonfinite: str = "ignore", max_skips: int = 10,
):
    """One online step (pure, jit-able): ``(state, loss)``.

    Args:
      learner: from ``disttrace.compile(..., loss_fn=...)`` (an online learner, or
        ``BPTT`` with its one-step horizon).
      optimizer: an optax transformation.
      state: a :class:`TrainState`.
      x, y: one step's input (B, ...) and target (for ``learner.loss_fn``).
      grad_shardings: shardings to constrain the gradients to (the parameters'), or ``None``.
      nonfinite: ``"ignore"`` (no check, the default here), ``"skip"`` (a step whose
        ``x``, ``y``, loss or gradient is not finite leaves params, optimizer and learner
        state unchanged; after ``max_skips`` consecutive ones every later step does too:
        the state is halted, ``state.nonfinite.run >= max_skips``) or ``"raise"`` (halted
        at the first). The :class:`~disttrace.train.Trainer` (``"skip"`` by default) reads
        the counters and raises ``NonFiniteError``; a caller of this function reads
        ``state.nonfinite`` itself.
      max_skips: the run of consecutive skipped steps that halts ``"skip"``.

    Returns:
      The next state (learner state advanced, one update applied, or the step skipped)
      and this step's loss ``loss_fn(out, y)`` (), whether or not it was applied.

    Raises:
      ValueError: if the learner has no ``loss_fn``, or on a bad policy argument.

    Example:
      >>> import jax.numpy as jnp, optax, disttrace as dt
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
      >>> state = dt.train.init_train_state(learner, optax.sgd(0.1))
      >>> state, loss = dt.train.train_step(learner, optax.sgd(0.1), state, jnp.ones((2, 3)), jnp.zeros((2, 4)))
      >>> int(state.step), loss.shape
      (1, ())
    """
    if getattr(learner, "loss_fn", None) is None:
        raise ValueError("train_step: argument 'learner' has no loss_fn; pass loss_fn=... to disttrace.compile")
    limit = check_policy("train_step", nonfinite, max_skips)
    learner_state, out, grads = learner.step(state.learner_state, state.params, x, y)
    if grad_shardings is not None:
        grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
    loss = loss_mantissa(learner.loss_fn(out, y))
    new = apply_gradients(optimizer, state, grads)._replace(learner_state=learner_state)
    if limit:
        new = guard(state, new, finite_flags(x, y, loss, grads), limit)
    return new, loss


def make_train_step(
    learner, optimizer: optax.GradientTransformation, rules: dd.PartitionRules, *, donate: bool = True,
    nonfinite: str = "ignore", max_skips: int = 10,
) -> Callable:
    """:func:`train_step` jitted and sharded by ``rules``: ``step(state, x, y) -> (state, loss)``.

    Args:
      learner: from ``disttrace.compile(..., loss_fn=...)``.
      optimizer: an optax transformation (the same as for ``init_train_state``).
      rules: from :func:`disttrace.train.partition_rules` with a batch, on a device mesh.
      donate: donate the input state's buffers to the output (halves peak memory of
        the traces; the state passed in is invalid afterwards).
      nonfinite, max_skips: the non-finite policy (:func:`train_step`).

    Returns:
      ``step(state, x, y) -> (state, loss)``: ``state`` laid out by ``rules`` (returned
      with the same shardings), ``x``/``y`` one step's global batch
      (``disttrace.distributed.shard_batch``), ``loss`` the replicated scalar.

    Raises:
      ValueError: if the learner has no ``loss_fn``, ``rules`` is not on a device mesh
        or has no batch, or on a bad policy argument.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
      >>> opt, mesh = optax.sgd(0.1), dd.make_mesh(1, 1, devices=jax.devices()[:1])
      >>> rules = dt.train.partition_rules(learner, opt, mesh, (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> step = dt.train.make_train_step(learner, opt, rules)
      >>> state = dt.train.init_train_state(learner, opt, rules)
      >>> state, loss = step(state, *dd.shard_batch(rules, jnp.ones((2, 3)), jnp.ones((2, 4))))
      >>> int(state.step), loss.shape
      (1, ())
    """
    return jit_train_steps(
        "make_train_step", learner, optimizer, rules, lambda step: step, lambda r: r.batch_shardings(),
        donate=donate, nonfinite=nonfinite, max_skips=max_skips,
    )


def jit_train_steps(
    who: str, learner, optimizer: optax.GradientTransformation, rules: dd.PartitionRules,
    over: Callable[[Callable], Callable], batch_shardings: Callable[[dd.PartitionRules], tuple], *,
    donate: bool, nonfinite: str, max_skips: int,
) -> Callable:
    """The jitted, sharded runner behind :func:`make_train_step` and
    ``make_block_step``: ``jax.jit(over(step))``, where ``step(state, x, y) -> (state,
    loss)`` is :func:`train_step` with the gradients constrained to the parameters'
    shardings and the non-finite policy applied, so a block's scan body *is* the single
    step's function.

    Args:
      who: the caller's name, for messages.
      learner, optimizer, rules, donate, nonfinite, max_skips: as :func:`make_train_step`.
      over: ``over(step) -> fn(state, x, y) -> (state, loss)``: the identity for one step,
        a ``lax.scan`` of ``step`` over K steps for a block (``x``, ``y`` then ``(K, B, ...)``
        and ``loss`` (K,)).
      batch_shardings: ``batch_shardings(rules) -> (x sharding, y sharding)`` of ``fn``'s
        ``x``, ``y``; called after the checks.

    Returns:
      ``fn`` jitted with the state laid out by ``rules`` in and out (its buffers donated
      if ``donate``), ``x``/``y`` by ``batch_shardings(rules)``, the loss replicated.

    Raises:
      ValueError: naming ``who``, if the learner has no ``loss_fn``, ``rules`` is not on a
        device mesh or has no batch, or on a bad policy argument.
    """
    dd.check_rules(who, rules)
    if getattr(learner, "loss_fn", None) is None:
        raise ValueError(f"{who}: argument 'learner' has no loss_fn; pass loss_fn=... to disttrace.compile")
    if rules.batch_tree.num_leaves == 0:
        raise ValueError(f"{who}: argument 'rules' has no batch; build it with batch=(x, y)")
    check_policy(who, nonfinite, max_skips)
    state_sh = rules.state_shardings()

    def step(state: TrainState, x, y):
        return train_step(
            learner, optimizer, state, x, y, grad_shardings=state_sh.params, nonfinite=nonfinite, max_skips=max_skips
        )

    return jax.jit(
        over(step),
        in_shardings=(state_sh, *batch_shardings(rules)),
        out_shardings=(state_sh, NamedSharding(rules.mesh, PartitionSpec())),
        donate_argnums=(0,) if donate else (),
    )
