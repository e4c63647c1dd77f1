"""The stream job of ``launch.train`` on Ray: async learning on the module's cluster, and a
graceful stop of the command as a subprocess (which starts its own local cluster).

- async, 2 workers, on the short evidence-accumulation stream of
  ``configs/evidence_stream_async.yaml`` (``n_cues: 3``, ``delay: 5``: T = 45; 64 ALIF
  neurons, global batch 32, one update per trial, 60 trials = 2,700 steps): held-out
  accuracy >= 0.80 at the end and >= 0.15 above its value at step 0 (measured here: 0.93
  from 0.5);
- SIGTERM to a sync run on a finite counting stream: exit 0 within 30 s with a final
  checkpoint at the last logged step; the same command again resumes there and ends the
  stream with an exactly-once ledger.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disttrace import config
from disttrace.checkpoint import Checkpointer
from disttrace.streaming import Ledger

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("optax_promotion")]


def test_async_learns_evidence_accumulation(ray_cluster, tmp_path, capsys):
    from disttrace.jobs._stream import config_trainer, held_out_accuracy, run_stream, worker_spec

    cfg = config.load(ROOT / "configs" / "evidence_stream_async.yaml", [
        f"checkpoint.directory={tmp_path / 'ckpt'}", f"stream.metrics_file={tmp_path / 'metrics.jsonl'}",
    ])
    spec = worker_spec(cfg)
    before = held_out_accuracy(cfg, spec, config_trainer(spec, cfg.batch_size).params_host())
    result, accuracy = run_stream(cfg)
    assert result.reason == "max_steps" and result.steps == 2700 and result.restarts == 0
    assert result.ledger.total().count == 2700 * 32
    assert accuracy >= 0.80 and accuracy >= before + 0.15, (before, accuracy)
    out = capsys.readouterr().out
    assert re.search(r"step 2700  records 86400  loss \S+  accuracy \S+  records/s \d+  restarts 0", out), out


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(JAX_PLATFORMS="cpu", RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("XLA_FLAGS", None)
    return env


def test_sigterm_stops_a_sync_run_with_a_final_checkpoint_and_a_rerun_resumes(tmp_path):
    # 400 steps of a counting stream (2 partitions of 3,200 records, 8 rows each per step) over 2 workers
    cmd = [sys.executable, "-m", "launch.train", "--set", "stream.mode=sync", "--set", "stream.num_workers=2",
           "--set", "task.name=counting", "--set", "task.n_records=3200", "--set", "loss=mse",
           "--set", "batch_size=16", "--set", "steps=100000", "--set", "log_every=20", "--set", "checkpoint.every=100",
           "--set", "model.n_rec=8", "--set", "stream.num_cpus=2", "--set", f"checkpoint.directory={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            lines.append(line)
            if re.match(r"step \d+  records", line):
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            pytest.fail("no progress line:\n" + "".join(lines))
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
        assert proc.returncode == 0, "".join(lines)[-4000:]
        assert time.monotonic() - sent < 30, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    logged = [int(s) for s in re.findall(r"^step (\d+)  records", out, flags=re.M)]
    stopped = re.search(r"done: mode sync  reason stopped  steps (\d+)", out)
    assert stopped, out[-3000:]
    assert int(stopped.group(1)) == logged[-1]
    with Checkpointer(tmp_path, read_only=True) as reader:
        assert reader.latest_step() == logged[-1]
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming from step {logged[-1]}" in again.stdout
    assert "reason end  steps 400  records 6400" in again.stdout, again.stdout[-3000:]
    with Checkpointer(tmp_path, read_only=True) as reader:
        assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([0, 1], 3200)
