"""Sync mode: W Ray actors forming one ``jax.distributed`` job (one device each), on the
module's local cluster (``conftest.ray_cluster``).

- a failure-free sync run on a ``CountingStream`` gives an exactly-once ledger and the
  parameters of the same stream run in one process on a 2-device mesh (``rtol=1e-6``);
- it learns the regression in 300 steps: the mean loss of the last 20 steps is below
  half that of the first 20 (measured in one process: 0.014 vs 0.59);
- worker 1's process SIGKILLed after its first committed checkpoint: the group restarts
  once, the ledger is exact, and the final parameters are bitwise those of the
  failure-free run.
"""

import os
import signal

import jax
import numpy as np
import pytest

import disttrace.distributed as dd
from disttrace.checkpoint import Checkpointer
from disttrace.streaming import CountingStream, Ledger, run_worker
from disttrace.streaming.ray import WorkerSpec, run
from disttrace.streaming.ray._spec import counting_trainer

pytestmark = pytest.mark.ray

# 2 workers × 1 partition × 8 rows: 300 steps; checkpoints every 60
SYNC = {"mode": "sync", "num_workers": 2, "num_partitions": 2, "batch_size": 16, "n_records": 2400,
        "checkpoint_every": 60, "log_every": 20, "stall_timeout_s": 180.0}
STEPS = 300


def _same(got, want, **tol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        if tol:
            np.testing.assert_allclose(a, b, **tol)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def clean_run(ray_cluster, tmp_path_factory):
    spec = WorkerSpec(**SYNC, checkpoint_dir=str(tmp_path_factory.mktemp("sync-clean")))
    losses = []
    result = run(spec, on_metrics=lambda rank, m: losses.append(m["loss"]) if rank == 0 and "loss" in m else None)
    return spec, result, losses


def test_sync_is_exactly_once_and_equals_one_process_on_a_two_device_mesh(clean_run):
    spec, result, _ = clean_run
    assert result.mode == "sync" and result.reason == "end" and result.steps == STEPS and result.restarts == 0
    assert result.ledger == Ledger.exactly_once([0, 1], 2400) and result.offsets == {0: STEPS, 1: STEPS}
    with Checkpointer(spec.checkpoint_dir, read_only=True) as reader:
        meta = reader.meta()["stream"]
        assert reader.latest_step() == STEPS
        assert Ledger.from_json(meta["ledger"]) == result.ledger  # gathered from both processes
    # the same stream, in this process, on a 2-device mesh: rows of partition 0, then 1
    local = counting_trainer(spec, spec.batch_size, dd.make_mesh(data=2, model=1, devices=jax.devices()[:2]))
    run_worker(local, CountingStream(2400, 16, None, 2, seed=spec.seed), None, checkpoint_every=None, log_every=None)
    _same(result.params, local.params_host(), rtol=1e-6, atol=0)


def test_sync_learns_the_regression(clean_run):
    _, _, losses = clean_run
    assert len(losses) == STEPS // 20
    assert losses[-1] < 0.5 * losses[0], losses  # means of the first and the last 20 steps


def test_a_killed_worker_restarts_the_group_to_the_same_bits(clean_run, tmp_path):
    spec = WorkerSpec(**SYNC, checkpoint_dir=str(tmp_path))
    events, killed = [], []
    pids = {}

    def on_event(event):
        events.append(event)
        if event["event"] == "started":
            pids.update(enumerate(event["pids"]))

    def on_metrics(rank, metrics):
        # after worker 1's first committed checkpoint (step 60), before the end: kill its process
        if rank == 1 and metrics.get("event") == "checkpoint" and not killed and metrics["steps"] == 120:
            os.kill(pids[1], signal.SIGKILL)
            killed.append(metrics["steps"])

    result = run(spec, on_event=on_event, on_metrics=on_metrics)
    assert killed == [120]
    assert result.restarts == 1 and [e["event"] for e in events].count("restart") == 1
    assert result.reason == "end" and result.steps == STEPS
    assert result.ledger == Ledger.exactly_once([0, 1], 2400)
    _same(result.params, clean_run[1].params)  # bitwise
