"""One ``run_worker`` process on a ``CountingStream``, for the exactly-once tests.

``python -m tests.streaming._counting_run --checkpoints DIR --out DIR [--delay S]`` trains
a small leaky-rate regression net on the stream, checkpointing every ``--every`` steps,
resuming from ``DIR`` if it holds a checkpoint; it prints ``progress <step>`` after every
step and writes ``result.json`` (the run's :class:`RunResult`) and ``params.npz`` (the
final parameters, leaf by leaf) into ``--out``. ``--delay`` sleeps before each step, so
a test can kill it mid-run; ``--wait`` starts up, prints ``ready`` and waits for a line on
stdin before it opens the checkpoint directory (a restart prepared while the run it
replaces is still going).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

N_RECORDS, BATCH, PARTITIONS, EVERY = 160, 4, 2, 5  # 2 rows per partition: 80 steps


def build_trainer(batch: int = BATCH, n_in: int = 4, n_out: int = 2):
    """The same net, weights and optimizer in every process (seeded)."""
    import brainstate
    import jax.numpy as jnp
    import optax

    import disttrace as dt

    brainstate.random.seed(0)
    net = brainstate.nn.Sequential(dt.nn.LeakyRate(n_in, 8), dt.nn.LeakyRateReadout(8, n_out, tau=0))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((batch, n_in)), batch_size=batch, loss_fn=dt.train.mse)
    example = (jnp.zeros((batch, n_in)), jnp.zeros((batch, n_out)))
    return dt.train.Trainer(learner, optax.sgd(0.05, momentum=0.9), example)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--every", type=int, default=EVERY)
    parser.add_argument("--wait", action="store_true", help="start up, then wait for a line on stdin before running")
    args = parser.parse_args()

    import jax
    import numpy as np

    from disttrace.checkpoint import Checkpointer
    from disttrace.streaming import CountingStream, run_worker

    trainer = build_trainer()
    stream = CountingStream(N_RECORDS, batch_size=BATCH, num_partitions=PARTITIONS)

    def should_stop() -> bool:
        time.sleep(args.delay)
        return False

    def report(metrics: dict) -> None:
        if "event" not in metrics:
            print(f"progress {metrics['step']}", flush=True)

    if args.wait:  # started ahead (imports, model) while another process still runs in the directory
        print("ready", flush=True)
        sys.stdin.readline()
    with Checkpointer(args.checkpoints, max_to_keep=3) as ckpt:
        result = run_worker(trainer, stream, ckpt, checkpoint_every=args.every, log_every=1, on_metrics=report,
                            should_stop=should_stop)
    os.makedirs(args.out, exist_ok=True)
    summary = {
        "reason": result.reason, "steps": result.steps, "step": result.step, "resumed_from": result.resumed_from,
        "checkpoint_step": result.checkpoint_step, "ledger": result.ledger.to_json(),
        "offsets": {str(p): o for p, o in result.offsets.items()},
    }
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(summary, f)
    leaves = jax.tree.leaves(trainer.params_host())
    np.savez(os.path.join(args.out, "params.npz"), **{f"leaf{i}": a for i, a in enumerate(leaves)})


if __name__ == "__main__":
    main()
