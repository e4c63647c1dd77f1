"""``Trainer``: online training of a compiled learner, on trials or on a stream.

One :class:`~disttrace.train.TrainState` holds everything (parameters, optimizer state,
learner state, step, RNG key, stream position), laid out on a ``('data', 'model')``
mesh by partition rules (one device by default). Two ways to feed it:

- **streams**, :meth:`Trainer.step`: one optimizer update per step; hidden states and
  traces carry on from step to step inside the state (jitted, sharded, the layout
  kept from step to step, so it can run for ever). :meth:`Trainer.step_block` takes K
  consecutive steps ``(K, B, ...)`` at once and runs them in one dispatch (one
  ``lax.scan``, ``disttrace.train._block``): the same K updates, bitwise, several times
  the throughput of a small model. :meth:`Trainer.reset_state` starts a new sequence
  (fresh hidden states and traces, same parameters).
- **trials**, :meth:`Trainer.train_trial`: reset the hidden states and traces, run
  the online gradient over the whole sequence, one update (the gradient is the mean
  over time). A trial runs through ``learner.etrace_grad`` (with ``chunk_size`` the
  chunked contraction: the same gradient to rounding, ~3x faster per trial than one
  ``learner.step`` per step on the evidence task; and the exact BPTT gradient for the
  ``BPTT`` oracle), with the model's states as scratch space: the model holds (a copy
  of) the state's parameters after each trial.

The loss is an argument, ``loss_fn(out, y) -> scalar`` for one step's output and target
(``disttrace.train.mse``, ``cross_entropy``, ``masked_cross_entropy`` or your own).
Checkpoints are one layout for both modes: the whole state as step ``step_count``
(``Checkpointer`` step directory) plus the caller's JSON ``meta``.

**Non-finite values** (``nonfinite="skip"``, the default; ``disttrace.train._nonfinite``):
a step or trial whose input, target, loss or gradient holds a NaN or infinity is not
applied (parameters, optimizer state, hidden states and traces unchanged, decided inside
the jitted step) and counted (:meth:`Trainer.nonfinite_counts`); after ``max_skips``
consecutive such steps the trainer stops with :class:`~disttrace.errors.NonFiniteError`
naming the first step of the run and its first non-finite leaf (``nonfinite="raise"``:
at the first one, its update not applied; ``"ignore"``: no check). Trials read the
counters at the end of each trial (a trial ends with a host read anyway); streams read
them every ``check_every`` steps, so that no step waits for the host: the error comes up
to ``check_every`` steps late, and the steps in between (halted) change nothing. After
the error every training call and :meth:`Trainer.save` raise it again until
:meth:`Trainer.restore` or :meth:`Trainer.clear_nonfinite`. :meth:`Trainer.save` never
writes a state holding a non-finite value (whatever the policy): it raises instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from disttrace import checks
from disttrace import distributed as dd
from disttrace.errors import NonFiniteError
from disttrace.train._block import make_block_step, shard_block
from disttrace.train._losses import masked_cross_entropy
from disttrace.train._nonfinite import (
    check_counts,
    check_policy,
    counts_dict,
    finite_flags,
    guard,
    nonfinite_leaf_names,
)
from disttrace.train._state import init_train_state, partition_rules
from disttrace.train._step import apply_gradients, make_train_step

__all__ = ["Trainer", "label_targets"]


def label_targets(labels, mask) -> dict:
    """Per-step targets of a classification trial: ``{"label": (T, B), "mask": (T,)}``,
    the trial's labels (B,) at every step beside the loss weights ``mask`` (T,) (the
    target layout of :func:`~disttrace.train.masked_cross_entropy`).

    Example:
      >>> import jax.numpy as jnp
      >>> ys = label_targets(jnp.array([0, 1]), jnp.array([0.0, 0.0, 1.0]))
      >>> ys["label"].shape, ys["mask"].shape
      ((3, 2), (3,))
    """
    labels, mask = jnp.asarray(labels), jnp.asarray(mask)
    return {"label": jnp.broadcast_to(labels, (mask.shape[0], *labels.shape)), "mask": mask}


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.asarray(a).dtype), tree)


def _inexact_finite(a) -> jax.Array:
    return jnp.all(jnp.isfinite(a)) if jnp.issubdtype(a.dtype, jnp.inexact) else jnp.asarray(True)


class Trainer:
    """Online training of a compiled learner: trials and streams, optionally sharded.

    Args:
      learner: from :func:`disttrace.compile`.
      optimizer: an optax gradient transformation.
      example_batch: one stream step's ``(x, y)`` (arrays or ``ShapeDtypeStruct``s,
        batch-leading, global batch) for the batch's partition rules; default: taken
        from the first :meth:`step`. Not needed for trials.
      mesh: a ``('data', 'model')`` mesh (``disttrace.distributed.make_mesh``); default
        the first device alone.
      loss_fn: ``loss_fn(out, y) -> scalar`` of one step. Default: the learner's
        ``loss_fn``, else :func:`~disttrace.train.masked_cross_entropy`. A learner compiled
        without one gets this one for its online steps (``learner.loss_fn`` is set).
        (:meth:`train_batch`, the labels-and-mask convenience, always uses
        ``masked_cross_entropy``.)
      chunk_size: passed to ``etrace_grad`` in trials (``None``: step by step; ``"auto"``:
        measured at the first trial of each shape, ``learner.tune_chunk_size``).
      params: ``"model"`` (shard parameters' output axis on ``model``) or ``"replicated"``.
      overrides: per-path ``PartitionSpec`` overrides (``disttrace.distributed.partition_rules``).
      seed: seed of the state's RNG key (:meth:`next_key`).
      donate: let the jitted stream step reuse the old state's buffers.
      nonfinite: ``"skip"`` (default), ``"raise"`` or ``"ignore"``: what a step with a
        non-finite input, target, loss or gradient does (module docstring).
      max_skips: consecutive skipped steps after which ``"skip"`` stops (default 10).
      check_every: streams read the non-finite counters every this many steps (default
        100; 1 checks after every step, at the cost of waiting for each).

    Attributes:
      rules: the validated partition rules (``print(trainer.rules)`` shows the layout).
      state: the current :class:`~disttrace.train.TrainState`.
      step_count: optimizer updates applied (a host int; checkpoints are numbered by it).

    Raises:
      ValueError: on a bad argument; from the partition rules (an axis that does not
        divide a dimension names the leaf, its shape and the mesh); if ``loss_fn`` differs
        from the learner's own.
      NonFiniteError: from the training calls and :meth:`save` (module docstring).

    Example:
      >>> import jax, jax.numpy as jnp, optax, disttrace as dt
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> trainer = dt.train.Trainer(learner, optax.sgd(0.1), loss_fn=dt.train.mse)
      >>> float(trainer.step(jnp.ones((2, 3)), jnp.zeros((2, 4)))) >= 0.0   # one stream step
      True
      >>> xs, ys = jnp.ones((5, 2, 3)), jnp.zeros((5, 2, 4))              # time-major (T, B, ...)
      >>> trainer.train_trial(xs, ys) >= 0.0                              # one trial, one update
      True
      >>> trainer.step_count
      2
    """

    def __init__(
        self,
        learner,
        optimizer: optax.GradientTransformation,
        example_batch: tuple | None = None,
        mesh: jax.sharding.Mesh | None = None,
        *,
        loss_fn: Callable | None = None,
        chunk_size: int | str | None = None,
        params: str = "model",
        overrides: Mapping | None = None,
        seed: int = 0,
        donate: bool = True,
        nonfinite: str = "skip",
        max_skips: int = 10,
        check_every: int = 100,
    ):
        who = "Trainer"
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise checks.ArgumentTypeError(
                f"{who}: argument 'optimizer' must be an optax GradientTransformation; got {type(optimizer).__name__}"
            )
        if loss_fn is not None and not callable(loss_fn):
            raise checks.ArgumentTypeError(f"{who}: argument 'loss_fn' must be callable; got {type(loss_fn).__name__}")
        own = getattr(learner, "loss_fn", None)
        if loss_fn is not None and own is not None and loss_fn is not own:
            raise ValueError(
                f"{who}: argument 'loss_fn' ({getattr(loss_fn, '__name__', loss_fn)!r}) differs from the learner's own "
                f"loss_fn ({getattr(own, '__name__', own)!r}); compile the learner without loss_fn or pass the same one"
            )
        if chunk_size is not None and chunk_size != "auto":
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
                raise checks.ArgumentTypeError(
                    f"{who}: argument 'chunk_size' must be a positive int, 'auto' or None; got {chunk_size!r}"
                )
            if chunk_size < 1:
                raise ValueError(f"{who}: argument 'chunk_size' must be a positive int, 'auto' or None; got {chunk_size!r}")
        checks.boolean(who, "donate", donate)
        limit = check_policy(who, nonfinite, max_skips)
        checks.positive_int(who, "check_every", check_every)
        if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
            raise checks.ArgumentTypeError(
                f"{who}: argument 'mesh' must be a jax.sharding.Mesh (disttrace.distributed.make_mesh); got "
                f"{type(mesh).__name__}"
            )
        self.learner = learner
        self.optimizer = optimizer
        self.loss_fn = loss_fn or own or masked_cross_entropy
        self.chunk_size = chunk_size
        self.mesh = dd.make_mesh(1, 1, devices=jax.devices()[:1]) if mesh is None else mesh
        self._rule_options = {"params": params, "overrides": overrides}
        self.rules = partition_rules(learner, optimizer, self.mesh, example_batch, **self._rule_options)
        self.state = init_train_state(learner, optimizer, self.rules, seed=seed)
        self.step_count = 0
        self.nonfinite, self.max_skips, self.check_every = nonfinite, max_skips, check_every
        self._limit = limit  # consecutive skips that halt (0: no check)
        self._names = nonfinite_leaf_names(self.rules)
        self._stopped: NonFiniteError | None = None  # raised again by every training call
        self._unchecked = False  # stream steps ran since the counters were last read
        self._donate = donate
        self._stream_step: Callable | None = None
        self._block_step: Callable | None = None
        self._learner_state_fresh = True  # the state's learner state is a reset one
        self._model_synced = True  # the model's ParamStates hold (copies of) state.params
        shardings = self.rules.state_shardings()

        def update(state, grads, io_flags):
            new = apply_gradients(optimizer, state, grads)
            if not limit:
                return new
            grad_flags = finite_flags((), (), (), grads)[3:]
            return guard(state, new, jnp.concatenate([io_flags, grad_flags]), limit)

        self._update = jax.jit(update, out_shardings=shardings, donate_argnums=(0,) if donate else ())
        # the trial's own flags (x, y, losses), computed where the trial ran
        self._io_flags = jax.jit(lambda xs, ys, losses: finite_flags(xs, ys, losses, ()))
        self._state_flags = jax.jit(lambda state: jnp.stack([_inexact_finite(a) for a in jax.tree.leaves(state)]))
        self._split = jax.jit(lambda key: tuple(jax.random.split(key)), out_shardings=(shardings.rng, shardings.rng))

        # one function object per loss, so that the learner compiles each trial once
        def trial_loss(x, y):
            return self.loss_fn(learner(x), y)

        def classification_loss(x, y):
            return masked_cross_entropy(learner(x), y)

        self._trial_loss, self._classification_loss = trial_loss, classification_loss

    # ---- streams --------------------------------------------------------------------------
    def step(self, x, y, *, process_local: bool = False) -> jax.Array:
        """One stream step: online gradient, optimizer update; returns this step's loss.

        Args:
          x, y: this step's global batch (B, ...) for the model input and ``loss_fn``.
          process_local: each process passes only its own rows (multi-host; see
            ``disttrace.distributed.shard_batch``).

        Returns:
          The loss () (replicated; reading it waits for the step).

        Raises:
          ValueError: if a leaf's shape is not the batch the rules were built for.
          NonFiniteError: under the non-finite policy, when this call reads the counters
            (every ``check_every`` steps) and finds the run halted, and on every call after.
        """
        self._raise_if_stopped()
        if self._stream_step is None:
            self._build_stream_step(x, y, process_local)
        x, y = dd.shard_batch(self.rules, x, y, process_local=process_local)
        self.state, loss = self._stream_step(self.state, x, y)
        self._stream_steps_done(1)
        return loss

    def step_block(self, xs, ys, *, process_local: bool = False) -> jax.Array:
        """K consecutive stream steps in one dispatch: K online updates (forward, trace
        update, gradient, optimizer update each) inside one jitted ``lax.scan``, the
        state's buffers donated. The result is that of K calls of :meth:`step` (bitwise
        on CPU), the step count advances by K, and a :meth:`save` after the block equals
        one after the K steps (a block is committed as a whole). The non-finite policy
        applies to each step inside the block; the counters are read after the block
        when it crosses a multiple of ``check_every``.

        Args:
          xs, ys: K steps' global batches: every leaf ``(K, B, ...)``, one step's shape
            after the leading time axis (the batch axis is axis 1; on a mesh it is split
            over ``data`` like a step's). A ``jax.Array`` already laid out by the block's
            sharding (``disttrace.train.block_shardings``) is used without a copy.
          process_local: each process passes only its own rows of the batch axis.

        Returns:
          The K steps' losses (K,) (replicated; reading them waits for the block).

        Raises:
          ValueError: if the leaves are not K steps of the batch the rules were built for.
          NonFiniteError: as :meth:`step`.
        """
        self._raise_if_stopped()
        if self._stream_step is None:
            shapes = [np.shape(a) for a in jax.tree.leaves((xs, ys))]
            if any(len(s) == 0 or s[0] == 0 for s in shapes):
                raise ValueError(
                    f"Trainer.step_block: every leaf of (xs, ys) must be (K, ...) with K >= 1 steps; got shapes {shapes}"
                )
            first = jax.tree.map(lambda a: a[0], (xs, ys))  # one step: the batch's rules, if not given
            self._build_stream_step(*first, process_local)
        if self._block_step is None:
            self._block_step = make_block_step(
                self.learner, self.optimizer, self.rules, donate=self._donate, nonfinite=self.nonfinite,
                max_skips=self.max_skips,
            )
        xs, ys = shard_block(self.rules, xs, ys, process_local=process_local)
        self.state, losses = self._block_step(self.state, xs, ys)
        self._stream_steps_done(int(losses.shape[0]))
        return losses

    def _stream_steps_done(self, n: int) -> None:
        before, self.step_count = self.step_count, self.step_count + n
        self._learner_state_fresh = self._model_synced = False
        self._unchecked = True
        if self.step_count // self.check_every != before // self.check_every:
            self._check_nonfinite()

    def _build_stream_step(self, x, y, process_local: bool) -> None:
        if self.rules.batch_tree.num_leaves == 0:
            batch = _abstract((x, y))
            if process_local:  # the rules want the global batch: every process holds B / P rows
                n = jax.process_count()
                batch = jax.tree.map(
                    lambda s: jax.ShapeDtypeStruct((s.shape[0] * n, *s.shape[1:]) if s.shape else (), s.dtype), batch
                )
            self.rules = partition_rules(self.learner, self.optimizer, self.mesh, batch, **self._rule_options)
        if self.learner.loss_fn is None:
            self.learner.loss_fn = self.loss_fn
        self._stream_step = make_train_step(
            self.learner, self.optimizer, self.rules, donate=self._donate, nonfinite=self.nonfinite,
            max_skips=self.max_skips,
        )

    def reset_state(self) -> None:
        """Starts a new sequence: fresh hidden states and traces (and the learner's step
        count), as after ``learner.reset_state()``; parameters, optimizer state, step and
        RNG key are kept."""
        self.learner.reset_state()
        fresh = dd.put_global(self.learner.init(), self.rules.state_shardings().learner_state)
        self.state = self.state._replace(learner_state=fresh)
        self._learner_state_fresh = True

    # ---- trials ---------------------------------------------------------------------------
    def train_trial(self, xs, ys) -> float:
        """One trial: reset hidden states and traces, online gradient over the sequence
        (the mean over time of ``loss_fn``), one optimizer update.

        Args:
          xs: (T, B, ...) inputs, time-major.
          ys: the targets, a pytree whose leaves are time-major (T, ...); step ``t``
            gets ``loss_fn(out_t, ys[t])``.

        Returns:
          The mean loss over the trial's steps (whether or not the non-finite policy
          skipped its update: that loss may be finite, e.g. a NaN membrane potential
          emits no spike; :meth:`nonfinite_counts` counts the skips).

        Raises:
          ValueError: on sequences of different lengths or shapes the model was not
            compiled for (from ``learner.etrace_grad``).
          NonFiniteError: under the non-finite policy (read after every trial).
        """
        return self._trial(xs, ys, self._trial_loss)

    def _trial(self, xs, ys, step_fn) -> float:
        self._raise_if_stopped()
        if self._unchecked:  # stream steps before: their halt is theirs
            self._check_nonfinite()
        self._sync_model_params()
        if self._learner_state_fresh:
            self.learner.reset_state()
        else:
            self.reset_state()
        grads, losses = self.learner.etrace_grad(
            xs, ys, step_fn=step_fn, return_value=True, chunk_size=self.chunk_size
        )
        io_flags = self._io_flags(xs, ys, losses) if self._limit else jnp.ones((3,), bool)
        if self.mesh.size > 1:
            shardings = self.rules.state_shardings()
            grads = jax.device_put(grads, shardings.params)
            io_flags = jax.device_put(io_flags, NamedSharding(self.mesh, PartitionSpec()))
        self.state = self._update(self.state, grads, io_flags)
        self.step_count += 1
        self._model_synced = False
        self._sync_model_params()  # the model holds the trained parameters after each trial
        loss = float(jnp.mean(losses))
        self._check_nonfinite()
        return loss

    def train_batch(self, xs, labels, mask) -> float:
        """A classification trial with :func:`~disttrace.train.masked_cross_entropy`
        (whatever ``loss_fn`` is): :meth:`train_trial` on ``label_targets(labels, mask)``.

        Args:
          xs: (T, B, I) inputs; labels: (B,) ints; mask: (T,) loss weights.

        Returns:
          The mean loss over the trial's steps.

        Raises:
          NonFiniteError: as :meth:`train_trial`.
        """
        return self._trial(xs, label_targets(labels, mask), self._classification_loss)

    def predict(self, xs) -> jax.Array:
        """The model's outputs over held-out trials, from fresh hidden states, without
        learning (for a task's ``metric``, e.g. ``task.metric(trainer.predict(xs),
        targets, mask)``).

        Writes the state's parameters into the model (``learner.predict`` runs it).

        Args:
          xs: (T, B, I) inputs, B the batch the learner was compiled for.

        Returns:
          The outputs (T, B, ...).
        """
        self._sync_model_params()
        self.learner.reset_state()
        return self.learner.predict(xs)

    def evaluate(self, xs, labels, mask) -> float:
        """Accuracy on held-out trials: the argmax of the mask-weighted sum of the logits
        over time against ``labels``, from fresh hidden states, without learning.

        Writes the state's parameters into the model (``learner.predict`` runs it).

        Args:
          xs: (T, B, I) inputs; labels: (B,) ints; mask: (T,) weights.

        Returns:
          The fraction of correct trials.
        """
        logits = self.predict(xs)  # (T, B, C)
        pooled = jnp.einsum("t,tbc->bc", jnp.asarray(mask).astype(logits.dtype), logits)
        return float(jnp.mean(jnp.argmax(pooled, -1) == jnp.asarray(labels)))

    accuracy = evaluate

    # ---- non-finite policy ----------------------------------------------------------------
    def nonfinite_counts(self) -> dict:
        """The non-finite policy's counters, read from the state (waits for the last step).

        Returns:
          ``{"skipped": steps skipped in total, "consecutive": the current run of skipped
          steps, "first": the run's (or the last run's) first step or None, "leaf": its
          first non-finite leaf or None}``. Always zero under ``nonfinite="ignore"``.
        """
        return counts_dict(self.state.nonfinite, self._names)

    def clear_nonfinite(self) -> None:
        """Ends the current run of skipped steps (the consecutive count goes to 0; the
        total stays) and the stop after a :class:`~disttrace.errors.NonFiniteError`, so
        training can go on, e.g. after skipping a bad stretch of a stream."""
        counts = jax.device_get(self.state.nonfinite)._replace(run=np.zeros((), np.uint32))
        self.state = self.state._replace(nonfinite=dd.put_global(counts, self.rules.state_shardings().nonfinite))
        self._stopped = None
        self._unchecked = False

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            e = self._stopped
            raise NonFiniteError(e.step, e.leaf, e.reason + " (raised again: restore() or clear_nonfinite() first)")

    def _check_nonfinite(self) -> None:
        """Reads the counters (a host read); raises and remembers NonFiniteError if halted."""
        self._unchecked = False
        try:
            check_counts(self.state.nonfinite, self._names, self._limit, self.nonfinite)
        except NonFiniteError as e:
            self._stopped = e
            raise

    def _first_nonfinite_leaf(self) -> str | None:
        """The path of the state's first leaf holding a non-finite value, or None."""
        flags = np.asarray(self._state_flags(self.state))
        if flags.all():
            return None
        return self.rules.leaves[int(np.argmin(flags))].path

    # ---- host access --------------------------------------------------------------------
    @property
    def opt_state(self):
        """The optimizer state (``state.opt_state``)."""
        return self.state.opt_state

    def next_key(self) -> jax.Array:
        """A fresh PRNG key from the state's key, which advances (so it is checkpointed)."""
        rng, key = self._split(self.state.rng)
        self.state = self.state._replace(rng=rng)
        return key

    def params_host(self):
        """The parameters as numpy arrays on the host (gathered from every process)."""
        params = self.state.params
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            params = multihost_utils.process_allgather(params, tiled=True)
        return jax.tree.map(np.asarray, jax.device_get(params))

    def set_params(self, tree) -> None:
        """Replaces the parameters (e.g. an average from other workers), laid out by the
        rules; the optimizer state is kept.

        Args:
          tree: a pytree like ``state.params`` (host or device arrays; every process passes
            the same values).

        Raises:
          ValueError: if the structure, a shape or a dtype differs (the leaf is named).
        """
        want = self.state.params
        if jax.tree.structure(tree) != jax.tree.structure(want):
            raise ValueError(
                f"Trainer.set_params: argument 'tree' must have the structure of state.params "
                f"({jax.tree.structure(want)}); got {jax.tree.structure(tree)}"
            )
        for (path, new), old in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(want)):
            if np.shape(new) != old.shape:
                raise ValueError(
                    f"Trainer.set_params: leaf {jax.tree_util.keystr(path)} must have shape {old.shape}; "
                    f"got {np.shape(new)}"
                )
        tree = jax.tree.map(lambda new, old: np.asarray(new, dtype=old.dtype), tree, want)
        self.state = self.state._replace(params=dd.put_global(tree, self.rules.state_shardings().params))
        self._model_synced = False

    def _sync_model_params(self) -> None:
        # copies: the jitted steps donate the state's buffers, which would delete the model's
        if not self._model_synced:
            self.learner.binding.write(params=jax.tree.map(jnp.copy, self.state.params))
            self._model_synced = True

    def write_back(self) -> None:
        """Writes the trained parameters, hidden states and other states (e.g. batch-norm
        running statistics) into the model's brainstate states, for ``learner.predict``
        or saving the module. The learner's own stored traces are not updated: the
        stream's traces live in :attr:`state`."""
        ls = jax.tree.map(jnp.copy, self.state.learner_state)
        self._sync_model_params()
        self.learner.binding.write(hidden=dict(ls.hidden), aux=dict(ls.aux))

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, checkpointer, meta: Mapping | None = None, *, force: bool = False) -> bool:
        """Saves the whole :attr:`state` (and ``meta``, e.g. stream offsets or the run's
        config) as step :attr:`step_count`.

        Never a poisoned state: it first reads the non-finite counters (so a halted
        stream raises here rather than later) and checks that every leaf of the state is
        finite (one reduction over it, on the devices; whatever the policy).

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          meta: JSON-serialisable host-side state to restore with it.
          force: save even off the checkpointer's interval.

        Returns:
          Whether a save was started (see ``Checkpointer.save``).

        Raises:
          NonFiniteError: if the trainer stopped on non-finite values, or the state holds
            one (``err.leaf`` is its path, e.g. ``params/layers.0.weight``). Nothing is written.
        """
        self._raise_if_stopped()
        if self._unchecked:
            self._check_nonfinite()
        bad = self._first_nonfinite_leaf()
        if bad is not None:
            raise NonFiniteError(
                self.step_count, bad, "the training state holds a non-finite value, so it was not saved (the "
                "checkpoints kept are the earlier, finite ones)",
            )
        return checkpointer.save(self.step_count, self.state, meta, force=force)

    def restore(self, checkpointer, step: int | None = None) -> dict:
        """Replaces :attr:`state` with a saved one, laid out by this trainer's rules
        (its mesh may differ from the one that saved it).

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          step: which step (default: the newest complete and verified one).

        Returns:
          The ``meta`` saved with it.

        Raises:
          FileNotFoundError, CheckpointError, ValueError: from ``Checkpointer.restore``
            (no such step; a corrupt requested step; a state of another model or
            optimizer). :attr:`state` is then unchanged.
        """
        state, meta = checkpointer.restore(self.rules, step)
        self.state = state
        self.step_count = int(state.step)
        self._stopped, self._unchecked = None, True  # read at the next check (a state saved by another policy)
        self._learner_state_fresh = self._model_synced = False
        self._sync_model_params()
        return meta
