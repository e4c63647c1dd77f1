"""``TrainState``: everything an online run carries from one step to the next.

One pytree, so ``jit`` (in/out shardings), the partition rules and a checkpointer all
see the same structure. Each field declares its sharding role (``sharding_roles``, read
by :func:`disttrace.distributed.partition_rules`); the learner state inside declares its
own (hidden states, traces, ...).

The step counter is a :class:`StepCounter`, two ``uint32`` words (high, low): JAX has
no int64 on device without x64, and an int32 counter would wrap negative after 2**31
steps (about 25 days at 1 ms per step, a real horizon for a stream). Two words count to
2**64; ``int(state.step)`` reads it on the host, and a checkpoint is numbered by it.
It counts the steps taken, including the ones whose update the non-finite policy
skipped (:class:`NonFiniteCounts`, in the state so that a resumed run counts on exactly).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from disttrace import checks
from disttrace import distributed as dd

__all__ = ["NonFiniteCounts", "StepCounter", "TrainState", "init_train_state", "partition_rules"]

_WORD = 2**32


class StepCounter(NamedTuple):
    """A wrap-safe step count: ``hi · 2**32 + lo``.

    Attributes:
      hi: () uint32, the high word.
      lo: () uint32, the low word.

    Example:
      >>> c = StepCounter.of(2**32 - 1)
      >>> int(c.increment()), int(c.increment().hi)
      (4294967296, 1)
    """

    hi: jax.Array
    lo: jax.Array

    sharding_roles = {"hi": "count", "lo": "count"}

    @classmethod
    def of(cls, n: int = 0) -> StepCounter:
        """The counter at ``n`` (0 <= n < 2**64)."""
        n = checks.non_negative_int("StepCounter", "n", n)
        if n >= _WORD * _WORD:
            raise ValueError(f"StepCounter: argument 'n' must be < 2**64; got {n}")
        return cls(jnp.asarray(n // _WORD, jnp.uint32), jnp.asarray(n % _WORD, jnp.uint32))

    def increment(self) -> StepCounter:
        """The next count (jit-able): the low word wraps to 0 and carries into the high one."""
        lo = self.lo + jnp.uint32(1)
        return StepCounter(self.hi + (lo == 0).astype(jnp.uint32), lo)

    def __int__(self) -> int:
        return int(self.hi) * _WORD + int(self.lo)


class NonFiniteCounts(NamedTuple):
    """The non-finite policy's counters (``disttrace.train.train_step(..., nonfinite=...)``).

    Attributes:
      skipped: a :class:`StepCounter`: steps whose update was skipped, in total.
      run: () uint32, consecutive skipped steps up to now (0 after an applied update).
      first: a :class:`StepCounter`: the (1-based) step number of the current run's first
        skipped step (0 when there has been none).
      leaf: () int32, that step's first non-finite leaf, an index into
        :func:`~disttrace.train.nonfinite_leaf_names`.
    """

    skipped: StepCounter
    run: jax.Array
    first: StepCounter
    leaf: jax.Array

    sharding_roles = {"skipped": "count", "run": "count", "first": "count", "leaf": "count"}

    @classmethod
    def zero(cls) -> NonFiniteCounts:
        """No step skipped."""
        return cls(StepCounter.of(0), jnp.asarray(0, jnp.uint32), StepCounter.of(0), jnp.asarray(0, jnp.int32))


class TrainState(NamedTuple):
    """Parameters, optimizer state, learner state, step, RNG key, stream position and
    non-finite counters.

    Attributes:
      params: parameter values by path (``learner.params()``), e.g. a weight (I, O).
      opt_state: ``optimizer.init(params)``; leaves shaped like a parameter follow it.
      learner_state: ``learner.init()``: hidden states (B, N...), traces, ... as the
        learner's state type declares them.
      step: a :class:`StepCounter`: optimizer updates applied.
      rng: (2,) uint32, the run's PRNG key (e.g. for sampling data); split it, never reuse.
      position: where the stream stands, as a pytree of arrays (``{}`` when the data
        source keeps no array state); host-side offsets (file names, partitions) go in
        the checkpoint's JSON ``meta`` instead.
      nonfinite: :class:`NonFiniteCounts`: steps skipped by the non-finite policy.
    """

    params: Any
    opt_state: Any
    learner_state: Any
    step: StepCounter
    rng: jax.Array
    position: Any
    nonfinite: NonFiniteCounts

    # the learner state's type declares its own roles, which win over "replicated"
    sharding_roles = {
        "params": "param",
        "opt_state": "opt",
        "learner_state": "replicated",
        "step": "count",
        "rng": "rng",
        "position": "replicated",
        "nonfinite": "count",
    }


def _fresh(learner, optimizer, params, seed: int) -> TrainState:
    return TrainState(
        params, optimizer.init(params), learner.init(), StepCounter.of(0), jax.random.PRNGKey(seed), {},
        NonFiniteCounts.zero(),
    )


def init_train_state(learner, optimizer: optax.GradientTransformation, rules=None, *, seed: int = 0) -> TrainState:
    """A fresh :class:`TrainState`: the learner's current parameters, step 0.

    Args:
      learner: from ``disttrace.compile``.
      optimizer: an optax transformation.
      rules: ``PartitionRules`` of this state on a device mesh (:func:`partition_rules`):
        the state is laid out by them, optimizer state and traces created directly in
        their shards (a trace larger than one device never exists whole); parameters
        come from the host (every process must hold the same values: same seed).
        ``None``: unsharded (under ``jax.eval_shape`` this gives the shapes without
        allocating anything).
      seed: the RNG key's seed.

    Returns:
      The state.

    Raises:
      ValueError: if ``rules`` are not ``PartitionRules`` on a device mesh, or ``seed``
        is not an int.

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> shapes = jax.eval_shape(lambda: dt.train.init_train_state(learner, optax.sgd(0.1)))
      >>> jax.tree.leaves(shapes.learner_state.hidden)[0].shape  # the layer's V (B, N)
      (2, 4)
    """
    seed = checks.non_negative_int("init_train_state", "seed", seed)
    if rules is None:
        return _fresh(learner, optimizer, learner.params(), seed)
    dd.check_rules("init_train_state", rules)
    shardings = rules.state_shardings()
    params = dd.put_global(learner.params(), shardings.params)
    return jax.jit(lambda p: _fresh(learner, optimizer, p, seed), out_shardings=shardings)(params)


def partition_rules(learner, optimizer, mesh, batch: tuple | None = None, **options) -> dd.PartitionRules:
    """The partition rules of ``learner``'s :class:`TrainState` (and one step's batch).

    :func:`disttrace.distributed.partition_rules` on the state's shapes (read with
    ``jax.eval_shape``: no trace is allocated).

    Args:
      learner: from ``disttrace.compile``.
      optimizer: the optax transformation whose state the rules cover.
      mesh: a ``('data', 'model')`` mesh, or an ``AbstractMesh`` for arithmetic.
      batch: one step's ``(x, y)`` (arrays or ``ShapeDtypeStruct``s), or ``None``.
      **options: ``params=`` and ``overrides=`` of ``disttrace.distributed.partition_rules``.

    Returns:
      Validated ``PartitionRules`` (paths ``params/...``, ``opt_state/...``,
      ``learner_state/...``, ``step/hi``, ``step/lo``, ``rng``, ``nonfinite/...``, then
      ``x``, ``y``).

    Raises:
      ValueError: as ``disttrace.distributed.partition_rules``.

    Example:
      >>> import jax.numpy as jnp, optax, disttrace as dt
      >>> from jax.sharding import AbstractMesh
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> rules = dt.train.partition_rules(learner, optax.sgd(0.1), AbstractMesh((2, 2), ("data", "model")),
      ...                                  (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> rules.specs["params/weight"], rules.specs["learner_state/hidden/V"], rules.specs["step/lo"]
      (P(None, 'model'), P('data', 'model'), P())
    """
    shapes = jax.eval_shape(lambda: _fresh(learner, optimizer, learner.params(), 0))
    return dd.partition_rules(shapes, mesh, batch, **options)
