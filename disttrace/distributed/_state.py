"""``TrainState``: everything a sharded online run carries from one step to the next.

One pytree, so ``jit`` (in/out shardings), the partition rules and a checkpointer see
the same structure. Lives here, below ``train/``, because the sharded step needs it
and ``distributed`` may not import ``train``; ``train`` re-exporting it is the
intended home once the trainer uses the sharded step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["TrainState", "train_state"]


class TrainState(NamedTuple):
    """Parameters, optimizer state, learner state and step count.

    Attributes:
      params: parameter values by path (``learner.params()``), e.g. a weight (I, O).
      opt_state: ``optimizer.init(params)``; leaves shaped like a parameter follow it.
      learner_state: ``learner.init()``: an ``OnlineState`` (hidden (B, N...), aux,
        traces (B, K, ..., O), x_traces (B, I...), t ()) or a ``BPTTState``.
      step: () int32, optimizer updates applied.
    """

    params: Any
    opt_state: Any
    learner_state: Any
    step: jax.Array


def train_state(learner, optimizer) -> TrainState:
    """A fresh :class:`TrainState` of ``learner``'s current params and states (unsharded).

    Args:
      learner: from ``disttrace.compile`` (with ``init`` and ``params``).
      optimizer: an optax ``GradientTransformation``.

    Returns:
      ``TrainState(params, optimizer.init(params), learner.init(), 0)``. Under
      ``jax.eval_shape`` this gives the shapes without allocating the traces.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> shapes = jax.eval_shape(lambda: dd.train_state(learner, optax.sgd(0.1)))
      >>> shapes.learner_state.traces["op0/g0"][0].shape  # (B, K, I, O)
      (2, 1, 3, 4)
    """
    params = learner.params()
    return TrainState(params, optimizer.init(params), learner.init(), jnp.zeros((), jnp.int32))
