"""``StreamWorker``: one worker of a Ray stream run, an actor that runs ``run_worker`` in a thread.

The actor builds its trainer, its source (partitions ``r, r+W, …``) and its checkpointer
from a :class:`WorkerSpec`. :meth:`StreamWorker.start` runs
:func:`~disttrace.streaming.run_worker` in a background thread, which resumes from the
newest checkpoint of its directory. The driver reads the loop's events with
:meth:`next_event`: ``("metrics", dict)`` (each progress line and each event of the loop),
``("round", steps, params)`` (async), ``("done", summary)``, ``("error", traceback)`` or
``("aborted", why)``.

async mode: every ``average_every`` steps the loop's ``after_step`` posts ``("round",
steps, params_host())`` and blocks until the driver's :meth:`push_mean` hands back the
mean (then ``set_params``): the checkpoint of that step, taken right after, holds the
mean. :meth:`abort` ends the loop at its next round with an exception, so it saves
nothing more; :meth:`rollback` then deletes the steps newer than the step every rank
has, and the next :meth:`start` resumes there.

sync mode: the W actors form one ``jax.distributed`` job (:meth:`coordinator_address`
on rank 0, then :meth:`join` on every rank, concurrently). Each builds the trainer on
the global mesh of every worker's devices and feeds its own rows
(``process_local=True``); checkpoints are collective, into one directory, with the meta
gathered from every process (so it holds every partition's offset and ledger). A stop
request (:meth:`request_stop`) is agreed on collectively every ``log_every`` steps, so
that every process stops after the same step. A failure of any member cannot be healed
in place (the collectives of the others fail or hang): the driver replaces the whole
group.

The actor is threaded (``max_concurrency``), so :meth:`push_mean`, :meth:`abort`,
:meth:`request_stop` and :meth:`next_event` are served while the loop runs.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import traceback

from disttrace.allocator import keep_freed_memory
from disttrace.streaming.ray._spec import WorkerSpec, build_source, build_trainer, worker_directory

__all__ = ["StreamWorker"]


class _Aborted(Exception):
    """Raised inside the loop's ``after_step`` to end it without a save."""


def with_config(spec: WorkerSpec, meta: dict) -> dict:
    """The checkpoint meta plus the run's config (when the spec carries one), so that a
    later run can refuse a directory written by another model before restoring it."""
    return meta if spec.config is None else {**meta, "config": dict(spec.config)}


def _evaluator(spec: WorkerSpec, trainer, source):
    """``() -> held-out accuracy`` for progress lines, or ``None`` (no held-out trials)."""
    if not spec.evaluate_every_log or not hasattr(source, "held_out"):
        return None
    task = getattr(source, "task", None)
    if getattr(task, "kind", "classification") != "classification":
        return None  # progress lines report an accuracy; a regression task's MSE comes at the end
    xs, targets, mask = source.held_out(spec.learner_batch)
    if task is not None and hasattr(task, "metric"):  # the task's metric: accuracy, or MSE (regression)
        return lambda: task.metric(trainer.predict(xs), targets, mask)
    return lambda: trainer.evaluate(xs, targets, mask)


class StreamWorker:
    """One worker of a stream run (module docstring).

    Args:
      spec: the run's :class:`WorkerSpec`.
      rank: this worker, in ``[0, num_workers)``.
    """

    def __init__(self, spec: WorkerSpec, rank: int):
        self.spec, self.rank = spec, rank
        if spec.keep_freed_memory:  # this actor's process is the run's own
            keep_freed_memory()
        self.directory = worker_directory(spec, rank)
        self.trainer = self.source = self.checkpointer = None
        self._thread: threading.Thread | None = None
        self._events: queue.Queue = queue.Queue()
        self._inbox: queue.Queue = queue.Queue()
        self._stop = False
        if spec.mode != "sync":  # a sync worker builds after joining the jax.distributed job
            self._build(mesh=None)

    def _build(self, mesh) -> None:
        from disttrace.checkpoint import Checkpointer

        self.trainer = build_trainer(self.spec, mesh)
        self.source = build_source(self.spec, self.rank)
        self._open = lambda: Checkpointer(self.directory, max_to_keep=self.spec.max_to_keep)
        self.checkpointer = None if self.directory is None else self._open()

    def pid(self) -> int:
        """This actor's process id (a test or an operator may kill it)."""
        return os.getpid()

    # ---- sync: one jax.distributed job ---------------------------------------------------------
    def coordinator_address(self) -> str:
        """``host:port`` for the job's coordinator: this node's IP and a port free now."""
        import ray

        host = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((host, 0))
            return f"{host}:{s.getsockname()[1]}"

    def join(self, coordinator: str) -> int:
        """Joins the job (``jax.distributed.initialize``, before any other JAX use in this
        process), then builds the trainer on the global mesh; returns the global device count."""
        import jax

        import disttrace.distributed as dd

        spec = self.spec
        dd.initialize(coordinator, spec.num_workers, self.rank, initialization_timeout=120)
        n = jax.device_count()
        self._build(mesh=dd.make_mesh(data=n, model=1))
        return n

    def request_stop(self) -> None:
        """Asks the loop to stop cleanly (sync: at the next collective check, on every rank)."""
        self._stop = True

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
        :meth:`start` resumes from ``step``: the step common to every rank (async).

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
    def start(self, restarts: int, expected: int | None = None) -> None:
        """Starts ``run_worker`` in a thread. async: it resumes from ``expected`` (the
        driver's common step; ``None``: from scratch) and fails if it would resume
        elsewhere; sync and local: from the newest committed step, if any."""
        from disttrace.streaming import run_worker

        assert self._thread is None or not self._thread.is_alive(), "StreamWorker.start: the loop is running"
        self._events, self._inbox, self._stop = queue.Queue(), queue.Queue(), False
        events, inbox, spec = self._events, self._inbox, self.spec
        sync = spec.mode == "sync"
        done = {"steps": 0, "checked": None}  # sync: stream steps done (across restarts), the last checked

        def after_step(steps: int) -> None:
            if steps % spec.average_every:
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
            if metrics.get("event") == "resume":
                done["steps"] = done["checked"] = metrics["steps"]
            if not sync and metrics.get("event") == "resume" and metrics["step"] != expected:
                raise RuntimeError(
                    f"rank {self.rank} would resume from step {metrics['step']} of {self.directory}, not from the "
                    f"step {expected} common to every rank"
                )
            events.put(("metrics", dict(metrics)))

        check_every = spec.log_every or 10

        def count_step(steps: int) -> None:
            done["steps"] = steps

        def should_stop_sync() -> bool:
            # every process asks before every step and counts the same steps, so the collective falls on
            # the same step in each: after every `log_every` steps (where the last progress line was)
            steps = done["steps"]
            if steps == 0 or steps % check_every or done["checked"] == steps:
                return False
            done["checked"] = steps
            import disttrace.distributed as dd

            return dd.any_process(self._stop)

        def gather_meta(meta: dict) -> dict:
            if not sync:
                return with_config(spec, meta)
            import disttrace.distributed as dd

            every = dd.allgather_json(meta)
            merged = dict(every[0]["stream"])
            merged["offsets"], merged["ledger"] = {}, {}
            for m in every:
                merged["offsets"].update(m["stream"]["offsets"])
                merged["ledger"].update(m["stream"]["ledger"])
            return with_config(spec, {**every[0], "stream": merged})

        def loop() -> None:
            try:
                result = run_worker(
                    self.trainer, self.source, self.checkpointer, checkpoint_every=spec.checkpoint_every,
                    max_steps=spec.max_steps, reset_every=spec.reset_every, log_every=spec.log_every,
                    on_metrics=on_metrics, should_stop=should_stop_sync if sync else (lambda: self._stop),
                    after_step=count_step if sync else after_step, gather_meta=gather_meta,
                    evaluate=None if sync else _evaluator(spec, self.trainer, self.source),
                    process_local=sync, restarts=restarts,
                )
            except _Aborted as e:
                events.put(("aborted", str(e)))
            except BaseException:  # noqa: BLE001 - reported to the driver, which decides
                events.put(("error", traceback.format_exc()))
            else:
                params = self.trainer.params_host()  # a collective in sync mode: every rank gets here
                events.put(("done", {
                    "reason": result.reason, "steps": result.steps, "step": result.step,
                    "checkpoint_step": result.checkpoint_step, "resumed_from": result.resumed_from,
                    "offsets": {int(p): o for p, o in result.offsets.items()},
                    "ledger": result.ledger.to_json(), "records": result.records,
                    "params": params,
                }))

        self._thread = threading.Thread(target=loop, name=f"stream-worker-{self.rank}", daemon=True)
        self._thread.start()

    def next_event(self) -> tuple:
        """The loop's next event: ``("metrics", dict)``, ``("round", steps, params)``,
        ``("done", summary)``, ``("error", traceback)`` or ``("aborted", why)``."""
        return self._events.get()

    def push_mean(self, steps: int, mean, stop: bool = False) -> None:
        """Hands the averaged parameters of round ``steps`` to the loop; ``stop``: end the
        run cleanly after this step (a final checkpoint there)."""
        self._inbox.put((steps, mean, stop))

    def abort(self) -> None:
        """Ends the loop at its next round without a save, and waits for it (async)."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._events.put(("aborted", "abort"))  # releases a next_event call still waiting
