"""``Trainer``: online training of a compiled learner, on trials or on a stream.

One :class:`~disttrace.train.TrainState` holds everything (parameters, optimizer state,
learner state, step, RNG key, stream position), laid out on a ``('data', 'model')``
mesh by partition rules (one device by default). Two ways to feed it:

- **streams**, :meth:`Trainer.step`: one optimizer update per step; hidden states and
  traces carry on from step to step inside the state (jitted, sharded, the layout
  kept from step to step, so it can run for ever). :meth:`Trainer.reset_state` starts
  a new sequence (fresh hidden states and traces, same parameters).
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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from disttrace import checks
from disttrace import distributed as dd
from disttrace.train._losses import masked_cross_entropy
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
      chunk_size: passed to ``etrace_grad`` in trials (``None``: step by step).
      params: ``"model"`` (shard parameters' output axis on ``model``) or ``"replicated"``.
      overrides: per-path ``PartitionSpec`` overrides (``disttrace.distributed.partition_rules``).
      seed: seed of the state's RNG key (:meth:`next_key`).
      donate: let the jitted stream step reuse the old state's buffers.

    Attributes:
      rules: the validated partition rules (``print(trainer.rules)`` shows the layout).
      state: the current :class:`~disttrace.train.TrainState`.
      step_count: optimizer updates applied (a host int; checkpoints are numbered by it).

    Raises:
      ValueError: on a bad argument; from the partition rules (an axis that does not
        divide a dimension names the leaf, its shape and the mesh); if ``loss_fn`` differs
        from the learner's own.

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
        chunk_size: int | None = None,
        params: str = "model",
        overrides: Mapping | None = None,
        seed: int = 0,
        donate: bool = True,
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
        if chunk_size is not None:
            checks.positive_int(who, "chunk_size", chunk_size)
        checks.boolean(who, "donate", donate)
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
        self._donate = donate
        self._stream_step: Callable | None = None
        self._learner_state_fresh = True  # the state's learner state is a reset one
        self._model_synced = True  # the model's ParamStates hold (copies of) state.params
        shardings = self.rules.state_shardings()
        self._update = jax.jit(
            lambda state, grads: apply_gradients(optimizer, state, grads),
            out_shardings=shardings,
            donate_argnums=(0,) if donate else (),
        )
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
        """
        if self._stream_step is None:
            self._build_stream_step(x, y, process_local)
        x, y = dd.shard_batch(self.rules, x, y, process_local=process_local)
        self.state, loss = self._stream_step(self.state, x, y)
        self.step_count += 1
        self._learner_state_fresh = self._model_synced = False
        return loss

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
        self._stream_step = make_train_step(self.learner, self.optimizer, self.rules, donate=self._donate)

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
          The mean loss over the trial's steps.

        Raises:
          ValueError: on sequences of different lengths or shapes the model was not
            compiled for (from ``learner.etrace_grad``).
        """
        return self._trial(xs, ys, self._trial_loss)

    def _trial(self, xs, ys, step_fn) -> float:
        self._sync_model_params()
        if self._learner_state_fresh:
            self.learner.reset_state()
        else:
            self.reset_state()
        grads, losses = self.learner.etrace_grad(
            xs, ys, step_fn=step_fn, return_value=True, chunk_size=self.chunk_size
        )
        if self.mesh.size > 1:
            grads = jax.device_put(grads, self.rules.state_shardings().params)
        self.state = self._update(self.state, grads)
        self.step_count += 1
        self._model_synced = False
        self._sync_model_params()  # the model holds the trained parameters after each trial
        return float(jnp.mean(losses))

    def train_batch(self, xs, labels, mask) -> float:
        """A classification trial with :func:`~disttrace.train.masked_cross_entropy`
        (whatever ``loss_fn`` is): :meth:`train_trial` on ``label_targets(labels, mask)``.

        Args:
          xs: (T, B, I) inputs; labels: (B,) ints; mask: (T,) loss weights.

        Returns:
          The mean loss over the trial's steps.
        """
        return self._trial(xs, label_targets(labels, mask), self._classification_loss)

    def evaluate(self, xs, labels, mask) -> float:
        """Accuracy on held-out trials: the argmax of the mask-weighted sum of the logits
        over time against ``labels``, from fresh hidden states, without learning.

        Writes the state's parameters into the model (``learner.predict`` runs it).

        Args:
          xs: (T, B, I) inputs; labels: (B,) ints; mask: (T,) weights.

        Returns:
          The fraction of correct trials.
        """
        self._sync_model_params()
        self.learner.reset_state()
        logits = self.learner.predict(xs)  # (T, B, C)
        pooled = jnp.einsum("t,tbc->bc", jnp.asarray(mask).astype(logits.dtype), logits)
        return float(jnp.mean(jnp.argmax(pooled, -1) == jnp.asarray(labels)))

    accuracy = evaluate

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

        Args:
          checkpointer: a :class:`disttrace.checkpoint.Checkpointer`.
          meta: JSON-serialisable host-side state to restore with it.
          force: save even off the checkpointer's interval.

        Returns:
          Whether a save was started (see ``Checkpointer.save``).
        """
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
        self._learner_state_fresh = self._model_synced = False
        self._sync_model_params()
        return meta
