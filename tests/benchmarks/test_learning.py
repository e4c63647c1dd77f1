"""``benchmarks/learning.py`` at a tiny size: every (task, rule, seed) run has a curve and a
final metric, the summary compares with BPTT, the JSON is complete and the table printed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three compilations in a fresh process (~20 s)
def test_tiny_run(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--tasks", "dms", "--seeds", "0",
                        "--updates", "2", "--eval-every", "1", "--eval", "8", "--batch", "8", "--n-rec", "4",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["command"][0] == "benchmarks/learning.py"
    assert [(row["rule"], len(row["curve"])) for row in data["rows"]] == [("bptt", 3), ("d_rtrl", 3), ("es_d_rtrl", 3)]
    assert all(0.0 <= row["final"] <= 1.0 and isinstance(row["memory"], int) for row in data["rows"])
    assert [s["vs_bptt"] is not None for s in data["summary"]] == [True, True, True]
    assert "| dms | d_rtrl |" in r.stdout
