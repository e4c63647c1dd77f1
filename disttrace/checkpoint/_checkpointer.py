"""Orbax checkpoints of the whole online training state.

An online learner's state is more than its parameters: the optimizer state, the hidden
states, the eligibility traces and the ES-D-RTRL step count all shape the next
gradient, and the stream position says which data comes next. A :class:`Checkpointer`
saves all of it as one Orbax step directory, the :class:`~disttrace.distributed.TrainState`
pytree (arrays, written shard by shard from wherever they live) beside a JSON ``meta``
dict (stream offsets, a config, anything host-side), so that a resumed run continues
exactly where an uninterrupted one would.

What makes it safe to run unattended:

- **Atomic, verified steps.** Orbax commits a step by renaming a temporary directory;
  after that, the writer hashes every file of the step and writes a commit marker last
  (:mod:`disttrace.checkpoint._integrity`). :meth:`Checkpointer.steps` lists only
  committed steps; :meth:`Checkpointer.latest_step` and :meth:`Checkpointer.restore` use
  only steps whose files still match their checksums. A restore without a step falls
  back to the newest good step and warns about each newer one it skips; a bad step asked
  for explicitly raises :class:`~disttrace.errors.CheckpointError`.
- **No save/restore race.** Saves are asynchronous by default: :meth:`Checkpointer.save`
  returns once the arrays are copied off the devices, and Orbax writes, then a background
  thread hashes. A restore first waits for that (so it never reads a step mid-write, nor
  one that the save's retention policy is deleting).
- **One writer per directory** (:mod:`disttrace.checkpoint._lock`): a writing
  ``Checkpointer`` holds a file lock naming its pid and host; a second writer is refused at
  construction, a dead writer's lock is taken over, and its temporary directories are
  removed. ``read_only=True`` opens a directory to restore only, without the lock.
- **URLs.** ``gs://…`` and other ``scheme://`` directories go to Orbax unchanged
  (:mod:`disttrace.checkpoint._location`); checksums work through ``etils.epath``, but
  object stores get no writer lock and no cleanup of temporary directories.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from disttrace import checks
from disttrace.checkpoint._fit import abstract_target, check_fits
from disttrace.checkpoint._integrity import VerificationCache, has_marker, step_directories, write_marker
from disttrace.checkpoint._location import is_url, normalise_directory
from disttrace.checkpoint._lock import WriterLock, remove_stale_temporaries
from disttrace.errors import CheckpointError

__all__ = ["Checkpointer"]

_STATE, _META = "state", "meta"


class Checkpointer:
    """Saves and restores the whole online training state with an Orbax ``CheckpointManager``.

    Args:
      directory: where step directories go: a local path (created if missing; made
        absolute) or a ``scheme://`` URL (``gs://bucket/run``), passed to Orbax unchanged.
      max_to_keep: newest steps kept (``None``: all).
      save_interval_steps: :meth:`save` writes only steps divisible by this (unless forced).
      keep_period: also keep every step divisible by this (``None``: none beyond
        ``max_to_keep``).
      async_save: write and hash in background threads (default) or block in :meth:`save`.
      read_only: open to restore only: no writer lock, no cleanup, :meth:`save` refused.
        Any number of readers may open a directory beside its one writer.

    A writer (``read_only=False``) on a local directory takes the directory's writer lock
    (``<directory>/.disttrace-writer.lock``) for its lifetime and releases it on
    :meth:`close`, on leaving a ``with`` block and when the process exits, however it
    dies. In a multi-process (``jax.distributed``) job every process opens the directory
    and calls :meth:`save`; process 0 takes the lock and writes the commit markers.
    A URL directory gets no lock (``UserWarning``): make sure one job writes it.

    Raises:
      ValueError: on a bad argument (the message names it, what was given and what is
        allowed; a wrong type raises ``disttrace.checks.ArgumentTypeError``, a ``ValueError``).
      CheckpointError: if another live writer holds the directory's lock (``step`` is
        ``None``; ``reason`` names its pid and host).

    Example:
      >>> import tempfile, jax.numpy as jnp, optax, disttrace as dt
      >>> from disttrace.checkpoint import Checkpointer
      >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
      >>> learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=mse)
      >>> trainer = dt.train.Trainer(learner, optax.sgd(0.1), (jnp.zeros((2, 3)), jnp.zeros((2, 4))))
      >>> loss = trainer.step(jnp.ones((2, 3)), jnp.zeros((2, 4)))
      >>> with Checkpointer(tempfile.mkdtemp()) as ckpt:
      ...     trainer.save(ckpt, meta={"offset": 1})
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
        read_only: bool = False,
    ):
        who = "Checkpointer"
        if max_to_keep is not None:
            checks.positive_int(who, "max_to_keep", max_to_keep)
        checks.positive_int(who, "save_interval_steps", save_interval_steps)
        if keep_period is not None:
            checks.positive_int(who, "keep_period", keep_period)
        checks.boolean(who, "async_save", async_save)
        checks.boolean(who, "read_only", read_only)
        self.directory = normalise_directory(directory)
        self.save_interval_steps = save_interval_steps
        self.read_only = read_only
        self._async = async_save
        #: the step the last :meth:`restore` read (``None`` before the first)
        self.restored_step: int | None = None
        self._local = not is_url(self.directory)
        self._root = epath.Path(self.directory)
        self._cache = VerificationCache(local=self._local)
        self._primary = jax.process_index() == 0
        self._pending: tuple[int, threading.Thread] | None = None
        self._commit_error: BaseException | None = None
        self._barriers = 0  # counts barriers, so that their keys are unique and equal on every process
        self._warned: set[tuple[int, str]] = set()
        self._closed = False
        self._lock = None
        if not read_only:
            if not self._local:
                warnings.warn(
                    f"Checkpointer: {self.directory} is a URL: no writer lock is taken and temporary directories "
                    "of dead writers are not cleaned up (both need a local file system); make sure that a single "
                    "job writes this directory",
                    UserWarning,
                    stacklevel=2,
                )
            elif self._primary:
                os.makedirs(self.directory, exist_ok=True)
                self._lock = WriterLock.acquire(self.directory)
                if self._lock.held:  # no live writer: whatever is half-written here is a dead writer's
                    remove_stale_temporaries(self.directory)
        try:
            options = ocp.CheckpointManagerOptions(
                # a reader keeps and saves nothing (what Orbax would set itself, with a log line each)
                max_to_keep=None if read_only else max_to_keep,
                save_interval_steps=0 if read_only else 1,  # the interval is ours (Orbax always saves a first step)
                keep_period=None if read_only else keep_period,
                enable_async_checkpointing=async_save,
                create=not read_only,
                read_only=read_only,
            )
            # handlers named up front: a fresh process can then read a step's metadata
            # before its first restore
            handlers = {_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()}
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    # ---- writing ------------------------------------------------------------------------
    def save(self, step: int, state, meta: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
        """Saves ``state`` (any pytree of arrays, e.g. a ``TrainState``) and ``meta`` as ``step``.

        With ``async_save`` it returns once the arrays are on the host; Orbax writes them
        and a background thread then hashes the files and writes the commit marker. The
        next :meth:`save`, :meth:`wait`, :meth:`restore` or :meth:`close` waits for that.

        Steps at or after ``step`` that are on disk but incomplete or corrupt (a resumed
        run overwriting what it fell back from) are deleted first, with a warning each.

        Args:
          step: a non-negative int, larger than every good saved step.
          state: the arrays to save; sharded arrays are written shard by shard.
          meta: a JSON-serialisable dict (stream offsets, config); ``{}`` by default.
          force: save even if ``step`` is not a multiple of ``save_interval_steps``.

        Returns:
          Whether a save was started (``False`` when the interval policy skips ``step``).

        Raises:
          ValueError: if ``step`` is not a non-negative int or not newer than the latest
            good saved step, or ``meta`` is not a JSON-serialisable dict. Nothing is written.
          RuntimeError: if this Checkpointer is ``read_only`` or closed.
          Exception: whatever made the previous asynchronous save fail (re-raised here).
        """
        self._check_open("save")
        if self.read_only:
            raise RuntimeError(
                f"Checkpointer.save: {self.directory} was opened with read_only=True; open it with "
                "read_only=False (the default) to write"
            )
        step = checks.non_negative_int("Checkpointer.save", "step", step)
        meta = {} if meta is None else meta
        if not isinstance(meta, Mapping):
            raise ValueError(f"Checkpointer.save: argument 'meta' must be a dict; got {type(meta).__name__}")
        try:
            meta = json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Checkpointer.save: argument 'meta' must be JSON-serialisable; {e}") from None
        self._finish_pending(raise_error=True)
        on_disk = step_directories(self._root)
        later = sorted(s for s in on_disk if s >= step)
        good = [s for s in later if self._cache.check(s, on_disk[s]) is None]
        if good:
            raise ValueError(
                f"Checkpointer.save: argument 'step' must be newer than the latest saved step {good[-1]}; got {step} "
                f"(directory {self.directory})"
            )
        if step % self.save_interval_steps and not force:
            return False
        if later:
            self._delete_bad(later, on_disk)
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)})
        self._manager.save(step, args=args, force=True)
        if self._async:
            thread = threading.Thread(target=self._commit, args=(step,), name=f"disttrace-commit-{step}")
            self._pending = (step, thread)
            thread.start()
        else:
            self._commit(step)
            self._raise_commit_error()
        return True

    def _commit(self, step: int) -> None:
        """After Orbax finalised ``step``: hash its files and write the commit marker (process 0)."""
        step_dir = self._root / str(step)
        try:
            try:
                self._manager.wait_until_finished()
                if self._primary:
                    write_marker(step_dir, step, local=self._local)
            finally:
                self._barrier("commit")  # every process sees the marker once this returns
        except BaseException as e:  # noqa: BLE001 - re-raised by the next wait/save/close
            self._commit_error = e
        if self._commit_error is None and has_marker(step_dir):
            self._cache.record_good(step, step_dir)

    def _delete_bad(self, steps: list[int], on_disk: dict[int, epath.Path]) -> None:
        for s in steps:
            self._cache.forget(s)
            if self._primary:
                warnings.warn(
                    f"Checkpointer.save: deleting step {s} at {on_disk[s]}, which is incomplete or corrupt, before "
                    "writing over it",
                    UserWarning,
                    stacklevel=3,
                )
                on_disk[s].rmtree(missing_ok=True)
        self._barrier("delete")
        self._manager.reload()  # Orbax's own list of steps (retention counts it)

    def _barrier(self, what: str) -> None:
        """Waits for every process of a ``jax.distributed`` job (no-op in one process)."""
        self._barriers += 1
        if jax.process_count() == 1:
            return
        # the distributed client's barrier, not a device collective: safe from a background thread
        key = f"disttrace_checkpoint_{zlib.crc32(self.directory.encode()):08x}_{what}_{self._barriers}"
        ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=600_000)

    def wait(self) -> None:
        """Blocks until the last asynchronous save is committed (written, hashed, marked).

        Raises:
          Exception: whatever made that save fail.
        """
        self._finish_pending(raise_error=True)

    def close(self) -> None:
        """Waits for pending saves, releases the manager's resources and the writer lock.

        Idempotent. The lock is released even if the last save failed (its error is raised).
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._finish_pending(raise_error=True)
        finally:
            try:
                self._manager.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"Checkpointer.{what}: this Checkpointer of {self.directory} is closed")

    def _finish_pending(self, *, raise_error: bool) -> None:
        if self._pending is not None:
            self._pending[1].join()
            self._pending = None
        if raise_error:
            self._raise_commit_error()

    def _raise_commit_error(self) -> None:
        error, self._commit_error = self._commit_error, None
        if error is not None:
            raise error

    def _in_flight(self) -> int | None:
        """The step an asynchronous save is still writing, if any."""
        if self._pending is not None and self._pending[1].is_alive():
            return self._pending[0]
        return None

    # ---- reading ------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Every committed step (its save finished and its commit marker exists), oldest first.

        Cheap (a directory listing): it does not hash the steps' data. Steps that
        :meth:`latest_step` or :meth:`restore` of this Checkpointer found corrupt are left
        out (while their files stay unchanged); any other listed step may still fail
        verification when restored. A step still being written is not listed.
        """
        return [
            s for s, d in sorted(step_directories(self._root).items())
            if has_marker(d) and not self._cache.known_bad(s, d)
        ]

    def latest_step(self) -> int | None:
        """The newest complete and verified step, or ``None`` if there is none.

        Newer steps that are incomplete or corrupt are skipped with a ``UserWarning``
        naming each one's path and what is wrong (once per step and reason). A step still
        being written by this Checkpointer is not a candidate (and not warned about).

        Cost: the first call hashes the newest step's files (SHA-256, about 0.5-2 GB/s);
        the result is cached while the files' sizes and mtimes are unchanged, so later
        calls only ``stat`` them. The steps this Checkpointer saved are cached when saved.
        """
        return self._newest_good(fresh=False)[0]

    def _newest_good(self, *, fresh: bool) -> tuple[int | None, list[str]]:
        """(newest good step or None, descriptions of the steps skipped on the way)."""
        on_disk = step_directories(self._root)
        skipped = []
        for s in sorted(on_disk, reverse=True):
            in_flight = self._in_flight()
            if in_flight is not None and s >= in_flight:
                continue
            reason = self._cache.check(s, on_disk[s], fresh=fresh)
            if reason is not None and in_flight is not None:
                # the save in flight may be deleting this step by retention: judge it afterwards
                self._finish_pending(raise_error=False)
                if not on_disk[s].exists():
                    continue
                reason = self._cache.check(s, on_disk[s], fresh=fresh)
            if reason is None:
                return s, skipped
            skipped.append(f"step {s} at {on_disk[s]}: {reason}")
            self._warn_skipped(s, on_disk[s], reason)
        return None, skipped

    def _warn_skipped(self, step: int, path, reason: str) -> None:
        if (step, reason) in self._warned:
            return
        self._warned.add((step, reason))
        warnings.warn(f"Checkpointer: skipping step {step} at {path}: {reason}", UserWarning, stacklevel=4)

    def restore(self, target, step: int | None = None) -> tuple[Any, dict]:
        """Restores a saved state onto ``target``'s structure, shapes and shardings.

        The target decides where every array goes, so a checkpoint written on one mesh
        restores onto another (more or fewer devices, another ``(data, model)`` split).
        It first waits for this Checkpointer's asynchronous save in flight, if any (a
        step mid-write, or one its retention is deleting, is never read), and it always
        verifies the step's checksums afresh (one more read of the step's files).

        Args:
          target: ``PartitionRules`` (``disttrace.distributed.partition_rules``; the
            state goes to its mesh and specs), or a pytree shaped like the saved state
            whose leaves are arrays or ``jax.ShapeDtypeStruct``s carrying a sharding.
          step: which step. Default: the newest complete and verified one; each newer
            step that is incomplete or corrupt is skipped with a ``UserWarning`` naming its
            path and what is wrong. :attr:`restored_step` says which step was read.

        Returns:
          ``(state, meta)``.

        Raises:
          FileNotFoundError: if there is no such step (with ``step=None``: no complete
            and verified step); the message names the directory, the steps it has and
            any skipped ones with their reasons.
          CheckpointError: if ``step`` is given and that step is incomplete or corrupt
            (``err.step``, ``err.path``, ``err.reason``).
          ValueError: if the saved state does not fit ``target``: the message names the
            leaves that are missing, extra or of another shape or dtype.
        """
        self._check_open("restore")
        if step is not None:
            step = checks.non_negative_int("Checkpointer.restore", "step", step)
        abstract = abstract_target(target)
        step = self._good_step("restore", step, fresh=True)
        path = os.fspath(self._root / str(step))
        try:
            item = self._manager.item_metadata(step)[_STATE]
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise CheckpointError(step, path, f"Orbax cannot read its metadata ({type(e).__name__}: {e})") from e
        if item is None or getattr(item, "tree", None) is None:
            raise CheckpointError(step, path, "Orbax finds no metadata of its state")
        check_fits(item.tree, abstract, step=step, directory=self.directory)
        args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()})
        restored = self._manager.restore(step, args=args)
        self.restored_step = step
        return restored[_STATE], dict(restored[_META] or {})

    def meta(self, step: int | None = None) -> dict:
        """The JSON ``meta`` saved with a step, without restoring its arrays (e.g. to
        compare a run's config with the checkpoint's before restoring onto it).

        The step is chosen and verified as by :meth:`restore` (the step's checksums are
        checked, cached as in :meth:`latest_step`; the arrays are not read into memory).

        Args:
          step: which step. Default: the newest complete and verified one (newer bad
            steps skipped with a ``UserWarning``).

        Returns:
          The ``meta`` dict given to :meth:`save` (``{}`` if none was).

        Raises:
          FileNotFoundError: if there is no such step (no good step at all, with ``step=None``).
          CheckpointError: if ``step`` is given and that step is incomplete or corrupt, or
            its meta cannot be read.

        Example:
          >>> import tempfile, jax.numpy as jnp
          >>> from disttrace.checkpoint import Checkpointer
          >>> with Checkpointer(tempfile.mkdtemp(), async_save=False) as ckpt:
          ...     ckpt.save(3, {"w": jnp.zeros(2)}, meta={"config": {"lr": 0.1}})
          ...     ckpt.meta()
          True
          {'config': {'lr': 0.1}}
        """
        self._check_open("meta")
        if step is not None:
            step = checks.non_negative_int("Checkpointer.meta", "step", step)
        step = self._good_step("meta", step, fresh=False)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
            path = os.fspath(self._root / str(step))
            raise CheckpointError(step, path, f"Orbax cannot read its meta ({type(e).__name__}: {e})") from e
        return dict(restored[_META] or {})

    def _good_step(self, who: str, step: int | None, *, fresh: bool) -> int:
        """``step`` checked to be committed and verified, or the newest such step (after
        waiting for the save in flight); the errors of :meth:`restore`."""
        self._finish_pending(raise_error=False)  # its error stays for wait/save/close to raise
        if step is None:
            step, skipped = self._newest_good(fresh=fresh)
            if step is None:
                why = f"; skipped: {'; '.join(skipped)}" if skipped else ""
                raise FileNotFoundError(
                    f"Checkpointer.{who}: no complete and verified checkpoint in {self.directory}{why}"
                )
        else:
            on_disk = step_directories(self._root)
            if step not in on_disk:
                raise FileNotFoundError(
                    f"Checkpointer.{who}: argument 'step' {step!r} is not a committed checkpoint in "
                    f"{self.directory}; it has steps {self.steps()}"
                )
            reason = self._cache.check(step, on_disk[step], fresh=fresh)
            if reason is not None:
                raise CheckpointError(step, os.fspath(on_disk[step]), reason)
        if step not in self._manager.all_steps():
            self._manager.reload()  # written by another process after this one listed the directory
        return step
