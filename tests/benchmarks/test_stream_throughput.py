"""``benchmarks/stream_throughput.py`` runs at a tiny size: every mode gives a rate, the JSON
is complete and the table is printed."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_every_mode(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stream_throughput.py"), "--n-in", "3", "--n-rec", "4",
                        "--batch", "2", "--block", "4", "--steps", "8", "--repeats", "1", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["command"][0] == "benchmarks/stream_throughput.py"
    rows = {row["mode"]: row for row in data["rows"]}
    assert set(rows) == {"single", "block", "floor"}
    for row in rows.values():
        assert "error" not in row, row
        assert math.isfinite(row["records_per_s"]) and row["records_per_s"] > 0
    assert rows["block"]["block"] == 4 and rows["floor"]["block"] == 8
    assert "records/s" in r.stdout and "floor" in r.stdout


def test_steps_must_be_a_multiple_of_the_block(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stream_throughput.py"), "--steps", "10",
                        "--block", "4", "--out", str(tmp_path / "r.json")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--steps must be a multiple of --block" in r.stderr
    assert not (tmp_path / "r.json").exists()
