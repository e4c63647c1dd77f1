"""A 2-process ``jax.distributed`` job (CPU, 1 device per process) saves and restores one
sharded state through a Checkpointer in each process: every process calls ``save``,
process 0 alone holds the writer lock and writes the commit markers, and a restore right
after an asynchronous save reads the committed step on both processes."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKER = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    process_id, port, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from disttrace.checkpoint import Checkpointer
    from disttrace.checkpoint._integrity import MARKER

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def state(step):
        full = np.arange(8 * 1024, dtype=np.float32).reshape(8, 1024) * step
        return {"w": jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])}, full

    target = {"w": jax.ShapeDtypeStruct((8, 1024), np.float32, sharding=sharding)}
    with Checkpointer(directory, max_to_keep=2) as ckpt:
        assert (ckpt._lock is not None) == (process_id == 0), ckpt._lock
        for step in (1, 2, 3):
            arrays, full = state(step)
            ckpt.save(step, arrays, meta={"step": step})
            restored, meta = ckpt.restore(target)  # waits for the save in flight
            assert meta == {"step": step} and ckpt.restored_step == step, (meta, ckpt.restored_step)
            for shard in restored["w"].addressable_shards:
                np.testing.assert_array_equal(np.asarray(shard.data), full[shard.index])
            assert os.path.exists(os.path.join(directory, str(step), MARKER))
        assert ckpt.steps() == [2, 3] and ckpt.latest_step() == 3
    print("ok", process_id, flush=True)
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.multihost
def test_two_processes_save_and_restore_one_state(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(i), str(port), str(tmp_path / "ckpt")], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0 and f"ok {i}" in log, log[-4000:]
