"""``python -m launch.stream``: local mode in this process (no Ray), a bad argument, and
async mode as a real subprocess that starts (and shuts down) its own local cluster."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from disttrace.checkpoint import Checkpointer
from disttrace.streaming import Ledger
from launch.stream import main

ROOT = Path(__file__).resolve().parents[3]


def test_local_mode_runs_and_resumes(tmp_path, capsys):
    args = ["--mode", "local", "--partitions", "2", "--batch-size", "4", "--records", "40",
            "--checkpoint-every", "5", "--checkpoint-dir", str(tmp_path), "--log-every", "5"]
    assert main([*args, "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "done: mode local  reason max_steps  steps 10  records 40  checkpoint 10  restarts 0" in out
    assert main(args) == 0  # resumes at 10, runs to the end of the 20-step stream
    out = capsys.readouterr().out
    assert "[resume] step 10" in out and "reason end  steps 20  records 80  checkpoint 20" in out
    with Checkpointer(tmp_path, read_only=True) as reader:
        assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([0, 1], 40)


def test_bad_arguments_exit_2_naming_them(capsys):
    assert main(["--mode", "async", "--workers", "2", "--average-every", "20", "--checkpoint-every", "30"]) == 2
    assert "'checkpoint_every' (30) must be a multiple of average_every (20)" in capsys.readouterr().err


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(JAX_PLATFORMS="cpu", RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0")
    return env


@pytest.mark.ray
def test_async_mode_on_its_own_local_cluster(tmp_path):
    env = _env()
    cmd = [sys.executable, "-m", "launch.stream", "--mode", "async", "--workers", "2", "--batch-size", "4",
           "--records", "40", "--steps", "20", "--average-every", "10", "--checkpoint-every", "10",
           "--checkpoint-dir", str(tmp_path), "--num-cpus", "2", "--log-every", "10"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: mode async  reason max_steps  steps 20  records 80  checkpoint 20  restarts 0" in out.stdout
    for rank in range(2):
        with Checkpointer(tmp_path / f"rank-{rank}", read_only=True) as reader:
            assert reader.steps() == [10, 20]
            assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([rank], 40)


@pytest.mark.ray
def test_sigterm_stops_at_a_round_with_a_final_checkpoint(tmp_path):
    # a stream of 20,000 steps, far longer than the test: it ends only by the signal
    cmd = [sys.executable, "-m", "launch.stream", "--mode", "async", "--workers", "2", "--batch-size", "4",
           "--records", "40000", "--average-every", "10", "--checkpoint-every", "50", "--checkpoint-dir",
           str(tmp_path), "--num-cpus", "2", "--log-every", "50"]
    log = open(tmp_path / "stderr.log", "w")  # a file, not a pipe: a full pipe would stall the driver
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    try:
        for line in proc.stdout:  # the driver prints rank 0's progress lines (the workers report to it)
            if re.match(r"step \d+  records", line):
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    done = re.search(r"done: mode async  reason stopped  steps (\d+)  records (\d+)  checkpoint (\d+)  restarts 0",
                     rest)
    assert done, rest[-3000:]
    steps, records, checkpoint = map(int, done.groups())
    assert steps % 10 == 0 and steps < 20000 and checkpoint == steps and records == 4 * steps
    for rank in range(2):
        with Checkpointer(tmp_path / f"rank-{rank}", read_only=True) as reader:
            assert reader.steps()[-1] == steps
            assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([rank], 2 * steps)
