"""One process of the 2-process ``jax.distributed`` CPU run of ``test_multihost.py``.

Usage (started by the test, once per process)::

    python -m tests.distributed.multihost_worker --process-id I --num-processes 2 \\
        --port PORT --local-devices 2 --workdir DIR

Reads ``DIR/inputs.npz`` (data and initial parameters), runs ``cases.T`` sharded steps
for every (net, algorithm) of ``cases`` on every layout of ``LAYOUTS`` over the
global mesh, and (process 0) writes the gathered parameters, learner state and losses
to ``DIR/result.npz``.
"""

import argparse
import os
import sys


def _args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--process-id", type=int, required=True)
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--local-devices", type=int, required=True)
    p.add_argument("--workdir", required=True)
    return p.parse_args(argv)


def main(argv=None):
    a = _args(argv)
    # before jax is imported: this process's share of the global devices
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.local_devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import warnings

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    import disttrace as dt
    import disttrace.distributed as dd
    from tests.distributed import cases

    warnings.filterwarnings("ignore", "disttrace.*same-step")  # GRU's reset gate: expected
    dd.initialize(f"localhost:{a.port}", a.num_processes, a.process_id, initialization_timeout=120)
    n = jax.device_count()
    assert jax.process_count() == a.num_processes and n == a.num_processes * a.local_devices
    layouts = [(n, 1), (n // 2, 2), (1, n)]  # data across processes; both; model across processes
    inputs = np.load(os.path.join(a.workdir, "inputs.npz"))
    xs, ys = inputs["xs"], inputs["ys"]
    out = {}
    for net in sorted(cases.NETS):
        for algo in sorted(cases.ALGOS):
            learner = cases.build(net, algo)
            tree = jax.tree.structure(learner.params())
            init = [inputs[f"{net}/{algo}/init/{i}"] for i in range(tree.num_leaves)]
            learner.binding.write(params=jax.tree.unflatten(tree, init))
            for data, model in layouts:
                rules = dt.train.partition_rules(learner, cases.OPTIMIZER, dd.make_mesh(data, model), (xs[0], ys[0]))
                state = dt.train.init_train_state(learner, cases.OPTIMIZER, rules)
                step = dt.train.make_train_step(learner, cases.OPTIMIZER, rules)
                # the data axis spans both processes: feed each process only its rows
                local = data % a.num_processes == 0
                rows = slice(a.process_id * cases.B // a.num_processes, (a.process_id + 1) * cases.B // a.num_processes)
                losses = []
                for t in range(xs.shape[0]):
                    if local:
                        batch = dd.shard_batch(rules, xs[t][rows], ys[t][rows], process_local=True)
                    else:
                        batch = dd.shard_batch(rules, xs[t], ys[t])
                    state, loss = step(state, *batch)
                    losses.append(loss)
                got = multihost_utils.process_allgather((state.params, state.learner_state, losses), tiled=True)
                key = f"{net}/{algo}/{data}x{model}"
                for i, leaf in enumerate(jax.tree.leaves(got[0])):
                    out[f"{key}/params/{i}"] = leaf
                for i, leaf in enumerate(jax.tree.leaves(got[1])):
                    out[f"{key}/state/{i}"] = leaf
                out[f"{key}/losses"] = np.stack(got[2])
    if a.process_id == 0:
        np.savez(os.path.join(a.workdir, "result.npz"), **out)
    jax.distributed.shutdown()
    print(f"process {a.process_id}: done, {len(out)} arrays", flush=True)


if __name__ == "__main__":
    sys.exit(main())
