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

- ``sync`` (one ``jax.distributed`` job across actors): not built.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import ray

from disttrace.streaming import Ledger
from disttrace.streaming.ray._actor import StreamWorker
from disttrace.streaming.ray._address import connect, disconnect
from disttrace.streaming.ray._spec import WorkerSpec, build_source, build_trainer, worker_directory

__all__ = ["RunResult", "StreamRunError", "run", "worker_options"]


class StreamRunError(RuntimeError):
    """A streaming run gave up: a worker kept failing beyond ``max_failures``.

    Attributes:
      rank: the worker that failed last.
      error: its last error (text).
      checkpoint_step: the last step committed in every rank's directory (or ``None``).
    """

    def __init__(self, message: str, rank: int, error: str, checkpoint_step: int | None):
        super().__init__(message)
        self.rank, self.error, self.checkpoint_step = rank, error, checkpoint_step


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`run` did.

    Attributes:
      mode: ``"local"`` or ``"async"``.
      reason: ``"end"``, ``"max_steps"`` or ``"stopped"``.
      steps: stream steps each worker consumed in total (across restarts).
      checkpoint_step: the final committed checkpoint step (``None`` without checkpoints).
      checkpoint_dirs: the checkpoint directory of each rank.
      ledger: the merged ledger of every partition at the final checkpoint.
      offsets: ``{partition: offset}`` of every partition there.
      restarts: rollbacks (group restarts) the run went through.
      params: the final parameters (host numpy): the average of the workers' in async
        mode (equal to each worker's when the run ends on an averaging round).
      elapsed_s: seconds.
    """

    mode: str
    reason: str
    steps: int
    checkpoint_step: int | None
    checkpoint_dirs: tuple[str | None, ...]
    ledger: Ledger
    offsets: dict
    restarts: int
    params: Any
    elapsed_s: float


def worker_options(spec: WorkerSpec) -> dict:
    """The ``.options(...)`` of each worker actor: ``resources_per_worker`` (default one
    CPU), a threaded actor, and the environment of a CPU worker. ``XLA_FLAGS`` is always
    overridden: actors inherit the driver's environment, and a test driver's 8 fake devices
    would be wrong (and ``jax.distributed`` deadlocks with 2+ CPU devices per process)."""
    options = dict(spec.resources_per_worker or {"num_cpus": 1})
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={spec.devices_per_worker}", "JAX_PLATFORMS": "cpu"}
    options.update(max_concurrency=4, max_restarts=0, runtime_env={"env_vars": env})
    return options


def _mean(trees: list) -> Any:
    """The mean of parameter trees, summed in the order given (rank order: deterministic)."""
    def mean(*leaves):
        total = np.array(leaves[0], copy=True)
        for leaf in leaves[1:]:
            total = total + leaf
        return (total / len(leaves)).astype(leaves[0].dtype)

    return jax.tree.map(mean, *trees)


def _run_local(spec: WorkerSpec, should_stop, clock: Callable[[], float]) -> RunResult:
    from disttrace.checkpoint import Checkpointer
    from disttrace.streaming import run_worker

    started = clock()
    trainer, source = build_trainer(spec), build_source(spec, 0)
    directory = worker_directory(spec, 0)
    ckpt = None if directory is None else Checkpointer(directory, max_to_keep=spec.max_to_keep)
    try:
        result = run_worker(trainer, source, ckpt, checkpoint_every=spec.checkpoint_every, max_steps=spec.max_steps,
                            log_every=spec.log_every, should_stop=should_stop)
    finally:
        if ckpt is not None:
            ckpt.close()
        source.close()
    return RunResult("local", result.reason, result.steps, result.checkpoint_step, (directory,), result.ledger,
                     result.offsets, 0, trainer.params_host(), clock() - started)


class _Failure(Exception):
    def __init__(self, rank: int, error: str, dead: bool):
        super().__init__(f"rank {rank}: {error}")
        self.rank, self.error, self.dead = rank, error, dead


class _Async:
    """The async driver's state: the actors, and one attempt after another."""

    def __init__(self, spec: WorkerSpec, on_event: Callable[[dict], None] | None, should_stop: Callable[[], bool]):
        self.spec, self.on_event, self.should_stop = spec, on_event, should_stop
        self.actor = ray.remote(StreamWorker).options(**worker_options(spec))
        self.workers = [self.actor.remote(spec, r) for r in range(spec.num_workers)]

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
            raise _Failure(rank, f"its actor died ({type(e).__name__}: {e})".strip(), dead=True) from None
        except ray.exceptions.RayError as e:
            raise _Failure(rank, f"{type(e).__name__}: {e}", dead=False) from None

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
                    raise _Failure(late[0], f"no report for {spec.stall_timeout_s} s (ranks {late} stalled)", dead=True)
                rank = next(r for r, ref in pending.items() if ref == ready[0])
                del pending[rank]
                event = self._get(rank, ready[0])
                if event[0] in ("error", "aborted"):
                    raise _Failure(rank, event[1], dead=False)
                got[rank] = event
            kinds = {e[0] for e in got.values()}
            if kinds == {"done"}:
                return common, [got[r][1] for r in range(spec.num_workers)]
            at = {e[1] for e in got.values() if e[0] == "round"}
            if kinds != {"round"} or len(at) != 1:
                state = {r: (e[0], e[1] if e[0] == "round" else e[1]["steps"]) for r, e in sorted(got.items())}
                raise _Failure(min(got), f"workers out of step: {state}", dead=False)
            steps = at.pop()
            mean = ray.put(_mean([got[r][2] for r in range(spec.num_workers)]))
            stop = bool(self.should_stop())
            self.emit({"event": "round", "steps": steps, "stop": stop, "workers": list(self.workers)})
            for rank, w in enumerate(self.workers):
                w.push_mean.remote(steps, mean, stop)
                pending[rank] = w.next_event.remote()

    def recover(self, failure: _Failure) -> None:
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
        self.workers[rank] = self.actor.remote(self.spec, rank)

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)


def _last_line(error: str) -> str:
    """The last line of an error's text (a traceback's is the exception itself)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _disk_common_step(spec: WorkerSpec) -> int | None:
    """The newest step committed in every rank's directory, read by the driver."""
    from disttrace.checkpoint import Checkpointer

    steps = []
    for r in range(spec.num_workers):
        with Checkpointer(worker_directory(spec, r), read_only=True) as reader:
            steps.append(set(reader.steps()))
    common = set.intersection(*steps)
    return max(common) if common else None


def _run_async(spec: WorkerSpec, on_event, should_stop, clock) -> RunResult:
    if spec.checkpoint_dir is None:
        raise ValueError("run: async mode needs 'checkpoint_dir' (rollbacks restore every rank from it)")
    started = clock()
    driver = _Async(spec, on_event, should_stop)
    restarts, failures = 0, 0
    try:
        while True:
            try:
                _, summaries = driver.attempt(restarts)
                break
            except _Failure as failure:
                failures += 1
                if failures > spec.max_failures:
                    driver.close()
                    where = ", ".join(worker_directory(spec, r) for r in range(spec.num_workers))
                    last = _disk_common_step(spec)
                    raise StreamRunError(
                        f"async run failed: worker rank {failure.rank} failed and the run had no rollback left "
                        f"({failures} failures, max_failures {spec.max_failures}); its last error: "
                        f"{_last_line(failure.error)}; last committed checkpoint: step {last} in {where} "
                        "(the error's full text is StreamRunError.error)",
                        failure.rank, failure.error, last,
                    ) from None
                driver.recover(failure)
                restarts += 1
                last_line = _last_line(failure.error)
                driver.emit({"event": "restart", "rank": failure.rank, "error": failure.error, "restarts": restarts})
                print(f"[restart] rank {failure.rank} failed ({last_line}); rolling every worker back "
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
        restarts, _mean([s["params"] for s in summaries]), clock() - started,
    )


def run(
    spec: WorkerSpec,
    *,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Runs a streaming job (module docstring).

    Args:
      spec: the run.
      on_event: async mode: receives the driver's events, ``{"event": "started",
        "from_step", "restarts", "pids"}``, ``{"event": "round", "steps", "stop",
        "workers"}`` (before the mean is pushed) and ``{"event": "restart", "rank",
        "error", "restarts"}``.
      should_stop: true ends the run cleanly, with a final checkpoint (in every rank):
        local mode asks before every step, async mode at each averaging round.
      clock: seconds, for ``elapsed_s``.

    Returns:
      A :class:`RunResult`.

    Raises:
      StreamRunError: a worker failed after ``max_failures`` rollbacks.
      ValueError, ConnectionError: a bad spec; an unreachable Ray address.
    """
    if not isinstance(spec, WorkerSpec):
        raise TypeError(f"run: argument 'spec' must be a WorkerSpec; got {type(spec).__name__}")
    if spec.mode == "local":
        return _run_local(spec, should_stop, clock)
    started = connect(spec.address, num_cpus=spec.num_cpus)
    try:
        return _run_async(spec, on_event, should_stop or (lambda: False), clock)
    finally:
        disconnect(started)
