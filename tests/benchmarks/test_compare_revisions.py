"""``benchmarks/compare_revisions.py``: the before/after verdict and the argument checks.

The full harness (two extracted revisions, alternating runs) is exercised by hand at a tiny
size (``HEAD HEAD``); here the verdict is checked on runs of known times, and bad
arguments are refused before any revision is extracted.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# loaded from its file: putting benchmarks/ on sys.path would let its scripts (memory.py, layers.py, ...)
# shadow top-level modules of the same name for the rest of the test session
_spec = importlib.util.spec_from_file_location("compare_revisions", ROOT / "benchmarks" / "compare_revisions.py")
compare_revisions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_revisions)


def _run(times: dict) -> dict:
    """One online_vs_bptt.py run's JSON rows: {algo: list of call times}."""
    return {"rows": [{"lib": "disttrace", "algo": algo, "T": 200, "per_seq_s": sum(ts) / len(ts), "times_s": ts}
                     for algo, ts in times.items()]
            + [{"lib": "braintrace", "algo": "bptt", "T": 200, "per_seq_s": 9.0, "times_s": [9.0]}]}


def test_summary_flags_only_a_slowdown_beyond_the_threshold():
    runs_a = [_run({"bptt": [1.0, 1.0], "es_d_rtrl": [2.0, 2.0]}) for _ in range(3)]
    runs_b = [_run({"bptt": [1.04, 1.04], "es_d_rtrl": [2.2, 2.2]}) for _ in range(3)]
    summary = {r["algo"]: r for r in compare_revisions._summary(runs_a, runs_b, 0.05)}
    assert set(summary) == {"bptt", "es_d_rtrl"}  # braintrace rows are not compared
    assert summary["bptt"]["ratio"] == pytest.approx(1.04) and not summary["bptt"]["slower"]
    assert summary["es_d_rtrl"]["ratio"] == pytest.approx(1.1) and summary["es_d_rtrl"]["slower"]
    assert summary["es_d_rtrl"]["best_ratio"] == pytest.approx(1.1)
    table = compare_revisions._table(list(summary.values()), 0.05)
    flagged = [line for line in table.splitlines() if "SLOWER" in line]
    assert len(flagged) == 1 and flagged[0].startswith("es_d_rtrl") and "noise" not in flagged[0]


def test_summary_uses_medians_and_reports_missing_rows():
    runs_a = [_run({"bptt": [1.0]}), _run({"bptt": [1.0]}), _run({"bptt": [5.0]})]  # one disturbed run
    runs_b = [_run({"bptt": [1.0]}), _run({"bptt": [1.0], "d_rtrl": [3.0]}), _run({"bptt": [1.0]})]
    summary = {r["algo"]: r for r in compare_revisions._summary(runs_a, runs_b, 0.05)}
    assert summary["bptt"]["ratio"] == pytest.approx(1.0)
    assert summary["bptt"]["pair_ratio_min"] == pytest.approx(0.2)
    assert summary["d_rtrl"]["error"] == "missing in A"


@pytest.mark.parametrize("args, message", [
    (["no-such-revision", "HEAD"], "must name commits"),
    (["HEAD", "HEAD", "--", "--out", "x.json"], "do not pass --out"),
    (["HEAD", "HEAD", "--pairs", "0"], "--pairs must be a positive int"),
])
def test_bad_arguments_exit_2_with_the_reason(args, message, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"), *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
