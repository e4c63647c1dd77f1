"""``ray job submit`` of the sync stream config to a cluster started with ``ray start``
(run last: its module name sorts last, and it is the only test that calls ``ray stop``,
which stops every Ray process on this machine — the session's own cluster included,
which has finished its tests by then).

The job trains ``configs/evidence_stream_sync.yaml`` (2 workers forming one
``jax.distributed`` job, 60 trials = 2,700 steps): the job's status is SUCCEEDED, and
``ray job logs`` holds the progress lines and a held-out accuracy >= 0.80 and >= 0.15
above that of the initial parameters (measured here: 0.984; the calibration with the
trial trainer is 0.996 after 60 trials).
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env, timeout=180):
    ray = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _initial_accuracy(tmp_path) -> float:
    """The held-out accuracy of the config's initial parameters (the same seed as the job's)."""
    import jax

    from disttrace import config
    from disttrace.jobs._stream import config_trainer, held_out_accuracy, worker_spec

    cfg = config.load(ROOT / "configs" / "evidence_stream_sync.yaml", [f"checkpoint.directory={tmp_path / 'init'}"])
    spec = worker_spec(cfg)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam state (tests/conftest.py)
        return held_out_accuracy(cfg, spec, config_trainer(spec, cfg.batch_size).params_host())


def test_ray_job_submit_runs_the_sync_config(tmp_path):
    import ray

    # the session's own cluster (tests/streaming/ray/conftest.py) ends here: `ray stop` below stops every Ray
    # process on the machine, and a driver whose cluster vanishes is killed by Ray (pytest with it)
    if ray.is_initialized():
        ray.shutdown()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "XLA_FLAGS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               JAX_PLATFORMS="cpu")
    port, dashboard = _free_port(), _free_port()
    try:
        started = _ray("start", "--head", "--port", str(port), "--dashboard-port", str(dashboard),
                       "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                       "--disable-usage-stats", env=env)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while True:  # the dashboard's job agent comes up a few seconds after `ray start` returns
            job = _ray("job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
                       "python", "-m", "launch.train", "--config", "configs/evidence_stream_sync.yaml",
                       "--set", f"checkpoint.directory={tmp_path / 'ckpt'}", env=env, timeout=600)
            logs = job.stdout + job.stderr
            if "No available agent to submit job" not in logs or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert job.returncode == 0, logs[-5000:]
        job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", logs).group(1)
        from ray.job_submission import JobStatus, JobSubmissionClient

        assert JobSubmissionClient(address).get_job_status(job_id) == JobStatus.SUCCEEDED
        logs = _ray("job", "logs", "--address", address, job_id, env=env).stdout
        assert re.search(r"step 2700  records 86400  loss \S+  records/s \d+  restarts 0", logs), logs[-5000:]
        accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", logs).group(1))
        assert accuracy >= 0.80 and accuracy >= _initial_accuracy(tmp_path) + 0.15, logs[-3000:]
    finally:
        _ray("stop", env=env)
