"""``benchmarks/stream_ray.py`` at a tiny size, local mode only (no Ray): a rate per progress
window, a complete JSON and a printed table. The Ray runs are taken by the lead's command
in ``benchmarks/README.md``."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_local_run(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stream_ray.py"), "--n-in", "3", "--n-rec", "4",
                        "--batch", "2", "--steps", "40", "--log-every", "10", "--only", "throughput", "--runs", "local",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["command"][0] == "benchmarks/stream_ray.py"
    (row,) = data["throughput"]
    assert row["mode"] == "local" and row["steps"] == 40 and row["records"] == 80 and len(row["windows"]) == 4
    assert row["records_per_s"] > 0 and "records/s, local (1 worker)" in r.stdout
