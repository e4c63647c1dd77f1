"""Online training on a built-in task, from a config.

    python -m launch.train [--config FILE] [--set KEY=VALUE ...] [--KEY VALUE ...]
                           [--checkpoint-dir DIR] [--restore-step N]

Without ``--config`` the built-in defaults run (the same as ``configs/evidence_lif.yaml``):
online D-RTRL on evidence accumulation. With a checkpoint directory the run saves the
whole training state (and its config) every ``checkpoint.every`` steps and at the end,
and a rerun of the same command resumes from the newest good checkpoint (a killed run
loses at most ``checkpoint.every`` steps; the resumed run computes exactly what the
uninterrupted one would have). A checkpoint of another algorithm or model is refused,
naming both configs, before anything is restored.

A trial with a non-finite input, loss or gradient is skipped (``nonfinite: skip``, the
default; the log says so and the running loss leaves it out); after ``max_skips`` in a
row, or at the first with ``nonfinite: raise``, the run stops with one line on stderr
and exit code 3, its checkpoints all finite (a state with a non-finite value is never
saved). Exit codes: 0 done, 2 a user error (config, command line, checkpoint), 3 stopped
on non-finite values, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
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


def _same_run(saved: dict | None, cfg, directory: str) -> None:
    """Refuses a checkpoint whose saved config has another algorithm or model (read with
    ``Checkpointer.meta`` before restoring, so the message names both configs even when
    the states' shapes differ)."""
    if saved is None:
        return
    mine = config.to_data(cfg)
    for section in ("algorithm", "model"):
        if saved.get(section) != mine[section]:
            raise config.ConfigError(
                "checkpoint.directory",
                f"{directory} holds the state of another run: it was written with {section} {saved.get(section)}; "
                f"this run has {mine[section]} (this run: algorithm {mine['algorithm']}, model {mine['model']}; "
                f"the checkpoint's: algorithm {saved.get('algorithm')}, model {saved.get('model')}); use another "
                f"checkpoint.directory, or the checkpoint's {section}",
            )


def train(cfg, *, restore_step: int | None = None):
    """Trains (resuming from ``cfg.checkpoint.directory`` if it has a checkpoint, or from
    ``restore_step``); returns ``(trainer, held-out accuracy)``.

    Raises:
      ConfigError: on a value that fails to build, or a checkpoint of another run.
      disttrace.errors.CheckpointError: if ``restore_step`` is incomplete or corrupt.
    """
    import brainstate
    import jax
    import jax.numpy as jnp

    import disttrace as dt

    brainstate.random.seed(cfg.seed)
    task = cfg.task.build()
    net = cfg.model.build(task.n_in, task.n_out)
    learner = dt.compile(net, cfg.algorithm.build(), jnp.zeros((cfg.batch_size, task.n_in)), batch_size=cfg.batch_size)
    trainer = dt.train.Trainer(
        learner, cfg.optimizer.build(), mesh=cfg.mesh.build(), loss_fn=cfg.loss.build(), chunk_size=cfg.chunk_size,
        seed=cfg.seed, nonfinite=cfg.nonfinite, max_skips=cfg.max_skips,
    )
    model = cfg.model
    print(f"disttrace {dt.__version__}: {cfg.algorithm.name} on {cfg.task.name} (T={task.length}), "
          f"{model.name} ({', '.join(f'{k}={v}' for k, v in config.to_data(model).items() if k != 'name')}), "
          f"batch {cfg.batch_size}, {jax.devices()[0].platform}", flush=True)
    running = None
    ckpt = cfg.checkpoint.build()
    if restore_step is not None and (isinstance(restore_step, bool) or not isinstance(restore_step, int)
                                     or restore_step < 0):
        raise config.ConfigError("restore_step", f"must be a checkpoint step (an int >= 0); got {restore_step!r}")
    if ckpt is None and restore_step is not None:
        raise config.ConfigError("checkpoint.directory", "is null; --restore-step needs a checkpoint directory")
    try:
        if ckpt is not None and (restore_step is not None or ckpt.latest_step() is not None):
            step = ckpt.latest_step() if restore_step is None else restore_step
            try:
                saved = ckpt.meta(step)
            except FileNotFoundError as e:
                raise config.ConfigError("restore_step", str(e)) from None
            _same_run(saved.get("config"), cfg, ckpt.directory)  # before restoring: both configs named
            try:
                meta = trainer.restore(ckpt, step)
            except ValueError as e:  # the saved state does not fit this run's algorithm or model
                raise config.ConfigError(
                    "checkpoint.directory",
                    f"{ckpt.directory} holds the state of another run (this run: algorithm "
                    f"{config.to_data(cfg.algorithm)}, model {config.to_data(cfg.model)}): {e}",
                ) from None
            except FileNotFoundError as e:
                raise config.ConfigError("restore_step", str(e)) from None
            print(f"resumed from {ckpt.directory} at step {trainer.step_count}", flush=True)
            newer = [s for s in ckpt.steps() if s > trainer.step_count]
            if newer and cfg.steps > trainer.step_count:
                raise config.ConfigError(
                    "restore_step", f"{ckpt.directory} has steps {newer} after the restored step "
                    f"{trainer.step_count}, which training on would overwrite; train into another "
                    f"checkpoint.directory, or set steps to {trainer.step_count} to evaluate only",
                )
            running = meta.get("running_loss")
        start = time.perf_counter()
        skipped = trainer.nonfinite_counts()["skipped"]
        for step in range(trainer.step_count + 1, cfg.steps + 1):
            xs, labels, mask = task.sample(trainer.next_key(), cfg.batch_size)
            loss = trainer.train_trial(xs, dt.train.label_targets(labels, mask))
            counts = trainer.nonfinite_counts()
            if counts["skipped"] > skipped:  # the update was not applied: the running loss leaves it out
                skipped = counts["skipped"]
                print(f"step {step:5d}  skipped: non-finite value in {counts['leaf']} (loss {loss:.4f}; update not "
                      f"applied; {skipped} skipped in all, {counts['consecutive']} in a row)", flush=True)
            else:
                running = loss if running is None else 0.9 * running + 0.1 * loss
            if step % cfg.log_every == 0 or step == cfg.steps:
                shown = "   n/a" if running is None else f"{running:.4f}"
                note = f"  skipped {skipped}" if skipped else ""
                print(f"step {step:5d}  loss {shown}{note}  {time.perf_counter() - start:7.1f}s", flush=True)
            if ckpt is not None and (step % cfg.checkpoint.every == 0 or step == cfg.steps):
                trainer.save(ckpt, meta={"running_loss": running, "config": config.to_data(cfg)}, force=True)
    finally:
        if ckpt is not None:
            ckpt.close()
    # held-out accuracy on fresh trials, evaluated with the training batch size
    eval_key = jax.random.PRNGKey(10_000 + cfg.seed)
    n = max(1, cfg.eval_batch // cfg.batch_size)
    acc = sum(trainer.evaluate(*task.sample(jax.random.fold_in(eval_key, i), cfg.batch_size)) for i in range(n)) / n
    print(f"held-out accuracy: {acc:.3f} (chance 0.5) on {n * cfg.batch_size} trials", flush=True)
    return trainer, acc


def main(cfg, *, restore_step: int | None = None) -> float:
    """Trains and returns the held-out accuracy."""
    return train(cfg, restore_step=restore_step)[1]


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restore_step", "--restore-step", type=int, default=None, metavar="N",
                        help="resume from checkpoint step N (an error if it is missing or corrupt)")


def parse_args(argv=None):
    """``(cfg, namespace)`` from a command line (see ``disttrace.config.parse_args``)."""
    return config.parse_args(argv, prog=PROG, description=__doc__, extra=_extra)


def parse(argv=None):
    """The :class:`TrainConfig` of a command line."""
    return parse_args(argv)[0]


def cli(argv=None) -> int:
    """The command line: user errors are one line and exit code 2; a stop on non-finite
    values one line and 3; Ctrl-C is 130."""

    stopped = []

    def job():
        cfg, args = parse_args(argv)
        from disttrace.errors import NonFiniteError  # after parsing: --help answers without JAX

        try:
            main(cfg, restore_step=args.restore_step)
        except NonFiniteError as e:
            stopped.append(e)

    code = config.run(job, prog=PROG)
    if stopped:
        print(f"{PROG}: stopped: {stopped[0]}", file=sys.stderr)
        return 3
    return code


if __name__ == "__main__":
    sys.exit(cli())
