"""Sharded online learning on a ``('data', 'model')`` device mesh, single- and multi-host.

- :func:`make_mesh` builds the mesh (over all processes after :func:`initialize`);
- :func:`partition_rules` gives every leaf of the :class:`TrainState` and of the batch
  a ``PartitionSpec`` (batch on ``data``, neurons / op outputs on ``model``), as an
  inspectable, overridable, validated table;
- :func:`init_train_state`, :func:`shard_batch` and :func:`make_train_step` run the
  online step (``learner.step`` + optax) sharded, with output shardings equal to the
  input shardings.

Layer: above ``algorithms``/``compiler``, below ``nn``, ``tasks`` and ``train``.

Example:
  >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
  >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
  >>> learner = dt.compile(dt.nn.LIFLayer(3, 8), dt.D_RTRL, jnp.zeros((4, 3)), batch_size=4, loss_fn=mse)
  >>> mesh = dd.make_mesh(data=2, model=2, devices=jax.devices()[:4])
  >>> opt = optax.sgd(0.1)
  >>> rules = dd.partition_rules(learner, opt, mesh, (jnp.zeros((4, 3)), jnp.zeros((4, 8))))
  >>> state = dd.init_train_state(learner, opt, rules)
  >>> step = dd.make_train_step(learner, opt, rules)
  >>> state, loss = step(state, *dd.shard_batch(rules, jnp.ones((4, 3)), jnp.zeros((4, 8))))
  >>> state.learner_state.traces["op0/g0"][0].sharding.spec
  P('data', None, None, 'model')
"""

from disttrace.distributed._mesh import AXES as AXES
from disttrace.distributed._mesh import initialize as initialize
from disttrace.distributed._mesh import make_mesh as make_mesh
from disttrace.distributed._rules import LeafRule as LeafRule
from disttrace.distributed._rules import PartitionRules as PartitionRules
from disttrace.distributed._rules import partition_rules as partition_rules
from disttrace.distributed._state import TrainState as TrainState
from disttrace.distributed._state import train_state as train_state
from disttrace.distributed._step import init_train_state as init_train_state
from disttrace.distributed._step import make_train_step as make_train_step
from disttrace.distributed._step import shard_batch as shard_batch

__all__ = [
    "AXES",
    "LeafRule",
    "PartitionRules",
    "TrainState",
    "init_train_state",
    "initialize",
    "make_mesh",
    "make_train_step",
    "partition_rules",
    "shard_batch",
    "train_state",
]
