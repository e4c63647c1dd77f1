"""Before/after timing of two git revisions with ``online_vs_bptt.py``, in one run.

Extracts the committed tree of each revision into a temporary folder (``git archive``: a
clean checkout that touches neither this working tree nor the repository's state; local
changes are not included, by design), then runs each revision's own
``benchmarks/online_vs_bptt.py`` with the SAME interpreter and the SAME arguments,
``--pairs`` times each, alternating the order (A B, B A, A B, ...) so that a drift in the
machine's load weighs on both sides alike. ``disttrace`` is imported from each tree
(``PYTHONPATH`` = the tree's root, checked with ``disttrace.__file__`` before the runs),
not from the editable install.

For every disttrace (algo, T) row it prints the median per-seq time of A and of B, the
ratio B/A of the medians, the range of the per-pair ratios, and flags the rows where B
is more than ``--threshold`` (default 5 %) slower. JSON (``--out``): the revisions, the
command, every run's rows and the summary.

Usage (everything after ``--`` goes to ``online_vs_bptt.py``)::

    python benchmarks/compare_revisions.py BEFORE AFTER --pairs 3 -- \\
        --n-layers 1 --n-rec 512 --batch 64 --n-in 100 --n-out 10 --T 200 \\
        --algos bptt d_rtrl_chunk es_d_rtrl es_d_rtrl_chunk --chunk 100 --repeats 3

Exit status: 0, or 1 with ``--strict`` when a row is flagged, or 2 on bad arguments or
when a run produced no rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                usage="%(prog)s REV_A REV_B [options] [-- online_vs_bptt.py args]")
    p.add_argument("rev_a", help="the 'before' revision (any git revision: a commit, HEAD~3, a tag)")
    p.add_argument("rev_b", help="the 'after' revision")
    p.add_argument("--pairs", type=int, default=3, help="runs of each revision (alternating order)")
    p.add_argument("--threshold", type=float, default=0.05, help="flag B/A above 1 + this")
    p.add_argument("--python", default=sys.executable, help="the one interpreter both revisions run with")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/compare_<A>_<B>.json)")
    p.add_argument("--keep", action="store_true", help="keep the extracted trees and raw JSON (printed path)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a row is flagged")
    return p


def _git(*args) -> str:
    r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def _extract(sha: str, dest: str) -> None:
    """The committed tree of ``sha`` into ``dest`` (``git archive | tar -x``)."""
    os.makedirs(dest)
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", "--format=tar", sha], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise RuntimeError(f"could not extract {sha} into {dest}: {tar.stderr.decode()[-2000:]}")


def _env(tree: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _check_import(python: str, tree: str) -> str:
    """Where ``disttrace`` comes from with this tree on PYTHONPATH; raises unless it is the tree."""
    r = subprocess.run([python, "-c", "import disttrace; print(disttrace.__file__)"], cwd=tree, env=_env(tree),
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"'import disttrace' fails in {tree}: {r.stderr[-2000:]}")
    where = os.path.realpath(r.stdout.strip().splitlines()[-1])
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise RuntimeError(f"disttrace was imported from {where}, not from the extracted tree {tree}")
    return where


def _run(python: str, tree: str, bench_args: list, out: str) -> dict:
    cmd = [python, os.path.join(tree, "benchmarks", "online_vs_bptt.py"), *bench_args, "--out", out]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True)
    run = {"returncode": r.returncode, "wall_s": time.perf_counter() - t0, "rows": []}
    if os.path.exists(out):  # written row by row: a crashed run still has its finished rows
        with open(out) as f:
            run["rows"] = json.load(f)["rows"]
    if r.returncode != 0:
        run["stderr_tail"] = r.stderr[-4000:]
    return run


def _times(runs: list, field: str) -> dict:
    """{(algo, T): [row[field] of each run, None where the row is missing or failed]} over disttrace rows."""
    keys = {}
    for run in runs:
        for row in run["rows"]:
            if row.get("lib") == "disttrace":
                keys.setdefault((row["algo"], row["T"]), None)
    times = {k: [] for k in keys}
    for run in runs:
        got = {(r["algo"], r["T"]): r.get(field) for r in run["rows"] if r.get("lib") == "disttrace"}
        for k in keys:
            times[k].append(got.get(k))
    return times


def _summary(runs_a: list, runs_b: list, threshold: float) -> list:
    """Per (algo, T): medians of the runs' per-seq times and their ratio (the verdict), the per-pair ratios,
    and the ratio of the best single calls (interference on a shared machine only ever adds time, so a
    slowdown that the best calls do not show is likely noise)."""
    ta, tb = _times(runs_a, "per_seq_s"), _times(runs_b, "per_seq_s")
    ca, cb = _times(runs_a, "times_s"), _times(runs_b, "times_s")
    rows = []
    for key in sorted(set(ta) | set(tb), key=lambda k: (k[1], k[0])):
        a = [t for t in ta.get(key, []) if t is not None]
        b = [t for t in tb.get(key, []) if t is not None]
        row = {"algo": key[0], "T": key[1], "a_s": ta.get(key, []), "b_s": tb.get(key, [])}
        if a and b:
            pairs = [y / x for x, y in zip(ta[key], tb[key]) if x is not None and y is not None]
            best_a = min((t for ts in ca.get(key, []) if ts for t in ts), default=None)
            best_b = min((t for ts in cb.get(key, []) if ts for t in ts), default=None)
            ratio = statistics.median(b) / statistics.median(a)
            row.update(a_median_s=statistics.median(a), b_median_s=statistics.median(b), ratio=ratio,
                       pair_ratio_min=min(pairs) if pairs else None, pair_ratio_max=max(pairs) if pairs else None,
                       best_ratio=best_b / best_a if best_a and best_b else None,
                       slower=ratio > 1.0 + threshold)
        else:
            row["error"] = "missing in " + " and ".join(n for n, v in (("A", a), ("B", b)) if not v)
        rows.append(row)
    return rows


def _table(summary: list, threshold: float) -> str:
    head = (f"{'algo':<15} {'T':>5} {'A s/seq':>10} {'B s/seq':>10} {'B/A':>6} {'pairs B/A':>11} "
            f"{'best B/A':>8}  flag")
    lines = [head, "-" * len(head)]
    for r in summary:
        if "error" in r:
            lines.append(f"{r['algo']:<15} {r['T']:>5}  {r['error']}")
            continue
        rng = f"{r['pair_ratio_min']:.2f}-{r['pair_ratio_max']:.2f}" if r["pair_ratio_min"] is not None else "-"
        best = f"{r['best_ratio']:.3f}" if r["best_ratio"] is not None else "-"
        flag = ""
        if r["slower"]:
            noisy = r["best_ratio"] is not None and r["best_ratio"] <= 1.0 + threshold
            flag = f"SLOWER (> {1 + threshold:.2f})" + (": not in the best calls, likely noise" if noisy else "")
        lines.append(f"{r['algo']:<15} {r['T']:>5} {r['a_median_s']:>10.4f} {r['b_median_s']:>10.4f} "
                     f"{r['ratio']:>6.3f} {rng:>11} {best:>8}  {flag}".rstrip())
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, bench_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = _parser()
    a = p.parse_args(own)
    if a.pairs < 1:
        p.error(f"--pairs must be a positive int; got {a.pairs}")
    if any(x == "--out" or x.startswith("--out=") for x in bench_args):
        p.error("do not pass --out to online_vs_bptt.py: the harness gives each run its own (use --out before --)")
    try:
        sha_a = _git("rev-parse", "--verify", f"{a.rev_a}^{{commit}}")
        sha_b = _git("rev-parse", "--verify", f"{a.rev_b}^{{commit}}")
    except ValueError as e:
        p.error(f"REV_A / REV_B must name commits of this repository: {e}")

    tmp = tempfile.mkdtemp(prefix="disttrace-compare-")
    try:
        trees = {"A": os.path.join(tmp, "a"), "B": os.path.join(tmp, "b")}
        _extract(sha_a, trees["A"])
        _extract(sha_b, trees["B"])
        imported = {side: _check_import(a.python, tree) for side, tree in trees.items()}
        for side, where in imported.items():
            print(f"{side}: {(sha_a if side == 'A' else sha_b)[:12]}  disttrace from {where}", flush=True)
        runs = {"A": [], "B": []}
        for i in range(a.pairs):
            for side in ("AB" if i % 2 == 0 else "BA"):
                out = os.path.join(tmp, f"run_{side}_{i}.json")
                run = _run(a.python, trees[side], bench_args, out)
                run.update(pair=i, side=side)
                runs[side].append(run)
                print(f"  pair {i} {side}: exit {run['returncode']}, {len(run['rows'])} rows, "
                      f"{run['wall_s']:.0f} s", flush=True)
        summary = _summary(runs["A"], runs["B"], a.threshold)
        table = _table(summary, a.threshold)
        print(f"\nA = {a.rev_a} ({sha_a[:12]}), B = {a.rev_b} ({sha_b[:12]}), {a.pairs} pair(s), "
              f"python {a.python}\nonline_vs_bptt.py {' '.join(bench_args)}\n")
        print(table)
        if sha_a == sha_b:
            print("(A and B are the same commit: the ratios show this machine's noise, not a change)")
        out = a.out or os.path.join(HERE, "results", f"compare_{sha_a[:8]}_{sha_b[:8]}.json")
        sys.path.insert(0, HERE)
        from online_vs_bptt import write_json

        write_json(out, {"rev_a": a.rev_a, "rev_b": a.rev_b, "sha_a": sha_a, "sha_b": sha_b,
                         "disttrace_files": imported, "python": a.python, "pairs": a.pairs,
                         "threshold": a.threshold, "bench_args": bench_args,
                         "command": ["benchmarks/compare_revisions.py", *argv],
                         "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "runs": runs, "summary": summary,
                         "table": table})
        print(f"\nwrote {out}")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not any(run["rows"] for side in runs.values() for run in side):
        print("no run produced rows: see 'stderr_tail' in the JSON", file=sys.stderr)
        return 2
    if any(r.get("error") for r in summary):
        print("some rows are missing on one side: see the table", file=sys.stderr)
    return 1 if a.strict and any(r.get("slower") for r in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
