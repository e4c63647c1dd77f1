"""Orbax checkpoints of the whole online training state.

An online learner's state is more than its parameters: the optimizer state, the hidden
states, the eligibility traces and the ES-D-RTRL step count all shape the next
gradient, and the stream position says which data comes next. A :class:`Checkpointer`
saves all of it as one Orbax step directory, the :class:`~disttrace.distributed.TrainState`
pytree (arrays, written shard by shard from wherever they live) beside a JSON ``meta``
dict (stream offsets, a config, anything host-side), so that a resumed run continues
exactly where an uninterrupted one would.

Orbax commits a step atomically (temporary directory, then rename and a commit marker):
a process killed mid-save leaves the previous steps intact and the partial one is never
listed or restored. Saves are asynchronous by default: :meth:`Checkpointer.save` returns
once the arrays are copied off the devices, and the next save, :meth:`Checkpointer.wait`
or :meth:`Checkpointer.close` waits for the write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]

_STATE, _META = "state", "meta"


def _leaf_name(path) -> str:
    """Orbax's name of a leaf: its keys joined by '.' (dict keys and tuple indices as str)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(getattr(k, "key", k)))
    return ".".join(parts)


def _saved_leaves(tree) -> dict[str, Any]:
    """name -> array metadata of a step's saved state tree (Orbax's metadata)."""
    out = {}
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "name")):
        if hasattr(leaf, "shape") and hasattr(leaf, "name"):
            out[leaf.name] = leaf
    return out


def _abstract(target) -> Any:
    """A pytree of ``ShapeDtypeStruct``s with shardings from ``target`` (see ``restore``)."""
    if hasattr(target, "abstract_state"):  # PartitionRules
        return target.abstract_state()

    def leaf(x):
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            raise ValueError(
                "Checkpointer.restore: argument 'target' must hold arrays or jax.ShapeDtypeStructs with a "
                f"sharding (or be PartitionRules); got a leaf {type(x).__name__} of shape {getattr(x, 'shape', '?')} "
                "without one"
            )
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, target)


class Checkpointer:
    """Saves and restores the whole online training state with an Orbax ``CheckpointManager``.

    Args:
      directory: where step directories go (created if missing; made absolute).
      max_to_keep: newest steps kept (``None``: all).
      save_interval_steps: :meth:`save` writes only steps divisible by this (unless forced).
      keep_period: also keep every step divisible by this (``None``: none beyond
        ``max_to_keep``).
      async_save: write in a background thread (default) or block in :meth:`save`.

    Raises:
      ValueError: on a bad argument (the message names it, what was given and what is allowed).

    Example:
      >>> import tempfile, jax.numpy as jnp, optax, disttrace as dt
      >>> from disttrace.checkpoint import Checkpointer
      >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=mse)
      >>> trainer = dt.train.StreamTrainer(learner, optax.sgd(0.1), (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> loss = trainer.step(jnp.ones((2, 3)), jnp.zeros((2, 4)))
      >>> with Checkpointer(tempfile.mkdtemp()) as ckpt:
      ...     trainer.save(ckpt, meta={"offset": 1})
      ...     ckpt.wait()
      ...     trainer.restore(ckpt)
      True
      {'offset': 1}
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
        keep_period: int | None = None,
        async_save: bool = True,
    ):
        for name, v, allow_none in (
            ("max_to_keep", max_to_keep, True),
            ("save_interval_steps", save_interval_steps, False),
            ("keep_period", keep_period, True),
        ):
            if (v is None and not allow_none) or (
                v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1)
            ):
                allowed = "a positive int or None" if allow_none else "a positive int"
                raise ValueError(f"Checkpointer: argument {name!r} must be {allowed}; got {v!r}")
        if not isinstance(directory, str | os.PathLike):
            raise ValueError(f"Checkpointer: argument 'directory' must be a path; got {type(directory).__name__}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.save_interval_steps = save_interval_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=1,  # the interval is ours (Orbax would always save a first step)
            keep_period=keep_period,
            enable_async_checkpointing=bool(async_save),
            create=True,
        )
        # handlers named up front: a fresh process can then read a step's metadata
        # before its first restore
        handlers = {_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    # ---- writing ------------------------------------------------------------------------
    def save(self, step: int, state, meta: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
        """Saves ``state`` (any pytree of arrays, e.g. a ``TrainState``) and ``meta`` as ``step``.

        Args:
          step: a non-negative int, larger than every saved step.
          state: the arrays to save; sharded arrays are written shard by shard.
          meta: a JSON-serialisable dict (stream offsets, config); ``{}`` by default.
          force: save even if ``step`` is not a multiple of ``save_interval_steps``.

        Returns:
          Whether a save was started (``False`` when the interval policy skips ``step``).

        Raises:
          ValueError: if ``step`` is not a non-negative int or not newer than the latest
            saved step, or ``meta`` is not a JSON-serialisable dict. Nothing is written.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Checkpointer.save: argument 'step' must be a non-negative int; got {step!r}")
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(
                f"Checkpointer.save: argument 'step' must be newer than the latest saved step {latest}; got {step} "
                f"(directory {self.directory})"
            )
        meta = {} if meta is None else meta
        if not isinstance(meta, Mapping):
            raise ValueError(f"Checkpointer.save: argument 'meta' must be a dict; got {type(meta).__name__}")
        try:
            meta = json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Checkpointer.save: argument 'meta' must be JSON-serialisable; {e}") from None
        if step % self.save_interval_steps and not force:
            return False
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)})
        return bool(self._manager.save(step, args=args, force=True))

    def wait(self) -> None:
        """Blocks until the last asynchronous save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading ------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest committed step, or ``None`` if there is none."""
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every committed step, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, target, step: int | None = None) -> tuple[Any, dict]:
        """Restores a saved state onto ``target``'s structure, shapes and shardings.

        The target decides where every array goes, so a checkpoint written on one mesh
        restores onto another (more or fewer devices, another ``(data, model)`` split).

        Args:
          target: ``PartitionRules`` (``disttrace.distributed.partition_rules``; the
            state goes to its mesh and specs), or a pytree shaped like the saved state
            whose leaves are arrays or ``jax.ShapeDtypeStruct``s carrying a sharding.
          step: which step (default: the latest).

        Returns:
          ``(state, meta)``.

        Raises:
          FileNotFoundError: if there is no committed step (or not ``step``); the message
            names the directory and the steps it has.
          ValueError: if the saved state does not fit ``target``: the message names the
            leaves that are missing, extra or of another shape or dtype.
        """
        steps = self.steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"Checkpointer.restore: no committed checkpoint in {self.directory}")
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(
                f"Checkpointer.restore: argument 'step' {step!r} is not a committed checkpoint in {self.directory}; "
                f"it has steps {steps}"
            )
        abstract = _abstract(target)
        self._check_fits(step, abstract)
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()})
        restored = self._manager.restore(step, args=args)
        return restored[_STATE], dict(restored[_META] or {})

    def _check_fits(self, step: int, abstract) -> None:
        saved = _saved_leaves(self._manager.item_metadata(step)[_STATE].tree)
        wanted = {_leaf_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
        problems = [f"missing in the checkpoint: {n}" for n in sorted(set(wanted) - set(saved))]
        problems += [f"not in the target: {n}" for n in sorted(set(saved) - set(wanted))]
        for n in sorted(set(saved) & set(wanted)):
            s, w = saved[n], wanted[n]
            if tuple(s.shape) != tuple(w.shape) or jax.numpy.dtype(s.dtype) != jax.numpy.dtype(w.dtype):
                problems.append(f"{n}: saved {jax.numpy.dtype(s.dtype).name}{list(s.shape)}, "
                                f"target {jax.numpy.dtype(w.dtype).name}{list(w.shape)}")
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
            raise ValueError(
                f"Checkpointer.restore: step {step} in {self.directory} does not fit argument 'target': {shown}"
            )
