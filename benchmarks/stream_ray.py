"""Ray stream runs: records/s per mode, time from a SIGKILL to the replayed steps, and Ray's
own overheads.

What is measured (``SpikingNet(n_in, n_rec, n_out)`` with D-RTRL, MSE on the counting
stream, Adam; ``--batch`` rows per worker):

- ``throughput``: records/s (a record = one step of one row) of ``local`` (1 worker, no
  Ray), ``sync`` (2 workers, one ``jax.distributed`` job) and ``async`` (2 workers,
  parameters averaged every K = 20 and K = 100 steps): the median of the progress
  windows after the first (which holds the compilation);
- ``recovery``: worker 1's process is SIGKILLed right after its second checkpoint (the
  first one is committed by then); the seconds
  from the kill to the restored workers' ``resume`` event and to their first progress
  line (``--log-every`` steps later), for sync (group restart) and async (rollback);
- ``overheads``: ``ray.init`` of a local cluster, starting one worker actor (until its
  first method returns), and ``ray job submit`` of a trivial job end to end (to the
  dashboard of a cluster this script started itself; it never runs ``ray stop``).

These figures measure orchestration on CPU, not collective bandwidth: on a 2-core machine
two workers share the cores that one would use alone.

Usage::

    python benchmarks/stream_ray.py                   # the issue's sizes (about 4 min on 2 cores)
    python benchmarks/stream_ray.py --n-rec 4 --steps 40 --log-every 10 --only throughput --runs local  # smoke

Writes ``benchmarks/results/stream_ray_<platform>.json`` (or ``--out``) after each
measurement (``"complete": false`` until the end) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.stream_throughput import revision, write_json  # noqa: E402

PARTS = ("throughput", "recovery", "overheads")
#: throughput runs: (mode, workers, K)
RUNS = {"local": ("local", 1, 20), "sync": ("sync", 2, 20), "async20": ("async", 2, 20), "async100": ("async", 2, 100)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-in", type=int, default=40)
    p.add_argument("--n-rec", type=int, default=128)
    p.add_argument("--n-out", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="rows per worker")
    p.add_argument("--steps", type=int, default=600, help="stream steps per throughput run")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--only", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS, help="throughput runs")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/stream_ray_<platform>.json)")
    return p


def _config(a, mode: str, workers: int, directory: str, *, average_every: int = 20, steps: int | None = None):
    from disttrace import config

    steps = steps or a.steps
    rows = a.batch * workers
    return config.load(None, [
        "task.name=counting", f"task.n_in={a.n_in}", f"task.n_out={a.n_out}",
        f"task.n_records={a.batch * (steps + 100)}", "loss=mse", f"model.n_rec={a.n_rec}",
        f"batch_size={rows}", f"steps={steps}", f"log_every={a.log_every}", f"checkpoint.every={a.log_every * 2}",
        f"checkpoint.directory={directory}", f"stream.mode={mode}", f"stream.num_workers={workers}",
        f"stream.average_every={average_every}", "stream.num_cpus=2" if mode != "local" else "stream.num_cpus=null",
    ])


def _throughput(a, mode: str, workers: int, average_every: int = 20) -> dict:
    from disttrace.jobs import worker_spec
    from disttrace.streaming.ray import connect, disconnect, run

    rates = []

    def on_metrics(rank, m):
        if rank == 0 and "event" not in m:
            rates.append(m["records_per_s"])

    with tempfile.TemporaryDirectory() as d:
        spec = worker_spec(_config(a, mode, workers, d, average_every=average_every))
        started = connect(None, num_cpus=2) if mode != "local" else False
        try:
            t0 = time.perf_counter()
            result = run(spec, on_metrics=on_metrics)
            wall = time.perf_counter() - t0
        finally:
            disconnect(started)
    steady = rates[1:] or rates
    return {"mode": mode, "workers": workers, "average_every": average_every if mode == "async" else None,
            "records_per_s": statistics.median(steady), "windows": rates, "steps": result.steps,
            "records": result.ledger.total().count, "wall_s": wall}


def _recovery(a, mode: str) -> dict:
    from disttrace.jobs import worker_spec
    from disttrace.streaming.ray import connect, disconnect, run

    marks: dict = {}
    pids: dict = {}

    def on_event(e):
        if e["event"] == "started":
            pids.update(enumerate(e["pids"]))

    def on_metrics(rank, m):
        now = time.perf_counter()
        # the second checkpoint's event: the first is committed by then (a save waits for the one before)
        if "kill" not in marks and rank == 1 and m.get("event") == "checkpoint" and m["steps"] >= 4 * a.log_every:
            os.kill(pids[1], signal.SIGKILL)
            marks["kill"] = now
        elif "kill" in marks and rank == 0 and m.get("event") == "resume" and "resume" not in marks:
            marks["resume"] = now
        elif "resume" in marks and rank == 0 and "event" not in m and "replayed" not in marks:
            marks["replayed"] = now

    with tempfile.TemporaryDirectory() as d:
        spec = worker_spec(_config(a, mode, 2, d, average_every=20, steps=max(a.steps, 8 * a.log_every)))
        started = connect(None, num_cpus=2)
        try:
            result = run(spec, on_event=on_event, on_metrics=on_metrics)
        finally:
            disconnect(started)
    return {"mode": mode, "restarts": result.restarts,
            "kill_to_resume_s": marks["resume"] - marks["kill"] if "resume" in marks else None,
            "kill_to_first_progress_s": marks["replayed"] - marks["kill"] if "replayed" in marks else None,
            "log_every": a.log_every}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overheads() -> dict:
    import warnings

    import ray

    from disttrace.streaming.ray import WorkerSpec, worker_options
    from disttrace.streaming.ray._actor import StreamWorker

    port = _free_port()
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # Ray's forked helpers only exec its binaries (see streaming.ray._address)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 _node_ip_address="127.0.0.1")
    init_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        actor = ray.remote(StreamWorker).options(**worker_options(WorkerSpec(mode="async", num_workers=2))).remote(
            WorkerSpec(mode="async", num_workers=2), 0)
        ray.get(actor.pid.remote())
        actor_s = time.perf_counter() - t0
        ray.kill(actor)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "XLA_FLAGS")}
        cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit", "--address",
               f"http://127.0.0.1:{port}", "--", sys.executable, "-c", "print('ok')"]
        submit_s = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the job agent comes up a few seconds after the dashboard
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            if out.returncode == 0:
                submit_s = time.perf_counter() - t0
                break
            if "No available agent" not in out.stdout + out.stderr:
                raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
            time.sleep(3)
    finally:
        ray.shutdown()
    return {"ray_init_s": init_s, "worker_start_s": actor_s, "job_submit_s": submit_s}


def _table(payload: dict) -> str:
    lines = ["| measurement | value |", "| --- | --- |"]
    for r in payload["throughput"]:
        k = f", K={r['average_every']}" if r["average_every"] else ""
        lines.append(f"| records/s, {r['mode']} ({r['workers']} worker{'s' if r['workers'] > 1 else ''}{k}) | "
                     f"{r['records_per_s']:,.0f} |")
    for r in payload["recovery"]:
        for key in ("kill_to_resume_s", "kill_to_first_progress_s"):
            v = r[key]
            lines.append(f"| {r['mode']}: {key.replace('_', ' ')[:-2]} (s) | {'n/a' if v is None else f'{v:.1f}'} |")
    for key, v in payload["overheads"].items():
        lines.append(f"| {key[:-2].replace('_', ' ')} (s) | {'n/a' if v is None else f'{v:.1f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    import jax

    out = a.out or os.path.join(HERE, "results", f"stream_ray_{jax.devices()[0].platform}.json")
    payload = {
        "benchmark": "stream_ray", "command": ["benchmarks/stream_ray.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": {"platform": jax.devices()[0].platform, "cpus": os.cpu_count(), "python": platform.python_version()},
        "revision": revision(), "sizes": vars(a), "throughput": [], "recovery": [], "overheads": {},
        "complete": False,
    }
    if "throughput" in a.only:
        for run in a.runs:
            payload["throughput"].append(_throughput(a, *RUNS[run]))
            write_json(out, payload)
    if "recovery" in a.only:
        for mode in ("sync", "async"):
            payload["recovery"].append(_recovery(a, mode))
            write_json(out, payload)
    if "overheads" in a.only:
        payload["overheads"] = _overheads()
    payload["complete"] = True
    write_json(out, payload)
    print(_table(payload))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
