"""Exactly-once, proved on real processes: a ``run_worker`` process is SIGKILLed at a random
step after its first committed checkpoint, a new process resumes from the checkpoint
directory and runs to the end of the stream; the final ledger is the closed form of every
record used once, and the final parameters are bitwise those of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from disttrace.checkpoint import Checkpointer
from disttrace.streaming import CountingStream, Ledger, run_worker
from tests.streaming._counting_run import BATCH, EVERY, N_RECORDS, PARTITIONS, build_trainer

ROOT = Path(__file__).resolve().parents[2]
STEPS = N_RECORDS // (BATCH // PARTITIONS)
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}


def _start(checkpoints, out, *, delay=0.0, stdout=None, wait=False):
    cmd = [sys.executable, "-m", "tests.streaming._counting_run", "--checkpoints", str(checkpoints), "--out",
           str(out), "--delay", str(delay), *(["--wait"] if wait else [])]
    log = open(f"{out}.log", "w")  # a file, not a pipe: a full pipe would stall the process
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=stdout or subprocess.DEVNULL, stderr=log, text=True,
                            stdin=subprocess.PIPE if wait else None)
    log.close()
    return proc


def _log(out) -> str:
    return Path(f"{out}.log").read_text()[-3000:]


def _uninterrupted():
    trainer = build_trainer()
    stream = CountingStream(N_RECORDS, batch_size=BATCH, num_partitions=PARTITIONS)
    result = run_worker(trainer, stream, None, checkpoint_every=None, log_every=None)
    assert result.reason == "end" and result.ledger == Ledger.exactly_once(range(PARTITIONS), N_RECORDS)
    return jax.tree.leaves(trainer.params_host())


def _params(out):
    with np.load(out / "params.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k[4:]))]


def test_sigkill_mid_run_then_resume_is_exactly_once_and_bitwise(tmp_path):
    seed = random.randrange(2**32)
    kill_at = random.Random(seed).randint(EVERY + 1, STEPS - 30)  # after the first checkpoint, well before the end
    why = f"(kill at step >= {kill_at}, seed {seed})"
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    victim = _start(checkpoints, tmp_path / "victim", delay=0.05, stdout=subprocess.PIPE)
    # the restart: a new process, started up now (imports, model) to save time; it opens the
    # checkpoint directory only when told, after the kill
    resumed = _start(checkpoints, tmp_path / "resumed", stdout=subprocess.PIPE, wait=True)
    try:
        reader = Checkpointer(checkpoints, read_only=True)
        killed_after = None
        for line in victim.stdout:
            step = int(line.split()[1]) if line.startswith("progress ") else -1
            if step >= kill_at and reader.steps():  # at least one committed checkpoint
                victim.send_signal(signal.SIGKILL)
                killed_after = step
                break
        victim.wait(timeout=120)
        reader.close()
        assert victim.returncode == -signal.SIGKILL, f"the victim was not killed {why}: {_log(tmp_path / 'victim')}"
        assert killed_after is not None and killed_after < STEPS
        assert not (tmp_path / "victim").exists()  # it never finished

        assert resumed.stdout.readline() == "ready\n", _log(tmp_path / "resumed")
        resumed.stdin.write("go\n")
        resumed.stdin.close()
        reference = _uninterrupted()  # meanwhile, here: the same net on the whole stream, no checkpoints
        assert resumed.wait(timeout=180) == 0, _log(tmp_path / "resumed")
    finally:
        for proc in (victim, resumed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()

    result = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert result["reason"] == "end" and result["steps"] == STEPS, why
    assert EVERY <= result["resumed_from"] < STEPS, why  # resumed from a checkpoint, not from scratch
    assert Ledger.from_json(result["ledger"]) == Ledger.exactly_once(range(PARTITIONS), N_RECORDS), why
    assert result["offsets"] == {str(p): STEPS for p in range(PARTITIONS)}
    for got, want in zip(_params(tmp_path / "resumed"), reference, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), why
