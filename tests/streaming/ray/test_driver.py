"""The Ray shell of the streaming runs, on one local cluster (``conftest.ray_cluster``).

- local mode trains, commits the exact ledger with its checkpoint and resumes there;
- async mode with 2 workers on a ``CountingStream``: the merged ledger is exactly-once
  per partition, every rank's final checkpoint holds the same averaged parameters, and
  they equal an in-process replay of the same averaging (``rtol=1e-6``);
- a worker's process SIGKILLed after a committed round (or before any): every worker rolls
  back to the common step (or the start), the run finishes with 1 restart, an exact ledger
  and the same parameters; likewise a worker stopped by SIGSTOP, after ``stall_timeout_s``;
- a clean stop at a round checkpoints every rank, and a rerun resumes to an exact ledger;
- a worker that keeps failing ends the run with an error naming it.

Unit tests (no cluster): the spec's and the address's errors, the actors' options.
"""

import os
import signal
import socket
import time

import jax
import numpy as np
import pytest

from disttrace.checkpoint import Checkpointer
from disttrace.streaming import Ledger
from disttrace.streaming.ray import StreamRunError, WorkerSpec, connect, run, worker_directory, worker_options
from disttrace.streaming.ray._result import mean_params as _mean
from disttrace.streaming.ray._spec import build_source, build_trainer

# 2 workers × 2 partitions, 2 rows per partition: 60 steps; rounds every 10, checkpoints every 20
ASYNC = {"mode": "async", "num_workers": 2, "num_partitions": 4, "batch_size": 8, "n_records": 120,
         "average_every": 10, "checkpoint_every": 20, "log_every": 30, "stall_timeout_s": 120.0}
STEPS = 60


def _close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


def _replay(spec: WorkerSpec):
    """The async run's arithmetic in this process: W trainers on their partitions, their
    parameters averaged in rank order every K steps."""
    trainers = [build_trainer(spec) for _ in range(spec.num_workers)]
    sources = [build_source(spec, r) for r in range(spec.num_workers)]
    for step in range(1, STEPS + 1):
        for trainer, source in zip(trainers, sources):
            batch = source.next()
            trainer.step(batch.x, batch.y)
        if step % spec.average_every == 0:
            mean = _mean([t.params_host() for t in trainers])
            for t in trainers:
                t.set_params(mean)
    return trainers[0].params_host()


def _rank_params(spec: WorkerSpec, rank: int, step: int):
    trainer = build_trainer(spec)
    with Checkpointer(worker_directory(spec, rank), read_only=True) as reader:
        state, meta = reader.restore(trainer.rules, step)
    return jax.tree.map(np.asarray, state.params), meta


@pytest.fixture(scope="module")
def replayed():
    return _replay(WorkerSpec(**ASYNC, checkpoint_dir="unused"))


# ---- unit tests (no cluster) ------------------------------------------------------------------
def test_spec_errors_name_the_values():
    with pytest.raises(ValueError, match=r"'checkpoint_every' \(30\) must be a multiple of average_every \(20\)"):
        WorkerSpec(mode="async", num_workers=2, average_every=20, checkpoint_every=30)
    with pytest.raises(ValueError, match=r"'num_partitions' \(3\) must be a multiple of num_workers \(2\)"):
        WorkerSpec(mode="async", num_workers=2, num_partitions=3)
    with pytest.raises(ValueError, match=r"'batch_size' \(6\) must be divisible by the global device count "
                                         r"\(num_workers \* devices_per_worker = 2 \* 2 = 4\)"):
        WorkerSpec(mode="sync", num_workers=2, batch_size=6, devices_per_worker=2)
    with pytest.raises(ValueError, match=r"'mode' must be one of .*got 'fast'"):
        WorkerSpec(mode="fast")
    with pytest.raises(ValueError, match=r"mode 'local' runs one worker; argument 'num_workers' must be 1, got 2"):
        WorkerSpec(mode="local", num_workers=2)
    assert WorkerSpec(mode="async", num_workers=2, num_partitions=4).partitions_of(1) == (1, 3)


def test_worker_options_override_the_drivers_devices():
    options = worker_options(WorkerSpec(mode="async", num_workers=2, resources_per_worker={"num_cpus": 0.5}))
    assert options["num_cpus"] == 0.5 and options["max_concurrency"] >= 2
    assert options["runtime_env"]["env_vars"] == {"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                                                  "JAX_PLATFORMS": "cpu"}


def test_an_unreachable_address_fails_fast_naming_it():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"Ray address '127.0.0.1:{port}' is not reachable"):
        connect(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="must be 'host:port'"):
        connect("nowhere")


# ---- on the cluster -----------------------------------------------------------------------------
@pytest.mark.ray
def test_local_mode_trains_commits_and_resumes(tmp_path):
    spec = WorkerSpec(mode="local", batch_size=4, num_partitions=2, n_records=60, checkpoint_every=10,
                      checkpoint_dir=str(tmp_path), log_every=None)
    before = build_trainer(spec).params_host()
    result = run(spec)
    assert result.reason == "end" and result.steps == 30 and result.checkpoint_step == 30 and result.restarts == 0
    assert result.ledger == Ledger.exactly_once([0, 1], 60) and result.offsets == {0: 30, 1: 30}
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(before)))
    with Checkpointer(tmp_path, read_only=True) as reader:
        assert reader.steps()[-1] == 30
        assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == result.ledger
    again = run(spec)  # resumes at the end: nothing more to read
    assert again.steps == 30 and again.ledger == result.ledger
    _close(again.params, result.params)


@pytest.mark.ray
def test_async_two_workers_exactly_once_and_averaged(ray_cluster, tmp_path, replayed):
    spec = WorkerSpec(**ASYNC, checkpoint_dir=str(tmp_path))
    events = []
    result = run(spec, on_event=events.append)
    assert result.mode == "async" and result.reason == "end" and result.steps == STEPS and result.restarts == 0
    assert result.ledger == Ledger.exactly_once(range(4), 120)
    assert result.offsets == {p: STEPS for p in range(4)} and result.checkpoint_step == STEPS
    assert [e["steps"] for e in events if e["event"] == "round"] == list(range(10, STEPS + 1, 10))
    final = [_rank_params(spec, r, STEPS) for r in range(2)]
    for params, meta in final:  # every rank's checkpoint holds the same mean
        _close(params, final[0][0])
        assert meta["stream"]["steps"] == STEPS
    assert Ledger.from_json(final[1][1]["stream"]["ledger"]) == Ledger.exactly_once([1, 3], 120)
    for r in range(2):
        with Checkpointer(worker_directory(spec, r), read_only=True) as reader:
            assert reader.steps() == [20, 40, 60]  # checkpoints on rounds only
    _close(result.params, replayed)


@pytest.mark.ray
@pytest.mark.parametrize(("kill_at", "resume_at"), [(30, 20), (10, None)], ids=["after-commit", "before-any"])
def test_a_killed_worker_rolls_every_worker_back(ray_cluster, tmp_path, replayed, kill_at, resume_at):
    spec = WorkerSpec(**ASYNC, checkpoint_dir=str(tmp_path))
    events, killed = [], []

    def committed(step):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            have = []
            for r in range(2):
                with Checkpointer(worker_directory(spec, r), read_only=True) as reader:
                    have.append(step in reader.steps())
            if all(have):
                return True
            time.sleep(0.2)
        return False

    def on_event(event):
        events.append(event)
        # at round kill_at of the first attempt, once step resume_at is committed in both ranks
        if event["event"] == "round" and event["steps"] == kill_at and not killed:
            assert resume_at is None or committed(resume_at), f"step {resume_at} was not committed in both ranks"
            pid = next(e for e in events if e["event"] == "started")["pids"][1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = run(spec, on_event=on_event)
    assert killed and result.restarts == 1 and result.reason == "end" and result.steps == STEPS
    restarts = [e for e in events if e["event"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["rank"] == 1
    starts = [e for e in events if e["event"] == "started"]
    # every worker back to the common step (before any: to the start, rank 0 with a fresh state in place)
    assert [s["from_step"] for s in starts] == [None, resume_at]
    assert starts[1]["pids"][1] != killed[0] and starts[1]["pids"][0] == starts[0]["pids"][0]  # rank 0 in place
    assert result.ledger == Ledger.exactly_once(range(4), 120)
    assert result.offsets == {p: STEPS for p in range(4)}
    _close(result.params, replayed)


@pytest.mark.ray
def test_a_worker_that_keeps_failing_ends_the_run_naming_it(ray_cluster, tmp_path):
    # a trainer factory that cannot be loaded: every actor fails in __init__
    spec = WorkerSpec(**{**ASYNC, "max_failures": 1}, checkpoint_dir=str(tmp_path),
                      trainer_factory="disttrace.streaming.ray._spec:no_such_factory")
    with pytest.raises(StreamRunError, match=r"worker rank 0 failed .*\(2 failures, max_failures 1\); its last error: "
                                             r"ValueError: .*'trainer_factory' .*no_such_factory.* cannot be loaded.*; "
                                             r"last committed checkpoint: step None in .*rank-0, .*rank-1") as info:
        run(spec)
    assert info.value.rank == 0 and info.value.checkpoint_step is None and "Traceback" not in str(info.value)


@pytest.mark.ray
def test_a_clean_stop_checkpoints_every_rank_and_a_rerun_resumes(ray_cluster, tmp_path, replayed):
    spec = WorkerSpec(**ASYNC, checkpoint_dir=str(tmp_path))
    rounds = []

    def should_stop():  # asked at each round: stop at round 30 (off the checkpoint interval)
        rounds.append(1)
        return len(rounds) >= 3

    stopped = run(spec, should_stop=should_stop)
    assert stopped.reason == "stopped" and stopped.steps == 30 and stopped.checkpoint_step == 30
    assert stopped.ledger == Ledger.exactly_once(range(4), 30 * 2) and stopped.restarts == 0
    for r in range(2):
        with Checkpointer(worker_directory(spec, r), read_only=True) as reader:
            assert reader.steps() == [20, 30]  # the final checkpoint of the stop, in every rank
    resumed = run(spec)
    assert resumed.reason == "end" and resumed.steps == STEPS and resumed.restarts == 0
    assert resumed.ledger == Ledger.exactly_once(range(4), 120)
    _close(resumed.params, replayed)


@pytest.mark.ray
def test_a_stuck_worker_is_replaced_after_the_stall_timeout(ray_cluster, tmp_path, replayed):
    # SIGSTOP: alive to Ray, silent to the driver (a member stuck in a collective looks like this)
    spec = WorkerSpec(**{**ASYNC, "stall_timeout_s": 8.0}, checkpoint_dir=str(tmp_path))
    events, stopped = [], []

    def on_event(event):
        events.append(event)
        if event["event"] == "round" and event["steps"] == 30 and not stopped:
            pid = next(e for e in events if e["event"] == "started")["pids"][1]
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        result = run(spec, on_event=on_event)
    finally:
        for pid in stopped:  # in case the driver did not get rid of it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    restarts = [e for e in events if e["event"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["rank"] == 1 and "no report for 8.0 s" in restarts[0]["error"]
    assert result.restarts == 1 and result.reason == "end" and result.steps == STEPS
    # step 20 of the stopped rank may not have been committed (its commit thread is stopped too): then
    # every worker starts again from scratch
    assert [s["from_step"] for s in events if s["event"] == "started"] in ([None, 20], [None, None])
    assert result.ledger == Ledger.exactly_once(range(4), 120)
    _close(result.params, replayed)
