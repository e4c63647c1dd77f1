"""A streaming run on the counting stream, locally or on Ray workers.

    python -m launch.stream [--mode local|async] [--workers W] [--partitions P]
                            [--steps N] [--batch-size B] [--records R]
                            [--average-every K] [--checkpoint-every C] [--checkpoint-dir DIR]
                            [--max-failures F] [--address HOST:PORT] [--num-cpus N] [--log-every L]

``--mode async`` runs W Ray workers (each on partitions ``r, r+W, …``) that average their
parameters every K steps and checkpoint into ``DIR/rank-<r>``; a worker failure rolls
every worker back to the newest step all ranks committed (``max_failures`` times). The
Ray cluster: ``--address`` (checked within 5 s), else ``RAY_ADDRESS`` (as set by ``ray
job submit``), else a new local cluster on 127.0.0.1 that is shut down at the end.
``--mode local`` needs no Ray. A rerun with the same arguments resumes from the
checkpoints. SIGTERM or Ctrl-C stops at the next step (local) or averaging round
(async) with a final checkpoint, exit 0.

Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 2 bad arguments or an unreachable
address, 1 the run failed (a worker kept failing; the message names it, its last error
and the last committed checkpoint). ``ray job stop`` sends SIGTERM, then SIGKILL after
``RAY_JOB_STOP_WAIT_TIME_S`` (default 3 s): a SIGKILL there loses at most the steps since
the last checkpoint, which a rerun redoes.
"""

from __future__ import annotations

import argparse
import signal
import sys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launch.stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="local", choices=["local", "async"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--partitions", type=int, default=None, help="default: --workers")
    p.add_argument("--steps", type=int, default=None, help="stream steps in total (default: the whole stream)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch")
    p.add_argument("--records", type=int, default=400, help="records per partition of the counting stream")
    p.add_argument("--average-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--max-failures", type=int, default=3)
    p.add_argument("--address", default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster started here")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from disttrace.streaming.ray import StreamRunError, WorkerSpec, connect, disconnect, run

    try:
        spec = WorkerSpec(
            mode=args.mode, num_workers=args.workers, num_partitions=args.partitions, batch_size=args.batch_size,
            n_records=args.records, max_steps=args.steps, average_every=args.average_every,
            checkpoint_every=args.checkpoint_every, checkpoint_dir=args.checkpoint_dir,
            max_failures=args.max_failures, address=args.address, num_cpus=args.num_cpus, log_every=args.log_every,
        )
    except ValueError as e:
        print(f"launch.stream: {e}", file=sys.stderr)
        return 2
    started = False
    try:
        if spec.mode == "async":  # before our handlers: ray.init installs its own for SIGTERM
            started = connect(spec.address, num_cpus=spec.num_cpus)
        stop = []

        def on_signal(signum, frame):  # the run stops at its next step or round, with a checkpoint
            stop.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            result = run(spec, should_stop=lambda: bool(stop))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    except StreamRunError as e:
        print(f"launch.stream: {e}", file=sys.stderr)
        return 1
    except (ValueError, ConnectionError) as e:
        print(f"launch.stream: {e}", file=sys.stderr)
        return 2
    finally:
        disconnect(started)
    total = result.ledger.total()
    print(f"done: mode {result.mode}  reason {result.reason}  steps {result.steps}  records {total.count}  "
          f"checkpoint {result.checkpoint_step}  restarts {result.restarts}  {result.elapsed_s:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
