"""The README's Python snippets run as written, in order, in a fresh process with 8 CPU
devices (as the README says to get them)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# XLA's CPU collectives give up when one of the 8 fake devices' threads is 40 s late, which a
# loaded 2-core machine (a second xdist worker beside this one) can reach: observed once in
# CI as "Expected 4 threads to join the rendezvous, but only 3 of them arrived on time".
# The flag is used only where this jaxlib knows it (an unknown XLA flag aborts the process).
_PATIENT = "--xla_cpu_collective_call_terminate_timeout_seconds=600"


def _xla_flags() -> str:
    flags = "--xla_force_host_platform_device_count=8"
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env={**os.environ, "XLA_FLAGS": f"{flags} {_PATIENT}", "JAX_PLATFORMS": "cpu"},
        capture_output=True, timeout=120,
    )
    return f"{flags} {_PATIENT}" if probe.returncode == 0 else flags


# a fresh process compiles a 64-neuron ALIF net twice (~30 s) and runs a step on 8 fake CPU devices, whose
# collectives stalled past 600 s once beside a second xdist worker on 2 cores: it runs in the serial pass
@pytest.mark.serial
def test_readme_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    env = {**os.environ, "XLA_FLAGS": _xla_flags(), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "learner_state/hidden" in out.stdout  # print(trainer.rules)
