"""``StreamTrainer``: online training on an unbounded stream, one optimizer update per
stream step, sharded on a device mesh (``disttrace.distributed``).

Where :class:`~disttrace.train.Trainer` runs trials (reset, a sequence, one update), a
stream has no trials: hidden states and traces carry on from step to step and the
parameters change every step, which is what the online algorithms are for. The whole
training state is one :class:`~disttrace.distributed.TrainState` pytree laid out by the
partition rules (batch on ``data``, neurons on ``model``); the jitted step keeps that
layout, so it can run for ever without resharding.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax
from jax.sharding import Mesh, PartitionSpec

from disttrace import distributed as dd

__all__ = ["StreamTrainer"]


class StreamTrainer:
    """Per-step online training of a compiled learner on a device mesh.

    Args:
      learner: from ``disttrace.compile(..., loss_fn=...)``.
      optimizer: an optax transformation.
      example_batch: one step's ``(x, y)`` (arrays or ``ShapeDtypeStruct``s, batch-leading,
        global batch).
      mesh: a ``('data', 'model')`` mesh (``disttrace.distributed.make_mesh``); default
        the first device alone.
      params: ``"model"`` (shard parameters' output axis on ``model``) or ``"replicated"``.
      overrides: per-path ``PartitionSpec`` overrides (see ``partition_rules``).

    Attributes:
      rules: the validated partition rules (``print(trainer.rules)`` shows the layout).
      state: the current :class:`~disttrace.distributed.TrainState`.

    Raises:
      ValueError: from the partition rules (an axis that does not divide a dimension
        names the leaf, its shape and the mesh) or a learner without ``loss_fn``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt
      >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=mse)
      >>> trainer = dt.train.StreamTrainer(learner, optax.sgd(0.1), (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> float(trainer.step(jnp.ones((2, 3)), jnp.zeros((2, 4)))) >= 0.0
      True
    """

    def __init__(
        self,
        learner,
        optimizer: optax.GradientTransformation,
        example_batch: tuple,
        mesh: Mesh | None = None,
        *,
        params: str = "model",
        overrides: Mapping[str, PartitionSpec] | None = None,
    ):
        mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1]) if mesh is None else mesh
        self.learner = learner
        self.rules = dd.partition_rules(learner, optimizer, mesh, example_batch, params=params, overrides=overrides)
        self.state = dd.init_train_state(learner, optimizer, self.rules)
        self._step = dd.make_train_step(learner, optimizer, self.rules)

    def step(self, x, y) -> jax.Array:
        """One stream step: online gradient, optimizer update; returns this step's loss.

        Args:
          x, y: this step's global batch (B, ...) for the model input and ``loss_fn``.
        """
        x, y = dd.shard_batch(self.rules, x, y)
        self.state, loss = self._step(self.state, x, y)
        return loss

    def save(self, checkpointer, meta: Mapping | None = None, *, force: bool = False) -> bool:
        """Saves the whole :attr:`state` (and ``meta``, e.g. stream offsets) as step
        ``state.step`` (optimizer updates applied).

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          meta: JSON-serialisable host-side state to restore with it.
          force: save even off the checkpointer's interval.

        Returns:
          Whether a save was started (see ``Checkpointer.save``).
        """
        return checkpointer.save(int(self.state.step), self.state, meta, force=force)

    def restore(self, checkpointer, step: int | None = None) -> dict:
        """Replaces :attr:`state` with a saved one, laid out by this trainer's rules
        (its mesh may differ from the one that saved it).

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          step: which step (default: the latest).

        Returns:
          The ``meta`` saved with it.

        Raises:
          FileNotFoundError, ValueError: from ``Checkpointer.restore`` (no such step; a
            state of another model or optimizer). :attr:`state` is then unchanged.
        """
        self.state, meta = checkpointer.restore(self.rules, step)
        return meta

    def write_back(self) -> None:
        """Writes the trained parameters, hidden states and other states (e.g. batch-norm
        running statistics) into the model's brainstate states, for ``learner.predict``
        or saving the module. The learner's own stored traces are not updated: the
        stream's traces live in :attr:`state`."""
        ls = self.state.learner_state
        self.learner.binding.write(params=self.state.params, hidden=dict(ls.hidden), aux=dict(ls.aux))
