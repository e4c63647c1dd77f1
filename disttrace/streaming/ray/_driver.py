"""``run(spec) -> RunResult``: the driver of a streaming run, locally or on Ray actors.

Modes:

- ``local``: no Ray. One :func:`~disttrace.streaming.run_worker` in this process over
  every partition, checkpoints in ``checkpoint_dir``. A rerun resumes; a crash propagates.
- ``async``: W :class:`~disttrace.streaming.ray.StreamWorker` actors, each an
  independent learner on its partitions ``r, r+W, …``. Every ``average_every`` = K steps
  the driver collects every worker's parameters (host numpy), averages them in fixed rank
  order (so a replay averages bitwise the same), ``ray.put`` s the mean once and pushes
  the reference to all; optimizer state, hidden states and traces stay local. Checkpoints
  fall on averaging rounds only (``checkpoint_every`` is a multiple of K), one directory
  per rank, ``<checkpoint_dir>/rank-<r>``, the same steps in each.

  Failure handling: a worker whose actor dies, whose loop raises, or that reports nothing
  for ``stall_timeout_s`` fails the round. Then **every** worker rolls back to the newest
  step committed in every rank's directory: the live workers end their loop without a
  save (:meth:`StreamWorker.abort`), the dead actor is replaced by a new one, steps newer
  than the common step are deleted, and all resume from it. Without the rollback, steps
  that the dead worker had already averaged into the others would count twice on replay.
  After ``max_failures`` rollbacks the next failure ends the run with
  :class:`StreamRunError`, naming the worker, its last error and the last committed step.
  The directories must be visible to the driver's workers across restarts (one node, a
  shared file system, or a ``scheme://`` URL).

- ``sync``: W actors form one ``jax.distributed`` job (the coordinator on worker 0's
  node IP and a free port; every ``initialize`` fired concurrently). Each step every
  worker feeds its own rows (``process_local=True``) to one global step on the mesh of
  every worker's devices; checkpoints are collective (one directory, the meta gathered
  from every process). Any failure — an actor that dies, a loop that raises, or no
  report from any worker for ``stall_timeout_s`` (a live but stuck member hangs the
  others without an error) — ends the whole group: every actor is killed, a new group
  joins on a new port and resumes from the newest committed checkpoint. With a
  deterministic step the result is bitwise that of a run without failures.

Progress: each worker's progress lines and events reach the driver (``on_metrics``);
by default rank 0's progress lines and every event are printed, one line each.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray

from disttrace.allocator import keep_freed_memory
from disttrace.streaming import Ledger, format_metrics
from disttrace.streaming.ray._actor import StreamWorker
from disttrace.streaming.ray._address import connect, disconnect
from disttrace.streaming.ray._placement import reserve_tpu_slice
from disttrace.streaming.ray._result import Failure, RunResult, StreamRunError, last_line, mean_params
from disttrace.streaming.ray._spec import WorkerSpec, build_source, build_trainer, worker_directory

__all__ = ["RunResult", "StreamRunError", "run"]


def _default_metrics(rank: int, metrics: dict) -> None:
    """Prints rank 0's progress lines and every rank's events, one line each."""
    if "event" in metrics:
        print(f"rank {rank}  {format_metrics(metrics)}", flush=True)
    elif rank == 0:
        print(format_metrics(metrics), flush=True)


def _default_metrics(rank: int, metrics: dict) -> None:
    """Prints rank 0's progress lines and every rank's events, one line each."""
    if "event" in metrics:
        print(f"rank {rank}  {format_metrics(metrics)}", flush=True)
    elif rank == 0:
        print(format_metrics(metrics), flush=True)


def _run_local(spec: WorkerSpec, should_stop, on_metrics, clock: Callable[[], float]) -> RunResult:
    from disttrace.checkpoint import Checkpointer
    from disttrace.streaming import run_worker

    started = clock()
    if spec.keep_freed_memory:
        keep_freed_memory()
    trainer, source = build_trainer(spec), build_source(spec, 0)
    directory = worker_directory(spec, 0)
    ckpt = None if directory is None else Checkpointer(directory, max_to_keep=spec.max_to_keep)
    from disttrace.streaming.ray._actor import _evaluator, with_config

    try:
        result = run_worker(trainer, source, ckpt, checkpoint_every=spec.checkpoint_every, max_steps=spec.max_steps,
                            reset_every=spec.reset_every, log_every=spec.log_every,
                            on_metrics=lambda m: on_metrics(0, m), should_stop=should_stop,
                            evaluate=_evaluator(spec, trainer, source),
                            gather_meta=lambda meta: with_config(spec, meta))
    finally:
        if ckpt is not None:
            ckpt.close()
        source.close()
    return RunResult("local", result.reason, result.steps, result.checkpoint_step, (directory,), result.ledger,
                     result.offsets, 0, trainer.params_host(), clock() - started)


class _Async:
    """The async driver's state: the actors, and one attempt after another."""

    def __init__(self, spec: WorkerSpec, on_event: Callable[[dict], None] | None, should_stop: Callable[[], bool],
                 on_metrics: Callable[[int, dict], None], options: list[dict]):
        self.spec, self.on_event, self.should_stop, self.on_metrics = spec, on_event, should_stop, on_metrics
        self.actors = [ray.remote(StreamWorker).options(**o) for o in options]
        self.workers = [self.actors[r].remote(spec, r) for r in range(spec.num_workers)]

    def emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def common_step(self) -> int | None:
        """The newest step committed in every rank's directory (``None``: none)."""
        refs = [w.committed_steps.remote() for w in self.workers]
        steps = [self._get(r, ref) for r, ref in enumerate(refs)]
        common = set(steps[0]).intersection(*steps[1:])
        return max(common) if common else None

    def _get(self, rank: int, ref):
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise Failure(rank, f"its actor died ({type(e).__name__}: {e})".strip(), dead=True) from None
        except ray.exceptions.RayError as e:
            raise Failure(rank, f"{type(e).__name__}: {e}", dead=False) from None

    def attempt(self, restarts: int) -> tuple[int | None, list[dict]]:
        """Rolls every worker back to the common step, runs to the end; returns (the
        common step started from, each rank's summary)."""
        spec = self.spec
        for r, w in enumerate(self.workers):  # a worker that died starting up is a failure too
            self._get(r, w.pid.remote())
        common = self.common_step()
        for r, w in enumerate(self.workers):
            self._get(r, w.rollback.remote(common))
        pids = [self._get(r, w.pid.remote()) for r, w in enumerate(self.workers)]
        for r, w in enumerate(self.workers):
            self._get(r, w.start.remote(restarts, common))
        self.emit({"event": "started", "from_step": common, "restarts": restarts, "pids": pids})
        pending = {r: w.next_event.remote() for r, w in enumerate(self.workers)}
        while True:
            got: dict[int, tuple] = {}
            while pending:
                ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=spec.stall_timeout_s)
                if not ready:
                    late = sorted(pending)
                    raise Failure(late[0], f"no report for {spec.stall_timeout_s} s (ranks {late} stalled)", dead=True)
                rank = next(r for r, ref in pending.items() if ref == ready[0])
                del pending[rank]
                event = self._get(rank, ready[0])
                if event[0] in ("error", "aborted"):
                    raise Failure(rank, event[1], dead=False)
                if event[0] == "metrics":
                    metrics = event[1]
                    if "event" not in metrics:  # every worker serves as many partitions: the job's totals
                        w = spec.num_workers
                        metrics = {**metrics, "records": metrics["records"] * w,
                                   "records_per_s": metrics["records_per_s"] * w}
                    self.on_metrics(rank, metrics)
                    pending[rank] = self.workers[rank].next_event.remote()
                    continue
                got[rank] = event
            kinds = {e[0] for e in got.values()}
            if kinds == {"done"}:
                return common, [got[r][1] for r in range(spec.num_workers)]
            at = {e[1] for e in got.values() if e[0] == "round"}
            if kinds != {"round"} or len(at) != 1:
                state = {r: (e[0], e[1] if e[0] == "round" else e[1]["steps"]) for r, e in sorted(got.items())}
                raise Failure(min(got), f"workers out of step: {state}", dead=False)
            steps = at.pop()
            mean = ray.put(mean_params([got[r][2] for r in range(spec.num_workers)]))
            stop = bool(self.should_stop())
            self.emit({"event": "round", "steps": steps, "stop": stop, "workers": list(self.workers)})
            for rank, w in enumerate(self.workers):
                w.push_mean.remote(steps, mean, stop)
                pending[rank] = w.next_event.remote()

    def recover(self, failure: Failure) -> None:
        """Ends every live loop without a save and replaces the failed worker's actor (and
        any other found dead on the way)."""
        for r, w in enumerate(self.workers):
            if r == failure.rank and failure.dead:
                self._replace(r)
                continue
            try:
                ray.get(w.abort.remote(), timeout=self.spec.stall_timeout_s)
            except (ray.exceptions.RayError, TimeoutError):
                self._replace(r)

    def _replace(self, rank: int) -> None:
        ray.kill(self.workers[rank], no_restart=True)
        self.workers[rank] = self.actors[rank].remote(self.spec, rank)

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)


def _disk_common_step(spec: WorkerSpec) -> int | None:
    """The newest step committed in every rank's directory, read by the driver."""
    from disttrace.checkpoint import Checkpointer

    steps = []
    for r in range(spec.num_workers):
        with Checkpointer(worker_directory(spec, r), read_only=True) as reader:
            steps.append(set(reader.steps()))
    common = set.intersection(*steps)
    return max(common) if common else None


def _run_async(spec: WorkerSpec, on_event, should_stop, on_metrics, options, clock) -> RunResult:
    if spec.checkpoint_dir is None:
        raise ValueError("run: async mode needs 'checkpoint_dir' (rollbacks restore every rank from it)")
    started = clock()
    driver = _Async(spec, on_event, should_stop, on_metrics, options)
    restarts, failures = 0, 0
    try:
        while True:
            try:
                _, summaries = driver.attempt(restarts)
                break
            except Failure as failure:
                failures += 1
                if failures > spec.max_failures:
                    driver.close()
                    where = ", ".join(worker_directory(spec, r) for r in range(spec.num_workers))
                    last = _disk_common_step(spec)
                    raise StreamRunError(
                        f"async run failed: worker rank {failure.rank} failed and the run had no rollback left "
                        f"({failures} failures, max_failures {spec.max_failures}); its last error: "
                        f"{last_line(failure.error)}; last committed checkpoint: step {last} in {where} "
                        "(the error's full text is StreamRunError.error)",
                        failure.rank, failure.error, last,
                    ) from None
                driver.recover(failure)
                restarts += 1
                why = last_line(failure.error)
                driver.emit({"event": "restart", "rank": failure.rank, "error": failure.error, "restarts": restarts})
                print(f"[restart] rank {failure.rank} failed ({why}); rolling every worker back "
                      f"(restart {restarts})", flush=True)
    finally:
        driver.close()
    ledger, offsets = Ledger(), {}
    for summary in summaries:
        ledger = ledger.merge(Ledger.from_json(summary["ledger"]))
        offsets.update(summary["offsets"])
    first = summaries[0]
    return RunResult(
        "async", first["reason"], first["steps"], first["checkpoint_step"],
        tuple(worker_directory(spec, r) for r in range(spec.num_workers)), ledger, dict(sorted(offsets.items())),
        restarts, mean_params([s["params"] for s in summaries]), clock() - started,
    )


def run(
    spec: WorkerSpec,
    *,
    on_event: Callable[[dict], None] | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Runs a streaming job (module docstring).

    Args:
      spec: the run.
      on_event: sync and async modes: receives the driver's events, ``{"event":
        "started", "restarts", "pids", ...}``, ``{"event": "round", "steps", "stop",
        "workers"}`` (async, before the mean is pushed) and ``{"event": "restart",
        "rank", "error", "restarts"}``.
      on_metrics: ``on_metrics(rank, dict)`` for each worker's progress dicts and events
        (``run_worker``'s, plus the driver's restarts); default: rank 0's progress lines
        and every event printed.
      should_stop: true ends the run cleanly, with a final checkpoint (in every rank):
        local mode asks before every step, async mode at each averaging round, sync mode
        continuously (every worker then stops at the next collective check, every
        ``log_every`` steps).
      clock: seconds, for ``elapsed_s``.

    Returns:
      A :class:`RunResult`.

    Raises:
      StreamRunError: a worker failed after ``max_failures`` rollbacks / group restarts.
      ValueError, ConnectionError: a bad spec; an unreachable Ray address.
    """
    if not isinstance(spec, WorkerSpec):
        raise TypeError(f"run: argument 'spec' must be a WorkerSpec; got {type(spec).__name__}")
    on_metrics = on_metrics or _default_metrics
    if spec.mode == "local":
        return _run_local(spec, should_stop, on_metrics, clock)
    started = connect(spec.address, num_cpus=spec.num_cpus)
    handle = None
    try:
        handle, options = reserve_tpu_slice(spec)
        stop = should_stop or (lambda: False)
        if spec.mode == "sync":
            from disttrace.streaming.ray._sync import run_sync

            return run_sync(spec, options, on_event, stop, on_metrics, clock)
        return _run_async(spec, on_event, stop, on_metrics, options, clock)
    finally:
        if handle is not None:
            handle.shutdown()
        disconnect(started)
