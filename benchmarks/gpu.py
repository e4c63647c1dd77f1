"""The accelerator benchmark in one short run: the GPU targets and the paper grid (``gpu.sh``).

Two parts, each one ``online_vs_bptt.py`` run (same model, columns and JSON):

- ``targets``: one recurrent LIF layer, H=2048, T=1000, batch 64, in 100, out 10:
  BPTT, D-RTRL (step by step and chunked), ES-D-RTRL (step by step and chunked), and
  braintrace 0.2.8's BPTT, D-RTRL and ES-D-RTRL side by side when its interpreter is
  found (``--braintrace-python``, default ``auto``: ``benchmarks/.venv-braintrace``).
- ``grid``: the paper grid, 3 recurrent LIF layers of n=512, batch 128, T in
  50, 100, 200, 500, 1000: BPTT, chunked D-RTRL, ES-D-RTRL (both forms), and braintrace's
  BPTT, D-RTRL and ES-D-RTRL.

Opt-in (``--parts targets grid chunked``, or ``--parts chunked`` alone, about a minute more):

- ``chunked``: the targets' model in one process with ``chunked_vs_bptt.py`` (BPTT, chunked
  D-RTRL at chunk 100 and with ``chunk_size="auto"``, ES-D-RTRL in both forms, alternating
  in a random order for 5 rounds): medians, ratios, the matrix-product FLOPs each call
  executes and the chunk size ``auto`` chose. Its own folder entry ``chunked.json``.

Each configuration runs in its own process (clean device peak memory) and is written to
the part's JSON as soon as it finishes. ``--budget-s`` (default 420 s) caps the whole run
so that it ends in time on one H100/H200 (planned: ~7 min; at worst 420 s + one 120 s
``--timeout``): configurations that would start after it are recorded as skipped, targets
first. Output folder (``--out-dir``): ``targets.json``,
``grid.json``, ``gpu.json`` (both parts, the command, the device) and ``table.txt``.

``--small`` runs the same code paths at tiny sizes on the CPU (the disttrace rows in one
process, ``--in-process``), for CI: ``bash benchmarks/gpu.sh --small --out-dir OUT``.

Usage::

    bash benchmarks/gpu.sh                       # on a GPU host, ~8 min
    bash benchmarks/gpu.sh --small               # CPU smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DT_ALGOS = ("bptt", "d_rtrl", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk")
BT_ALGOS = ("bptt", "d_rtrl", "es_d_rtrl")
# the braintrace algorithm each disttrace row is compared with (braintrace has no chunked forms)
BT_PEER = {"bptt": "bptt", "d_rtrl": "d_rtrl", "d_rtrl_chunk": "d_rtrl", "es_d_rtrl": "es_d_rtrl",
           "es_d_rtrl_chunk": "es_d_rtrl"}

# (name, online_vs_bptt.py arguments); full sizes, then the --small ones with the same algorithms
PARTS = {
    "targets": ["--n-layers", "1", "--n-rec", "2048", "--batch", "64", "--n-in", "100", "--n-out", "10",
                "--T", "1000", "--chunk", "100", "--repeats", "3", "--algos", *DT_ALGOS,
                "--braintrace-algos", *BT_ALGOS],
    "grid": ["--n-layers", "3", "--n-rec", "512", "--batch", "128", "--n-in", "100", "--n-out", "10",
             "--T", "50", "100", "200", "500", "1000", "--chunk", "50", "--repeats", "3",
             "--algos", "bptt", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk", "--braintrace-algos", *BT_ALGOS],
}
SMALL = {
    "targets": ["--n-layers", "1", "--n-rec", "16", "--batch", "4", "--n-in", "8", "--n-out", "3",
                "--T", "12", "--chunk", "5", "--repeats", "1", "--algos", *DT_ALGOS,
                "--braintrace-algos", *BT_ALGOS],
    "grid": ["--n-layers", "3", "--n-rec", "8", "--batch", "4", "--n-in", "8", "--n-out", "3",
             "--T", "6", "12", "--chunk", "5", "--repeats", "1",
             "--algos", "bptt", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk", "--braintrace-algos", *BT_ALGOS],
}
NUMERIC = ("per_seq_s", "compile_s", "peak_mib", "xla_mib")
# the opt-in part: chunked_vs_bptt.py arguments (full, --small)
CHUNKED_ALGOS = ("bptt", "d_rtrl_chunk", "d_rtrl_chunk:auto", "es_d_rtrl", "es_d_rtrl_chunk")
CHUNKED = {
    "full": ["--n-layers", "1", "--n-rec", "2048", "--batch", "64", "--n-in", "100", "--n-out", "10",
             "--T", "1000", "--chunk", "100", "--rounds", "5", "--algos", *CHUNKED_ALGOS],
    "small": ["--n-layers", "1", "--n-rec", "16", "--batch", "4", "--n-in", "8", "--n-out", "3",
              "--T", "12", "--chunk", "5", "--rounds", "2", "--algos", *CHUNKED_ALGOS],
}


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes on the CPU (CI smoke run)")
    p.add_argument("--out-dir", default=None,
                   help="results folder (default benchmarks/results/gpu, or benchmarks/results/gpu_small)")
    p.add_argument("--braintrace-python", default="auto",
                   help="as in online_vs_bptt.py: 'auto' (benchmarks/.venv-braintrace if present), 'none' or a path")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no configuration after this many seconds (default 420; --small: none)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per configuration (default 120)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=[*PARTS, "chunked"],
                   help="default: targets grid; 'chunked' (opt-in) runs chunked_vs_bptt.py on the targets' model")
    p.add_argument("--allow-cpu", action="store_true", help="run the full sizes even when jax sees no accelerator")
    return p


def _peer_table(rows):
    """disttrace time / braintrace time of its peer algorithm, per (algo, T), where both ran."""
    bt = {(r["algo"], r["T"]): r["per_seq_s"] for r in rows if r["lib"] == "braintrace" and "error" not in r}
    lines = []
    for r in rows:
        peer = bt.get((BT_PEER.get(r["algo"]), r["T"]))
        if r["lib"] != "disttrace" or "error" in r or not peer:
            continue
        lines.append(f"{r['algo']:<15} {r['T']:>5} {r['per_seq_s']:>10.4f} {BT_PEER[r['algo']]:<11} "
                     f"{peer:>10.4f} {r['per_seq_s'] / peer:>8.2f}")
    if not lines:
        return "(no braintrace rows to compare with)"
    head = f"{'disttrace':<15} {'T':>5} {'s/seq':>10} {'braintrace':<11} {'s/seq':>10} {'dt / bt':>8}"
    return "\n".join([head, "-" * len(head), *lines])


def _run_chunked(small: bool, out_dir: str, timeout: int) -> dict:
    """The ``chunked`` part: ``chunked_vs_bptt.py`` in a child process (its device memory is
    its own); returns its JSON with a ``table`` added, or ``{"error": ...}``."""
    path = os.path.join(out_dir, "chunked.json")
    cmd = [sys.executable, os.path.join(HERE, "chunked_vs_bptt.py"), *CHUNKED["small" if small else "full"],
           "--out", path]
    print(f"== chunked: {' '.join(cmd[1:])}", flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 300))
    except subprocess.TimeoutExpired:
        return {"error": f"chunked_vs_bptt.py ran past {max(timeout, 300)} s"}
    print(r.stdout, end="", flush=True)
    if r.returncode != 0 or not os.path.exists(path):
        return {"error": f"chunked_vs_bptt.py exited {r.returncode}: {r.stderr[-2000:]}"}
    with open(path) as f:
        data = json.load(f)
    head = f"{'algo':<18} {'median s':>9} {'x bptt':>7} {'matmul GFLOP':>13} {'flop x bptt':>12} {'chunk':>6}"
    lines = [head, "-" * len(head)]
    for row in data["rows"]:
        auto = row.get("auto_chunk") or {}
        lines.append(f"{row['algo']:<18} {row['median_s']:>9.4f} {row['ratio_median']:>7.3f} "
                     f"{row['matmul_gflop']:>13.2f} {row['flop_ratio']:>12.3f} {auto.get('chunk_size', ''):>6}")
    data["table"] = "\n".join(lines)
    return data


def _finite_rows(rows):
    bad = []
    for r in rows:
        vals = [r.get(k) for k in NUMERIC]
        if "error" in r or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            bad.append(f"{r['lib']} {r['algo']} T={r['T']}: {r.get('error', 'non-finite ' + str(vals))}")
    return bad


def main(argv=None):
    a = _parser().parse_args(argv)
    if a.small:
        # before jax is imported (online_vs_bptt imports it in main)
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, HERE)
    import online_vs_bptt

    jax = online_vs_bptt.driver_jax()  # no memory preallocated here: the workers need it

    platform = jax.devices()[0].platform
    if not a.small and platform == "cpu" and not a.allow_cpu:
        print("gpu.sh: jax sees no accelerator (only CPU). Install a GPU jax (e.g. pip install 'jax[cuda12]'), "
              "or run 'bash benchmarks/gpu.sh --small' for the CPU smoke run (--allow-cpu: full sizes on CPU).",
              file=sys.stderr)
        return 2
    sizes = SMALL if a.small else PARTS
    # 420 s of starts + at most one 120 s configuration: the run ends within 9 min even if a size is far
    # slower than planned (~10 s per configuration on an H100 is the plan: ~7 min for the 43 of both parts)
    budget = a.budget_s if a.budget_s is not None else (None if a.small else 420.0)
    timeout = a.timeout if a.timeout is not None else 120
    out_dir = a.out_dir or os.path.join(HERE, "results", "gpu_small" if a.small else "gpu")
    os.makedirs(out_dir, exist_ok=True)

    t0 = time.perf_counter()
    parts = {}
    for name in [p for p in a.parts if p in PARTS]:
        extra = ["--braintrace-python", a.braintrace_python, "--timeout", str(timeout),
                 "--out", os.path.join(out_dir, f"{name}.json")]
        if budget is not None:
            extra += ["--budget-s", str(max(budget - (time.perf_counter() - t0), 0.0))]
        if a.small:
            extra.append("--in-process")
        print(f"== {name}: online_vs_bptt.py {' '.join(sizes[name] + extra)}", flush=True)
        online_vs_bptt.main(sizes[name] + extra)
        with open(os.path.join(out_dir, f"{name}.json")) as f:
            parts[name] = json.load(f)
    # last: the default parts keep the whole budget
    chunked = _run_chunked(a.small, out_dir, timeout) if "chunked" in a.parts else None
    wall = time.perf_counter() - t0

    dev = jax.devices()[0]
    text = [f"device: {dev.platform} / {dev.device_kind}; jax {jax.__version__}; wall {wall:.0f} s; "
            f"command: bash benchmarks/gpu.sh {' '.join(sys.argv[1:] if argv is None else argv)}"]
    for name, part in parts.items():
        text += ["", f"== {name}", part["table"], "", f"-- {name}: disttrace vs braintrace (same run)",
                 _peer_table(part["rows"])]
    if chunked is not None:
        text += ["", "== chunked: one process, alternating (chunked_vs_bptt.py)",
                 chunked.get("table", chunked.get("error", ""))]
    table = "\n".join(text)
    rows = [dict(r, part=name) for name, part in parts.items() for r in part["rows"]]
    bad = _finite_rows(rows)
    if chunked is not None and "error" in chunked:
        bad.append(f"chunked: {chunked['error']}")
    summary = {"device": {"platform": dev.platform, "device_kind": dev.device_kind},
               "jax_version": jax.__version__, "small": a.small, "wall_s": wall,
               "command": ["bash", "benchmarks/gpu.sh", *(sys.argv[1:] if argv is None else argv)],
               "parts": parts, "chunked": chunked, "rows": rows, "failed_rows": bad, "table": table}
    online_vs_bptt.write_json(os.path.join(out_dir, "gpu.json"), summary)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    files = [f"{name}.json" for name in parts] + (["chunked.json"] if chunked and "error" not in chunked else [])
    print(f"\nwrote {out_dir}/{{{','.join(['gpu.json', *files, 'table.txt'])}}} in {wall:.0f} s")
    if bad:
        print(f"{len(bad)} row(s) failed or were skipped:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
