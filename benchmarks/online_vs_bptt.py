"""Time and memory of BPTT vs D-RTRL and ES-D-RTRL (each step by step and chunked) on a recurrent LIF net.

Each (algo, T) configuration runs in a fresh subprocess (``--worker``) so peak memory is
not polluted by earlier configurations. Per configuration we report:

- per-seq seconds: mean wall time of ``learner.etrace_grad`` over ``--repeats`` calls
  after the first (``jax.block_until_ready`` on the grads);
- compile seconds: first call (compile + run) minus the steady per-seq time;
- peak MiB: on GPU ``jax.devices()[0].memory_stats()['peak_bytes_in_use']``; on CPU the
  worker's peak RSS (``ru_maxrss``) minus the RSS after imports, model build and
  ``dt.compile`` (so it includes XLA compilation of the sequence function, not only
  the run — at small sizes that floor dominates);
- xla MiB: XLA's compiled memory analysis of the jitted sequence function
  (temp + output bytes; arguments excluded) — a device-independent view of the
  working memory that shows how it scales with T.

Usage::

    python benchmarks/online_vs_bptt.py --n-rec 64 --batch 16 --T 50 100 200
    bash benchmarks/setup_braintrace.sh          # once: the braintrace 0.2.8 venv
    python benchmarks/online_vs_bptt.py --braintrace-python benchmarks/.venv-braintrace/bin/python

The same sizes are also run in braintrace 0.2.8 (``benchmarks/_braintrace_worker.py``,
executed by the interpreter ``--braintrace-python``) for bptt, d_rtrl and es_d_rtrl.
Its default, ``auto``, is the venv ``benchmarks/setup_braintrace.sh`` makes
(``benchmarks/.venv-braintrace``) when it exists, else no braintrace rows; ``none``
turns them off. Failures are recorded as error strings in the JSON.

The JSON is rewritten after every configuration (atomically: a temporary file, then a
rename), so a crash, a timeout or a failing braintrace side never loses finished rows;
``"complete": false`` marks a run that has not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback

from _sizes import add_size_args

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = ("bptt", "d_rtrl", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk")
BT_ALGOS = ("bptt", "d_rtrl", "es_d_rtrl")  # braintrace has no chunked forms (its chunk_size is another feature)
BT_VENV_PYTHON = os.path.join(HERE, ".venv-braintrace", "bin", "python")  # made by setup_braintrace.sh


def braintrace_python(value: str) -> str | None:
    """Resolves ``--braintrace-python``: ``auto`` -> the setup script's venv if present, ``none`` -> None.

    Raises:
      ValueError: if an explicit path is not an executable file.
    """
    if value == "none":
        return None
    if value == "auto":
        return BT_VENV_PYTHON if os.access(BT_VENV_PYTHON, os.X_OK) else None
    if not (os.path.isfile(value) and os.access(value, os.X_OK)):
        raise ValueError(f"--braintrace-python must be 'auto', 'none' or an executable interpreter; got {value!r} "
                         f"(make one with: bash benchmarks/setup_braintrace.sh)")
    return value


_WORKER_ENV: dict | None = None  # the environment workers get: as it was before driver_jax()


def driver_jax():
    """Imports jax for the driver without preallocating accelerator memory.

    jax preallocates 75 % of a GPU's memory in every process that touches it; the driver
    only reads the device's name, and the workers it starts one after another need that
    memory. The workers get the environment as it was before this call.
    """
    global _WORKER_ENV
    if _WORKER_ENV is None:
        _WORKER_ENV = dict(os.environ)
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import jax

    return jax


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` to ``path`` atomically (``path.tmp`` then a rename), so a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_args(p, n_rec=64, batch=16, n_layers=3)
    p.add_argument("--T", type=int, nargs="+", default=[50, 100, 200])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/online_vs_bptt_<device>.json)")
    p.add_argument("--braintrace-python", default="auto",
                   help="python with braintrace 0.2.8 installed; 'auto' (default): benchmarks/.venv-braintrace if "
                        "present (bash benchmarks/setup_braintrace.sh makes it), 'none': no braintrace rows")
    p.add_argument("--braintrace-algos", nargs="+", default=None, choices=BT_ALGOS,
                   help="braintrace algorithms (default: those of --algos it has)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per worker subprocess")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no configuration after this many seconds; the rest are recorded as skipped")
    p.add_argument("--in-process", action="store_true",
                   help="run the disttrace configurations in this process (smoke tests: saves one interpreter "
                        "start per row, but 'peak MiB' is then not isolated per row)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--algo", default=None, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------------------------
# worker: one configuration, prints "RESULT <json>"
# ---------------------------------------------------------------------------------------------
def _worker(a):
    print("RESULT " + json.dumps(_measure_row(a)), flush=True)


def _measure_row(a):
    row = {"lib": "disttrace", "algo": a.algo, "T": a.T[0]}
    try:
        row.update(_measure(a))
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-4000:]
    return row


def _measure(a):
    import brainstate
    import jax
    import jax.numpy as jnp
    from _memory import device_peak

    import disttrace as dt

    T, B = a.T[0], a.batch
    brainstate.random.seed(0)
    xs = (jax.random.uniform(jax.random.PRNGKey(1), (T, B, a.n_in)) < 0.2).astype(jnp.float32)
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, a.n_out))
    jax.block_until_ready((xs, ys))
    net = dt.nn.SpikingNet(a.n_in, a.n_rec, a.n_out, n_layers=a.n_layers, neuron="lif", recurrent=True, tau_out=0.0)
    if a.algo == "bptt":
        learner = dt.compile(net, dt.BPTT, jnp.zeros((B, a.n_in)), batch_size=B)
    elif a.algo.startswith("es_d_rtrl"):
        learner = dt.compile(net, dt.ES_D_RTRL, jnp.zeros((B, a.n_in)), batch_size=B, decay=0.9)
    else:
        learner = dt.compile(net, dt.D_RTRL, jnp.zeros((B, a.n_in)), batch_size=B)
    chunk = a.chunk if a.algo.endswith("_chunk") else None

    def step_fn(x, y):
        return jnp.mean((learner(x) - y) ** 2)

    def call():
        return jax.block_until_ready(learner.etrace_grad(xs, ys, step_fn=step_fn, return_value=True, chunk_size=chunk))

    base = _rss_mib()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    per_seq = sum(times) / len(times)
    peak_rss = _rss_mib()
    out = {"first_s": first, "per_seq_s": per_seq, "compile_s": max(first - per_seq, 0.0), "times_s": times,
           "peak_rss_mib": peak_rss, "base_rss_mib": base, "peak_mib": peak_rss - base,
           "mem_source": "ru_maxrss-baseline"}
    device_peak(out)
    out.update(_xla_memory(learner, xs, ys, step_fn, chunk))
    return out


def _xla_memory(learner, xs, ys, step_fn, chunk_size):
    """XLA's compiled memory analysis of the sequence function (``learner.etrace_grad_memory``)."""
    try:
        m = learner.etrace_grad_memory(xs, ys, step_fn=step_fn, chunk_size=chunk_size)
    except Exception as e:  # noqa: BLE001 - recorded in the JSON, the other rows still run
        return {"xla_error": f"{type(e).__name__}: {e}"}
    return {"xla_temp_mib": m["temp"] / 2**20, "xla_out_mib": m["output"] / 2**20,
            "xla_arg_mib": m["argument"] / 2**20, "xla_mib": (m["temp"] + m["output"]) / 2**20}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _spawn(cmd, timeout, lib, algo, T):
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_WORKER_ENV)
    except subprocess.TimeoutExpired:
        return {"lib": lib, "algo": algo, "T": T, "error": f"timeout after {timeout}s"}
    except OSError as e:  # e.g. the interpreter is gone: recorded, the other rows still run
        return {"lib": lib, "algo": algo, "T": T, "error": f"could not start {cmd[0]}: {e}"}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            row = json.loads(line[len("RESULT "):])
            row["wall_s"] = time.perf_counter() - t0
            return row
    return {"lib": lib, "algo": algo, "T": T, "error": f"worker exited {r.returncode} without result",
            "stderr_tail": r.stderr[-4000:]}


def _size_args(a):
    return ["--n-in", str(a.n_in), "--n-rec", str(a.n_rec), "--n-out", str(a.n_out), "--batch", str(a.batch),
            "--n-layers", str(a.n_layers), "--repeats", str(a.repeats)]


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def _table(rows):
    head = f"{'lib':<10} {'algo':<15} {'T':>5} {'per-seq s':>10} {'compile s':>10} {'peak MiB':>9} {'xla MiB':>8} {'x BPTT':>7}"
    lines = [head, "-" * len(head)]
    bptt = {(r["lib"], r["T"]): r.get("per_seq_s") for r in rows if r["algo"] == "bptt" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['lib']:<10} {r['algo']:<15} {r['T']:>5}  ERROR: {r['error'][:90]}")
            continue
        ref = bptt.get((r["lib"], r["T"]))
        ratio = r["per_seq_s"] / ref if ref else None
        lines.append(f"{r['lib']:<10} {r['algo']:<15} {r['T']:>5} {_fmt(r['per_seq_s'], '10.4f')} "
                     f"{_fmt(r['compile_s'], '10.2f')} {_fmt(r['peak_mib'], '9.1f')} "
                     f"{_fmt(r.get('xla_mib'), '8.2f')} {_fmt(ratio, '7.2f')}")
    return "\n".join(lines)


def revision(where: str = HERE):
    """The git commit of the checkout holding ``where`` (and whether it has local changes), or None outside one."""
    try:
        rev = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def _progress(row):
    lib, algo, T = row["lib"], row["algo"], row["T"]
    if "error" in row:
        return f"  {lib:<10} {algo:<15} T={T:<5} ERROR {row['error']}"
    return (f"  {lib:<10} {algo:<15} T={T:<5} {row['per_seq_s']:.4f} s/seq, compile {row['compile_s']:.2f} s, "
            f"peak {row['peak_mib']:.1f} MiB")


def main(argv=None):
    p = _parser()
    a = p.parse_args(argv)
    if a.worker:
        return _worker(a)
    try:
        bt_python = braintrace_python(a.braintrace_python)
    except ValueError as e:
        p.error(str(e))
    jax = driver_jax()

    dev = jax.devices()[0]
    device = {"platform": dev.platform, "device_kind": dev.device_kind, "n_devices": jax.device_count(),
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
              "python": platform.python_version()}
    out = a.out or os.path.join(HERE, "results", f"online_vs_bptt_{dev.platform}.json")
    flags = {k: v for k, v in vars(a).items() if k not in ("worker", "algo")}
    # a path inside the checkout is recorded relative to it, so that the JSON names no machine path
    root = os.path.dirname(HERE)
    inside = bt_python and os.path.abspath(bt_python).startswith(root + os.sep)
    flags["braintrace_python"] = os.path.relpath(os.path.abspath(bt_python), root) if inside else bt_python
    order = {k: i for i, k in enumerate(ALGOS)}
    rows = []
    header = {"device": device, "jax_version": jax.__version__, "flags": flags,
              "command": ["benchmarks/online_vs_bptt.py", *(sys.argv[1:] if argv is None else argv)], "revision": revision(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}

    def save(complete):
        rows.sort(key=lambda r: (r["lib"] != "disttrace", r["T"], order.get(r["algo"], 99)))
        write_json(out, {**header, "complete": complete, "rows": rows, "table": _table(rows)})

    jobs = []
    me = [sys.executable, os.path.abspath(__file__), "--worker"] + _size_args(a) + ["--chunk", str(a.chunk)]
    for T in a.T:
        for algo in a.algos:
            cmd = None if a.in_process else me + ["--algo", algo, "--T", str(T)]
            jobs.append((cmd, "disttrace", algo, T))
    if bt_python:
        bt = [bt_python, os.path.join(HERE, "_braintrace_worker.py")] + _size_args(a)
        bt_algos = a.braintrace_algos if a.braintrace_algos is not None else [x for x in a.algos if x in BT_ALGOS]
        for T in a.T:
            for algo in bt_algos:
                jobs.append((bt + ["--algo", algo, "--T", str(T)], "braintrace", algo, T))
    else:
        print("  (no braintrace rows: --braintrace-python none, or no benchmarks/.venv-braintrace; "
              "bash benchmarks/setup_braintrace.sh makes it)", flush=True)
    save(complete=False)
    t_start = time.perf_counter()
    for cmd, lib, algo, T in jobs:
        if a.budget_s is not None and time.perf_counter() - t_start > a.budget_s:
            row = {"lib": lib, "algo": algo, "T": T, "error": f"skipped: --budget-s {a.budget_s:g} s spent"}
        elif cmd is None:  # --in-process
            t0 = time.perf_counter()
            row = _measure_row(argparse.Namespace(**{**vars(a), "algo": algo, "T": [T]}))
            row.update(wall_s=time.perf_counter() - t0, in_process=True)
        else:
            row = _spawn(cmd, a.timeout, lib, algo, T)
        rows.append(row)
        save(complete=False)  # every finished row is on disk before the next one starts
        print(_progress(row), flush=True)
    save(complete=True)

    print()
    print(f"device: {device['platform']} / {device['device_kind']} ({device['cpu_count']} cpus), jax {jax.__version__}")
    print(f"sizes: n_in={a.n_in} n_rec={a.n_rec} n_out={a.n_out} layers={a.n_layers} batch={a.batch} "
          f"chunk={a.chunk} repeats={a.repeats}")
    print(_table(rows))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
