"""Online training on a built-in task, from a config (a thin wrapper of ``disttrace.cli``;
the ``disttrace`` console script is the same command).

    python -m launch.train [--config FILE] [--set KEY=VALUE ...] [--KEY VALUE ...]
                           [--checkpoint-dir DIR] [--restore-step N]

Without ``--config`` the built-in defaults run (the same as ``configs/evidence_lif.yaml``):
online D-RTRL on evidence accumulation, as trials. A config with a ``stream`` section
(``configs/evidence_stream_async.yaml``, ``configs/evidence_stream_sync.yaml``) trains
continuously on the task as a stream, locally or on Ray workers that survive crashes
(see ``disttrace.jobs.run_stream``; under ``ray job submit`` it uses that cluster). With a checkpoint directory the run saves the
whole training state (and its config) every ``checkpoint.every`` steps and at the end,
and a rerun of the same command resumes from the newest good checkpoint (a killed run
loses at most ``checkpoint.every`` steps; the resumed run computes exactly what the
uninterrupted one would have). A checkpoint of another algorithm or model is refused,
naming both configs, before anything is restored.

A trial with a non-finite input, loss or gradient is skipped (``nonfinite: skip``, the
default; the log says so and the running loss leaves it out); after ``max_skips`` in a
row, or at the first with ``nonfinite: raise``, the run stops with one line on stderr
and exit code 3, its checkpoints all finite (a state with a non-finite value is never
saved). Exit codes: 0 done (a stream run also after SIGTERM/SIGINT, with a final
checkpoint), 1 a stream run failed (a worker kept failing), 2 a user error (config,
command line, checkpoint, unreachable address), 3 stopped on non-finite values, 130
interrupted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _config_package():
    """``disttrace.config`` without importing ``disttrace`` (and so JAX) first, so that
    ``--help`` and config errors answer at once: the package imports nothing but its own
    modules, the standard library and yaml."""
    if "disttrace.config" in sys.modules:
        return sys.modules["disttrace.config"]
    if "disttrace" in sys.modules:
        import disttrace.config

        return disttrace.config
    root = Path(importlib.util.find_spec("disttrace").origin).parent / "config"
    spec = importlib.util.spec_from_file_location(
        "disttrace.config", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["disttrace.config"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["disttrace.config"]
        raise
    return module


config = _config_package()
TrainConfig = config.TrainConfig
PROG = "python -m launch.train"


def train(cfg, *, restore_step: int | None = None):
    """Runs ``cfg`` (trials, or a stream with a ``stream`` section); returns ``(trainer or
    stream RunResult, held-out accuracy)``.

    Raises:
      ConfigError: on a value that fails to build, or a checkpoint of another run.
      disttrace.errors.CheckpointError: if ``restore_step`` is incomplete or corrupt.
    """
    from disttrace.cli import run_config

    return run_config(cfg, restore_step=restore_step)


def main(cfg, *, restore_step: int | None = None) -> float:
    """Trains and returns the held-out accuracy."""
    return train(cfg, restore_step=restore_step)[1]


def parse_args(argv=None):
    """``(cfg, namespace)`` from a command line (see ``disttrace.config.parse_args``)."""
    return config.parse_args(argv, prog=PROG, description=__doc__, extra=config.job_arguments)


def parse(argv=None):
    """The :class:`TrainConfig` of a command line."""
    return parse_args(argv)[0]


def cli(argv=None) -> int:
    """The command line (``disttrace.cli``): parsed here first, so that ``--help`` and config
    errors answer without importing JAX; exit codes as ``disttrace.cli``."""
    parsed: list = []
    code = config.run(lambda: parsed.append(parse_args(argv)), prog=PROG)
    if not parsed:
        return code
    from disttrace.cli import execute

    return execute(*parsed[0], prog=PROG)


if __name__ == "__main__":
    sys.exit(cli())
