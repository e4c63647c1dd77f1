"""``bash benchmarks/gpu.sh --small``: the accelerator benchmark's code paths at tiny sizes on the CPU.

Runs the real script in a subprocess (as a user would) into a temporary folder and checks
that every configuration of both parts produced a row with finite numbers, written both in
the part's JSON and in the summary.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the --small sizes the script promises (benchmarks/gpu.py SMALL), spelled out so that a row
# the script stops producing fails here
EXPECTED = {
    "targets": {(algo, 12) for algo in ("bptt", "d_rtrl", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk")},
    "grid": {(algo, t) for algo in ("bptt", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk") for t in (6, 12)},
}
NUMBERS = ("per_seq_s", "compile_s", "first_s", "peak_mib", "xla_mib", "xla_temp_mib", "xla_out_mib")


def test_gpu_sh_small_writes_every_row_with_finite_numbers(tmp_path):
    out = tmp_path / "gpu_small"
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--small", "--out-dir", str(out),
                        "--braintrace-python", "none"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    summary = json.loads((out / "gpu.json").read_text())
    assert summary["small"] is True and summary["failed_rows"] == []
    assert summary["device"]["platform"] == "cpu"
    for part, expected in EXPECTED.items():
        data = json.loads((out / f"{part}.json").read_text())
        assert data["complete"] is True
        rows = data["rows"]
        assert {(row["lib"], row["algo"], row["T"]) for row in rows} == {("disttrace", a, t) for a, t in expected}
        assert len(rows) == len(expected)
        for row in rows:
            assert "error" not in row and "xla_error" not in row, row
            for key in NUMBERS:
                assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), (part, row["algo"], key)
            assert row["per_seq_s"] > 0 and row["xla_mib"] > 0 and row["first_s"] >= row["per_seq_s"]
        assert summary["parts"][part]["rows"] == rows
    table = (out / "table.txt").read_text()
    for algo in EXPECTED["targets"]:
        assert f"disttrace  {algo[0]:<15}" in table


def test_gpu_sh_small_chunked_part(tmp_path):
    """The opt-in ``chunked`` part: ``chunked_vs_bptt.py`` on the targets' model in one process,
    every algorithm with a time, a FLOP ratio, and the chunk size ``auto`` chose."""
    out = tmp_path / "gpu_small"
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--small", "--parts", "chunked",
                        "--out-dir", str(out), "--braintrace-python", "none"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "gpu.json").read_text())
    assert summary["failed_rows"] == [] and summary["parts"] == {}
    rows = {row["algo"]: row for row in json.loads((out / "chunked.json").read_text())["rows"]}
    assert list(rows) == ["bptt", "d_rtrl_chunk", "d_rtrl_chunk:auto", "es_d_rtrl", "es_d_rtrl_chunk"]
    for row in rows.values():
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0 and row["flop_ratio"] > 0
    assert rows["d_rtrl_chunk:auto"]["auto_chunk"]["chunk_size"] == 12  # T = 12: one candidate
    assert summary["chunked"]["rows"] == list(rows.values())
    assert "== chunked" in (out / "table.txt").read_text()
