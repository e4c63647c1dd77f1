"""``benchmarks/online_vs_bptt.py``: rows reach the JSON even when the braintrace side fails."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_failing_braintrace_side_keeps_the_finished_rows(tmp_path):
    out = tmp_path / "r.json"
    # /bin/false stands for a broken braintrace interpreter: it starts, prints nothing, exits 1
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "online_vs_bptt.py"), "--n-layers", "1",
                        "--n-rec", "4", "--n-in", "3", "--n-out", "2", "--batch", "2", "--T", "4",
                        "--algos", "es_d_rtrl", "--repeats", "1", "--braintrace-python", "/bin/false",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"] is True
    assert data["command"][0] == "benchmarks/online_vs_bptt.py"
    rows = {(row["lib"], row["algo"]): row for row in data["rows"]}
    assert set(rows) == {("disttrace", "es_d_rtrl"), ("braintrace", "es_d_rtrl")}
    ours = rows["disttrace", "es_d_rtrl"]
    assert "error" not in ours and math.isfinite(ours["per_seq_s"]) and ours["xla_mib"] > 0
    assert "without result" in rows["braintrace", "es_d_rtrl"]["error"]
    assert not (tmp_path / "r.json.tmp").exists()


def test_a_braintrace_python_that_is_not_there_is_refused_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "online_vs_bptt.py"),
                        "--braintrace-python", str(tmp_path / "missing"), "--out", str(tmp_path / "r.json")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--braintrace-python" in r.stderr and "setup_braintrace.sh" in r.stderr
    assert not (tmp_path / "r.json").exists()
