"""The ``disttrace`` command: run a training config, as trials or as a stream.

    disttrace [--config FILE] [--set KEY=VALUE ...] [--KEY VALUE ...] [--restore-step N]

The same as ``python -m launch.train``. Without a ``stream`` section the job trains on
trials (``disttrace.jobs.train_trials``); with one it trains continuously on the task as
a stream, locally or on Ray workers (``disttrace.jobs.run_stream``; the Ray cluster is
``stream.address``, else ``RAY_ADDRESS`` as set by ``ray job submit``, else a new local
one).

Exit codes: 0 done (also after SIGTERM/SIGINT stopped a stream run cleanly, with a final
checkpoint); 1 a stream run failed (a worker kept failing beyond ``stream.max_failures``:
the message names it, its last error and the last committed checkpoint); 2 a user error
(config, command line, checkpoint of another run, unreachable address); 3 a trial run
stopped on non-finite values; 130 a trial run interrupted.
"""

from __future__ import annotations

import argparse
import sys

from disttrace import config

__all__ = ["execute", "main", "parse_args", "run_config"]

PROG = "disttrace"


def run_config(cfg, *, restore_step: int | None = None):
    """Runs ``cfg``; returns ``(trainer or RunResult, held-out accuracy)``."""
    if cfg.stream is not None:
        if restore_step is not None:
            raise config.ConfigError(
                "restore_step", "applies to trial runs; a stream run resumes from the newest committed checkpoint of "
                "checkpoint.directory (delete newer steps to go back further)",
            )
        from disttrace.jobs import run_stream

        return run_stream(cfg)
    from disttrace.jobs import train_trials

    return train_trials(cfg, restore_step=restore_step)


def execute(cfg, args: argparse.Namespace, *, prog: str = PROG) -> int:
    """Runs a parsed command line; returns its exit code (module docstring)."""
    from disttrace.errors import NonFiniteError

    outcome: list[tuple[int, str]] = []

    def job():
        try:
            run_config(cfg, restore_step=args.restore_step)
        except NonFiniteError as e:
            outcome.append((3, f"stopped: {e}"))
        except Exception as e:
            if type(e).__name__ == "StreamRunError":  # without importing ray here
                outcome.append((1, str(e)))
            else:
                raise

    code = config.run(job, prog=prog)
    if outcome:
        print(f"{prog}: {outcome[0][1]}", file=sys.stderr)
        return outcome[0][0]
    return code


def parse_args(argv=None, *, prog: str = PROG, description: str | None = None):
    """``(cfg, namespace)`` of a command line."""
    return config.parse_args(argv, prog=prog, description=description or __doc__, extra=config.job_arguments)


def main(argv=None, *, prog: str = PROG) -> int:
    """The console script: parses, runs, returns the exit code."""
    parsed: list = []
    code = config.run(lambda: parsed.append(parse_args(argv, prog=prog)), prog=prog)
    if not parsed:
        return code
    return execute(*parsed[0], prog=prog)


if __name__ == "__main__":
    sys.exit(main())
