"""The sync mode's driver: one ``jax.distributed`` job across W actors, restarted as a group.

Why a group restart: when one member of a ``jax.distributed`` CPU job dies, the others
cannot go on — their next collective fails (``Gloo all-reduce failed``) or blocks until
the coordination service aborts them — and a member that is alive but stuck hangs the
others without any error. So any failure ends every member: the driver kills all actors,
waits until they are gone (the checkpoint directory's writer lock is then free), starts
a new group that joins a new coordinator port, and the new group resumes from the newest
committed checkpoint. A deterministic step then makes the final parameters bitwise those
of a run without failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray

from disttrace.streaming import Ledger
from disttrace.streaming.ray._actor import StreamWorker
from disttrace.streaming.ray._result import Failure, RunResult, StreamRunError, last_line
from disttrace.streaming.ray._spec import WorkerSpec

__all__ = ["run_sync"]

#: seconds a killed actor has to be reported dead before the driver gives up waiting
_KILL_WAIT_S = 60.0


class _Group:
    """One sync job: W actors that joined one ``jax.distributed`` job."""

    def __init__(self, spec: WorkerSpec, options: list[dict]):
        self.spec = spec
        self.workers = [ray.remote(StreamWorker).options(**o).remote(spec, r) for r, o in enumerate(options)]

    def get(self, rank: int, ref, timeout: float | None = None):
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise Failure(rank, f"no answer within {timeout} s", dead=True) from None
        except ray.exceptions.RayActorError as e:
            raise Failure(rank, f"its actor died ({type(e).__name__}: {e})".strip(), dead=True) from None
        except ray.exceptions.RayError as e:
            raise Failure(rank, f"{type(e).__name__}: {e}", dead=False) from None

    def join(self) -> list[int]:
        """Joins every actor to one job (concurrently: ``initialize`` blocks until all
        arrive); returns their pids."""
        timeout = self.spec.stall_timeout_s
        coordinator = self.get(0, self.workers[0].coordinator_address.remote(), timeout)
        refs = [w.join.remote(coordinator) for w in self.workers]
        for r, ref in enumerate(refs):
            self.get(r, ref, timeout)
        return [self.get(r, w.pid.remote(), timeout) for r, w in enumerate(self.workers)]

    def kill(self) -> None:
        """Kills every actor and waits until Ray reports each one dead."""
        for w in self.workers:
            ray.kill(w, no_restart=True)
        deadline = time.monotonic() + _KILL_WAIT_S
        for w in self.workers:
            while time.monotonic() < deadline:
                try:
                    ray.get(w.pid.remote(), timeout=5)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    break
                except ray.exceptions.RayError:
                    break
                time.sleep(0.2)


def _attempt(group: _Group, spec: WorkerSpec, restarts: int, emit, on_metrics, should_stop) -> dict[int, dict]:
    pids = group.join()
    for r, w in enumerate(group.workers):
        group.get(r, w.start.remote(restarts))
    emit({"event": "started", "restarts": restarts, "pids": pids})
    pending = {r: w.next_event.remote() for r, w in enumerate(group.workers)}
    summaries: dict[int, dict] = {}
    stop_sent, last_report = False, time.monotonic()
    while pending:
        if not stop_sent and should_stop():
            for w in group.workers:
                w.request_stop.remote()
            stop_sent = True
        ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=0.5)
        if not ready:
            if time.monotonic() - last_report > spec.stall_timeout_s:
                late = sorted(pending)
                raise Failure(late[0], f"no report from ranks {late} for {spec.stall_timeout_s} s (stalled)", dead=True)
            continue
        last_report = time.monotonic()
        rank = next(r for r, ref in pending.items() if ref == ready[0])
        event = group.get(rank, ready[0])
        if event[0] == "metrics":
            metrics = event[1]
            if "event" not in metrics:  # every worker serves as many partitions, in lockstep: the job's totals
                w = spec.num_workers
                metrics = {**metrics, "records": metrics["records"] * w, "records_per_s": metrics["records_per_s"] * w}
            on_metrics(rank, metrics)
            pending[rank] = group.workers[rank].next_event.remote()
        elif event[0] == "done":
            summaries[rank] = event[1]
            del pending[rank]
        else:
            raise Failure(rank, event[1], dead=False)
    return summaries


def run_sync(spec: WorkerSpec, options: list[dict], on_event, should_stop: Callable[[], bool], on_metrics,
             clock: Callable[[], float]) -> RunResult:
    """Runs ``spec`` in sync mode (module docstring); ``options`` are each rank's actor ``.options``."""
    if spec.checkpoint_dir is None:
        raise ValueError("run: sync mode needs 'checkpoint_dir' (a group restart resumes from it)")

    def emit(event: dict) -> None:
        if on_event is not None:
            on_event(event)

    started = clock()
    restarts, failures = 0, 0
    while True:
        group = _Group(spec, options)
        try:
            summaries = _attempt(group, spec, restarts, emit, on_metrics, should_stop)
            group.kill()
            break
        except Failure as failure:
            group.kill()
            failures += 1
            if failures > spec.max_failures:
                last = _committed_step(spec)
                raise StreamRunError(
                    f"sync run failed: worker rank {failure.rank} failed and the run had no group restart left "
                    f"({failures} failures, max_failures {spec.max_failures}); its last error: "
                    f"{last_line(failure.error)}; last committed checkpoint: step {last} in {spec.checkpoint_dir} "
                    "(the error's full text is StreamRunError.error)",
                    failure.rank, failure.error, last,
                ) from None
            restarts += 1
            emit({"event": "restart", "rank": failure.rank, "error": failure.error, "restarts": restarts})
            on_metrics(failure.rank, {"event": "restart", "rank": failure.rank, "restarts": restarts,
                                      "error": last_line(failure.error)})
        except BaseException:
            group.kill()
            raise
    ledger, offsets = Ledger(), {}
    for r in sorted(summaries):
        ledger = ledger.merge(Ledger.from_json(summaries[r]["ledger"]))
        offsets.update(summaries[r]["offsets"])
    first = summaries[0]
    return RunResult(
        "sync", first["reason"], first["steps"], first["checkpoint_step"], (spec.checkpoint_dir,), ledger,
        dict(sorted(offsets.items())), restarts, first["params"], clock() - started,
    )


def _committed_step(spec: WorkerSpec) -> int | None:
    from disttrace.checkpoint import Checkpointer

    with Checkpointer(spec.checkpoint_dir, read_only=True) as reader:
        return reader.latest_step()
