"""A 2-process ``jax.distributed`` run on CPU equals the single-device run.

Two subprocesses on localhost (gloo collectives, the JAX 0.10 CPU default), 2 CPU
devices each: a global mesh of 4 devices in the layouts (4, 1) (the data axis spans
the processes, each process feeds only its rows), (2, 2) and (1, 4) (the model axis
spans the processes). Tolerances as in ``test_step.py`` (same cause: the order of
float additions in the cross-device reductions).
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.distributed import cases
from tests.distributed.test_step import STATE_TOL, TOL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_PROC, LOCAL_DEVICES = 2, 2
LAYOUTS = ["4x1", "2x2", "1x4"]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.multihost
@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected, recorded
def test_two_processes_equal_one(tmp_path):
    xs, ys = cases.data()
    inputs, refs = {"xs": xs, "ys": ys}, {}
    for net in sorted(cases.NETS):
        for algo in sorted(cases.ALGOS):
            learner = cases.build(net, algo)
            for i, leaf in enumerate(jax.tree.leaves(learner.params())):
                inputs[f"{net}/{algo}/init/{i}"] = np.asarray(leaf)
            refs[net, algo] = cases.reference(learner, xs, ys)
    np.savez(tmp_path / "inputs.npz", **inputs)

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)  # each worker sets its own device count
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.distributed.multihost_worker", "--process-id", str(i),
             "--num-processes", str(N_PROC), "--port", str(port), "--local-devices", str(LOCAL_DEVICES),
             "--workdir", str(tmp_path)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(N_PROC)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]

    result = np.load(tmp_path / "result.npz")
    for (net, algo), (ref_params, ref_state, ref_losses) in refs.items():
        for layout in LAYOUTS:
            key = f"{net}/{algo}/{layout}"
            for i, want in enumerate(jax.tree.leaves(ref_params)):
                np.testing.assert_allclose(result[f"{key}/params/{i}"], want, **TOL, err_msg=f"{key} param {i}")
            for i, want in enumerate(jax.tree.leaves(ref_state)):
                atol = STATE_TOL * max(float(np.max(np.abs(want))), 1e-30)
                np.testing.assert_allclose(result[f"{key}/state/{i}"], want, rtol=0, atol=atol, err_msg=f"{key} state {i}")
            np.testing.assert_allclose(result[f"{key}/losses"], ref_losses, **TOL, err_msg=f"{key} losses")
