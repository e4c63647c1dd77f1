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
    python benchmarks/online_vs_bptt.py --braintrace-python /tmp/bt312/bin/python

With ``--braintrace-python`` the same sizes are also run in braintrace 0.2.8
(``benchmarks/_braintrace_worker.py``, same interpreter given) for d_rtrl, es_d_rtrl
and bptt; failures are recorded as error strings in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = ("bptt", "d_rtrl", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk")


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-rec", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--n-in", type=int, default=100)
    p.add_argument("--n-out", type=int, default=10)
    p.add_argument("--n-layers", type=int, default=3)
    p.add_argument("--T", type=int, nargs="+", default=[50, 100, 200])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/online_vs_bptt_<device>.json)")
    p.add_argument("--braintrace-python", default=None, help="python with braintrace 0.2.8 installed")
    p.add_argument("--timeout", type=int, default=600, help="seconds per worker subprocess")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--algo", default=None, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------------------------
# worker: one configuration, prints "RESULT <json>"
# ---------------------------------------------------------------------------------------------
def _worker(a):
    row = {"lib": "disttrace", "algo": a.algo, "T": a.T[0]}
    try:
        row.update(_measure(a))
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-4000:]
    print("RESULT " + json.dumps(row), flush=True)


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
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"lib": lib, "algo": algo, "T": T, "error": f"timeout after {timeout}s"}
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


def main(argv=None):
    a = _parser().parse_args(argv)
    if a.worker:
        return _worker(a)

    import jax

    dev = jax.devices()[0]
    device = {"platform": dev.platform, "device_kind": dev.device_kind, "n_devices": jax.device_count(),
              "cpu_count": os.cpu_count()}
    rows = []
    me = [sys.executable, os.path.abspath(__file__), "--worker"] + _size_args(a) + ["--chunk", str(a.chunk)]
    for T in a.T:
        for algo in a.algos:
            row = _spawn(me + ["--algo", algo, "--T", str(T)], a.timeout, "disttrace", algo, T)
            rows.append(row)
            print(f"  disttrace {algo:<15} T={T:<5} " + (f"ERROR {row['error']}" if "error" in row else
                  f"{row['per_seq_s']:.4f} s/seq, compile {row['compile_s']:.2f} s, peak {row['peak_mib']:.1f} MiB"),
                  flush=True)
    if a.braintrace_python:
        bt = [a.braintrace_python, os.path.join(HERE, "_braintrace_worker.py")] + _size_args(a)
        bt_algos = [x for x in a.algos if x in ("bptt", "d_rtrl", "es_d_rtrl")]
        for T in a.T:
            for algo in bt_algos:
                row = _spawn(bt + ["--algo", algo, "--T", str(T)], a.timeout, "braintrace", algo, T)
                rows.append(row)
                print(f"  braintrace {algo:<14} T={T:<5} " + (f"ERROR {row['error']}" if "error" in row else
                      f"{row['per_seq_s']:.4f} s/seq, compile {row['compile_s']:.2f} s, peak {row['peak_mib']:.1f} MiB"),
                      flush=True)

    order = {k: i for i, k in enumerate(ALGOS)}
    rows.sort(key=lambda r: (r["lib"] != "disttrace", r["T"], order.get(r["algo"], 99)))
    table = _table(rows)
    print()
    print(f"device: {device['platform']} / {device['device_kind']} ({device['cpu_count']} cpus), jax {jax.__version__}")
    print(f"sizes: n_in={a.n_in} n_rec={a.n_rec} n_out={a.n_out} layers={a.n_layers} batch={a.batch} "
          f"chunk={a.chunk} repeats={a.repeats}")
    print(table)

    out = a.out or os.path.join(HERE, "results", f"online_vs_bptt_{dev.platform}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    flags = {k: v for k, v in vars(a).items() if k not in ("worker", "algo")}
    with open(out, "w") as f:
        json.dump({"device": device, "jax_version": jax.__version__, "flags": flags, "rows": rows, "table": table},
                  f, indent=2)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
