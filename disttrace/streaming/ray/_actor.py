"""``StreamWorker``: one async-mode learner, a Ray actor that runs ``run_worker`` in a thread.

The actor builds its trainer, its source (partitions ``r, r+W, …``) and its checkpointer
(``<checkpoint_dir>/rank-<r>``) from a :class:`WorkerSpec`. :meth:`StreamWorker.start`
runs :func:`~disttrace.streaming.run_worker` in a background thread, which resumes from
the newest checkpoint of its directory. The driver talks to it through two queues:

- every ``average_every`` steps the loop's ``after_step`` posts ``("round", steps,
  params_host())`` and blocks until the driver's :meth:`push_mean` hands back the mean
  (then ``set_params``): the checkpoint of that step, taken right after, holds the mean;
- :meth:`next_event` returns the next ``("round", …)``, ``("done", summary)`` or
  ``("error", text)`` of the loop.

The actor is threaded (``max_concurrency``), so :meth:`push_mean`, :meth:`abort` and
:meth:`next_event` are served while the loop blocks. :meth:`abort` ends the loop at its
next round with an exception, so it saves nothing more; :meth:`rollback` then deletes
the steps newer than the step every rank has, and the next :meth:`start` resumes there.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import traceback

from disttrace.streaming.ray._spec import WorkerSpec, build_source, build_trainer, worker_directory

__all__ = ["StreamWorker"]


class _Aborted(Exception):
    """Raised inside the loop's ``after_step`` to end it without a save."""


class StreamWorker:
    """One learner of an async run (module docstring).

    Args:
      spec: the run's :class:`WorkerSpec`.
      rank: this worker, in ``[0, num_workers)``.
    """

    def __init__(self, spec: WorkerSpec, rank: int):
        from disttrace.checkpoint import Checkpointer

        self.spec, self.rank = spec, rank
        self.trainer = build_trainer(spec)
        self.source = build_source(spec, rank)
        self.directory = worker_directory(spec, rank)
        self._open = lambda: Checkpointer(self.directory, max_to_keep=spec.max_to_keep)
        self.checkpointer = None if self.directory is None else self._open()
        self._thread: threading.Thread | None = None
        self._events: queue.Queue = queue.Queue()
        self._inbox: queue.Queue = queue.Queue()
        self._stop = False

    def pid(self) -> int:
        """This actor's process id (a test or an operator may kill it)."""
        return os.getpid()

    # ---- checkpoints ------------------------------------------------------------------------
    def committed_steps(self) -> list[int]:
        """The committed checkpoint steps of this rank's directory (after any save in flight)."""
        if self.checkpointer is None:
            return []
        try:
            self.checkpointer.wait()
        except Exception:  # noqa: BLE001 - a failed last save is simply not a committed step
            pass
        return self.checkpointer.steps()

    def rollback(self, step: int | None) -> None:
        """Deletes every step newer than ``step`` (all of them if ``None``), so that the next
        :meth:`start` resumes from ``step``: the step common to every rank.

        The source is rebuilt, and with ``step=None`` the trainer too: ``run_worker`` restores
        (and seeks) only from a checkpoint, so a rollback to the very start must not keep the
        state and stream position of the aborted attempt.
        """
        self.source.close()
        self.source = build_source(self.spec, self.rank)
        if step is None:
            self.trainer = build_trainer(self.spec)
        if self.checkpointer is None:
            return
        try:
            self.checkpointer.close()
        except Exception:  # noqa: BLE001 - the step of a failed save is deleted below anyway
            pass
        for name in os.listdir(self.directory):
            # Orbax names a step's directory by its number; temporaries of a dead writer are
            # removed by the Checkpointer that reopens the directory
            if name.isdigit() and (step is None or int(name) > step):
                shutil.rmtree(os.path.join(self.directory, name))
        self.checkpointer = self._open()

    # ---- the loop -----------------------------------------------------------------------------
    def start(self, restarts: int, expected: int | None) -> None:
        """Starts ``run_worker`` in a thread, resuming from ``expected`` (the driver's common
        step; ``None``: from scratch); the loop fails if it would resume elsewhere."""
        from disttrace.streaming import format_metrics, run_worker

        assert self._thread is None or not self._thread.is_alive(), "StreamWorker.start: the loop is running"
        self._events, self._inbox, self._stop = queue.Queue(), queue.Queue(), False
        events, inbox, spec, k = self._events, self._inbox, self.spec, self.spec.average_every

        def after_step(steps: int) -> None:
            if steps % k:
                return
            events.put(("round", steps, self.trainer.params_host()))
            item = inbox.get()
            if item is None:
                raise _Aborted(f"rank {self.rank} aborted at step {steps} for a rollback")
            at, mean, stop = item
            assert at == steps, (at, steps)
            self.trainer.set_params(mean)
            self._stop = self._stop or stop

        def on_metrics(metrics: dict) -> None:
            if metrics.get("event") == "resume" and metrics["step"] != expected:
                raise RuntimeError(
                    f"rank {self.rank} would resume from step {metrics['step']} of {self.directory}, not from the "
                    f"step {expected} common to every rank"
                )
            print(f"rank {self.rank}  {format_metrics(metrics)}", flush=True)

        def loop() -> None:
            try:
                result = run_worker(
                    self.trainer, self.source, self.checkpointer, checkpoint_every=spec.checkpoint_every,
                    max_steps=spec.max_steps, log_every=spec.log_every, on_metrics=on_metrics,
                    should_stop=lambda: self._stop, after_step=after_step, restarts=restarts,
                )
            except _Aborted as e:
                events.put(("aborted", str(e)))
            except BaseException:  # noqa: BLE001 - reported to the driver, which decides
                events.put(("error", traceback.format_exc()))
            else:
                events.put(("done", {
                    "reason": result.reason, "steps": result.steps, "step": result.step,
                    "checkpoint_step": result.checkpoint_step, "resumed_from": result.resumed_from,
                    "offsets": {int(p): o for p, o in result.offsets.items()},
                    "ledger": result.ledger.to_json(), "records": result.records,
                    "params": self.trainer.params_host(),
                }))

        self._thread = threading.Thread(target=loop, name=f"stream-worker-{self.rank}", daemon=True)
        self._thread.start()

    def next_event(self) -> tuple:
        """The loop's next event: ``("round", steps, params)``, ``("done", summary)``,
        ``("error", traceback)`` or ``("aborted", why)``."""
        return self._events.get()

    def push_mean(self, steps: int, mean, stop: bool = False) -> None:
        """Hands the averaged parameters of round ``steps`` to the loop; ``stop``: end the
        run cleanly after this step (a final checkpoint there)."""
        self._inbox.put((steps, mean, stop))

    def abort(self) -> None:
        """Ends the loop at its next round without a save, and waits for it."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._events.put(("aborted", "abort"))  # releases a next_event call still waiting
