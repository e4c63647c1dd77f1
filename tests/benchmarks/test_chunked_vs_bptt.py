"""``benchmarks/chunked_vs_bptt.py`` runs at a tiny size: every algorithm gets a time and a
ratio to the first one and its matrix-product FLOPs, the JSON holds every round (time, CPU
time, page faults) and the allocator, and the table is printed."""

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_every_algorithm(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chunked_vs_bptt.py"), "--n-in", "3", "--n-rec", "4",
                        "--n-out", "2", "--batch", "2", "--T", "6", "--chunk", "3", "--rounds", "2",
                        "--algos", "bptt", "d_rtrl_chunk", "es_d_rtrl_chunk:2", "d_rtrl_chunk:auto", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {row["algo"]: row for row in data["rows"]}
    assert list(rows) == ["bptt", "d_rtrl_chunk", "es_d_rtrl_chunk:2", "d_rtrl_chunk:auto"]
    # T = 6 has one candidate, T itself: chosen without timing
    assert rows["d_rtrl_chunk:auto"]["auto_chunk"] == {"chunk_size": 6, "seconds": {}}
    assert rows["bptt"]["ratio_median"] == 1.0
    for row in rows.values():
        assert len(row["times_s"]) == 2 and all(math.isfinite(t) and t > 0 for t in row["times_s"])
        assert math.isfinite(row["ratio_median"]) and row["ratio_median"] > 0
        assert len(row["page_faults"]) == 2 and all(f >= 0 for f in row["page_faults"])
        assert row["matmul_gflop"] > 0 and row["flop_ratio"] > 0
    # BPTT's three products per step (forward, backward, weight gradient) against chunked
    # D-RTRL's four (forward, backward to h_{t-1}, the chunk's gradient and trace update)
    assert rows["d_rtrl_chunk"]["flop_ratio"] > 1.0
    assert data["allocator"].split()[0] in ("glibc", "jemalloc", "tcmalloc", "mimalloc", "unknown")
    assert "x bptt" in r.stdout and "d_rtrl_chunk" in r.stdout and "page faults" in r.stdout and "matmul GFLOP" in r.stdout


def test_braintrace_rows_need_braintrace_and_say_how(tmp_path):
    """Without braintrace importable, a ``bt:`` algorithm stops the run with how to get it
    (CI has no braintrace; where it is installed the rows run, see benchmarks/README.md)."""
    try:
        import braintrace  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("braintrace is importable here")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chunked_vs_bptt.py"), "--n-in", "3", "--n-rec", "4",
                        "--n-out", "2", "--batch", "2", "--T", "4", "--rounds", "1", "--algos", "bptt", "bt:bptt"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "bt:bptt" in r.stderr and "setup_braintrace.sh --with-disttrace" in r.stderr


def test_keep_freed_memory_is_recorded(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chunked_vs_bptt.py"), "--n-in", "3", "--n-rec", "4",
                        "--n-out", "2", "--batch", "2", "--T", "4", "--rounds", "1", "--algos", "bptt",
                        "--keep-freed-memory", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    allocator = json.loads(out.read_text())["allocator"]
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert allocator == "glibc (disttrace.allocator.keep_freed_memory)"
    else:
        assert "not glibc" in r.stdout
