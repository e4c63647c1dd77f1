"""Sharded online learning on a ``('data', 'model')`` device mesh, single- and multi-host.

- :func:`make_mesh` builds the mesh (over all processes after :func:`initialize`);
- :func:`partition_rules` gives every leaf of any state pytree and of the batch a
  ``PartitionSpec`` (batch on ``data``, neurons / op outputs on ``model``), as an
  inspectable, overridable, validated table; what each leaf is comes from the roles its
  state types declare (``sharding_roles``, :data:`ROLES`);
- :func:`shard_batch` and :func:`put_global` turn host values into global arrays laid
  out by the rules.

The training state and the sharded train step built on these live in
:mod:`disttrace.train` (``TrainState``, ``init_train_state``, ``make_train_step``).

Layer: above ``algorithms``/``compiler``, below ``nn``, ``tasks`` and ``train``.

Example:
  >>> import jax, jax.numpy as jnp, optax, disttrace as dt, disttrace.distributed as dd
  >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
  >>> learner = dt.compile(dt.nn.LIFLayer(3, 8), dt.D_RTRL, jnp.zeros((4, 3)), batch_size=4, loss_fn=mse)
  >>> mesh = dd.make_mesh(data=2, model=2, devices=jax.devices()[:4])
  >>> trainer = dt.train.Trainer(learner, optax.sgd(0.1), (jnp.zeros((4, 3)), jnp.zeros((4, 8))), mesh)
  >>> loss = trainer.step(jnp.ones((4, 3)), jnp.zeros((4, 8)))
  >>> trainer.rules.specs["learner_state/hidden/V"]
  P('data', 'model')
"""

from disttrace.distributed._exchange import allgather_json as allgather_json
from disttrace.distributed._exchange import any_process as any_process
from disttrace.distributed._mesh import AXES as AXES
from disttrace.distributed._mesh import initialize as initialize
from disttrace.distributed._mesh import make_mesh as make_mesh
from disttrace.distributed._rules import LeafRule as LeafRule
from disttrace.distributed._rules import PartitionRules as PartitionRules
from disttrace.distributed._rules import partition_rules as partition_rules
from disttrace.distributed._state import ROLES as ROLES
from disttrace.distributed._state import leaf_roles as leaf_roles
from disttrace.distributed._step import check_rules as check_rules
from disttrace.distributed._step import put_global as put_global
from disttrace.distributed._step import shard_batch as shard_batch

__all__ = [
    "AXES",
    "ROLES",
    "allgather_json",
    "any_process",
    "check_rules",
    "initialize",
    "leaf_roles",
    "LeafRule",
    "make_mesh",
    "partition_rules",
    "PartitionRules",
    "put_global",
    "shard_batch",
]
