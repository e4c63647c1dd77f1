"""``disttrace.allocator.keep_freed_memory``: a jitted call whose working set is above glibc's
mmap threshold stops paying first-touch page faults at every call (counted, not timed)."""

import platform
import subprocess
import sys
import textwrap

import pytest

import disttrace as dt

_PROBE = textwrap.dedent(
    """
    import resource, sys
    import disttrace
    if sys.argv[1] == "keep":
        assert disttrace.allocator.keep_freed_memory() is True
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)  # a (4096, 4096) float32 intermediate: 64 MiB of temp
    x = jnp.ones((4096, 16)) / 64
    for _ in range(3):
        f(x).block_until_ready()
    faults = []
    for _ in range(10):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(min(faults))
    """
)

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc's"
)


def _fewest_faults(tmp_path, mode: str) -> int:
    """The fewest page faults of 10 calls (after 3 warm-up calls) in a fresh process."""
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    r = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


@glibc_only
def test_freed_memory_is_reused_without_page_faults(tmp_path):
    plain = _fewest_faults(tmp_path, "plain")
    kept = _fewest_faults(tmp_path, "keep")
    # 64 MiB touched afresh is 16,384 pages of 4 KiB: plain glibc pays them at every call.
    # Kept, the pages are already mapped. Not at every call on a loaded machine: when the
    # previous call's working set is freed late, the heap grows once more (fresh pages), with
    # the same GLIBC_TUNABLES at start-up too; so the test asks for calls without faults.
    assert plain > 8000, f"the probe's working set no longer comes from mmap here ({plain} faults at least a call)"
    assert kept < plain // 20, (plain, kept)


@glibc_only
def test_calling_again_is_harmless():
    # in a child process: the setting is process-wide and would outlive this test
    code = "import disttrace as dt; print(dt.allocator.keep_freed_memory(), dt.allocator.keep_freed_memory())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "True"]


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    assert dt.allocator.keep_freed_memory() is False
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert dt.allocator.keep_freed_memory() is False


def test_jobs_set_it_in_their_workers_and_library_runs_leave_it_off():
    from pathlib import Path

    from disttrace import config
    from disttrace.jobs._stream import worker_spec
    from disttrace.streaming.ray import WorkerSpec

    path = Path(__file__).resolve().parents[1] / "configs" / "evidence_stream_async.yaml"
    assert worker_spec(config.load(path, ["checkpoint.directory=/tmp/x"])).keep_freed_memory is True
    assert worker_spec(config.load(path, ["checkpoint.directory=/tmp/x", "keep_freed_memory=false"])).keep_freed_memory is False
    # run(WorkerSpec(...)) in local mode trains in the caller's process: not changed unasked
    assert WorkerSpec().keep_freed_memory is False
    with pytest.raises(TypeError, match="keep_freed_memory"):
        WorkerSpec(keep_freed_memory="yes")
