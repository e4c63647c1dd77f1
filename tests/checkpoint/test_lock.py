"""One writer per checkpoint directory, with real processes: a second writer is refused at
construction (the message names the holder's pid and host), readers open beside the writer
with ``read_only=True``, ``close()`` releases the lock, and a writer that died (even by
``os._exit`` mid-save) leaves a stale lock that the next writer takes over, together with
its temporary directories, which are removed."""

import os
import socket
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.checkpoint import Checkpointer
from disttrace.checkpoint._lock import LOCK_NAME
from disttrace.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_HOLDER = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    from disttrace.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"w": jnp.arange(4.0)}, meta={"by": "holder"})
    ckpt.wait()
    print("locked", flush=True)
    sys.stdin.readline()
    ckpt.close()
    print("released", flush=True)
    sys.stdin.readline()
    """
)


def _start_holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "locked":
        proc.kill()
        raise AssertionError(f"the holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(CheckpointError) as err:
            Checkpointer(tmp_path)
        assert err.value.step is None and err.value.path == str(tmp_path / LOCK_NAME)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in err.value.reason
        assert "read_only=True" in err.value.reason
        # a reader needs no lock, and sees what the writer committed
        with Checkpointer(tmp_path, read_only=True) as reader:
            state, meta = reader.restore({"w": jnp.zeros(4)})
            assert meta == {"by": "holder"}
            np.testing.assert_array_equal(state["w"], np.arange(4.0))
            with pytest.raises(RuntimeError, match="read_only=True"):
                reader.save(2, {"w": jnp.zeros(4)})
        holder.stdin.write("close\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        # the holder still runs, but closed its Checkpointer: the directory is free
        with Checkpointer(tmp_path) as ckpt:
            ckpt.save(2, {"w": jnp.ones(4)})
            ckpt.wait()
            assert ckpt.latest_step() == 2
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
        holder.stderr.close()


def test_one_writer_per_directory_within_a_process(tmp_path):
    first = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
        Checkpointer(tmp_path)
    Checkpointer(tmp_path, read_only=True).close()
    first.close()
    first.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        first.save(1, {"w": jnp.zeros(2)})
    with Checkpointer(tmp_path):  # released by close()
        pass
    with Checkpointer(tmp_path):  # and by leaving the with block
        pass


_DIES_MID_SAVE = textwrap.dedent(
    """
    import os, sys
    import jax.numpy as jnp
    from disttrace.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"w": jnp.full((4,), 1.0)})
    ckpt.wait()
    # a big second state, then die while its asynchronous write is under way
    ckpt.save(2, {"w": jnp.full((4,), 2.0), "big": jnp.ones((32, 1024, 1024))})
    os._exit(17)
    """
)


def test_a_dead_writers_lock_and_temporaries_are_taken_over(tmp_path):
    r = subprocess.run([sys.executable, "-c", _DIES_MID_SAVE, str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 17, r.stderr[-2000:]
    assert '"pid": ' in (tmp_path / LOCK_NAME).read_text()  # the dead writer's record is still there
    temporaries = [p for p in os.listdir(tmp_path) if ".orbax-checkpoint-tmp" in p]
    # os._exit hit the write of step 2
    assert len(temporaries) == 1 and temporaries[0].startswith("2.orbax-checkpoint-tmp"), os.listdir(tmp_path)

    with Checkpointer(tmp_path, read_only=True) as reader:  # a reader cleans nothing
        assert reader.steps() == [1]
    assert (tmp_path / temporaries[0]).exists()

    with Checkpointer(tmp_path) as ckpt:  # the stale lock is taken over, the temporaries removed
        assert not any(".orbax-checkpoint-tmp" in p for p in os.listdir(tmp_path))
        assert ckpt.steps() == [1]
        state, _ = ckpt.restore({"w": jnp.zeros(4)})
        np.testing.assert_array_equal(state["w"], np.full(4, 1.0))
        ckpt.save(2, {"w": jnp.full((4,), 3.0)})
        ckpt.wait()
        assert ckpt.steps() == [1, 2]
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a released lock names no owner
