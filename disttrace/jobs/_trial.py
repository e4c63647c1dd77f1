"""The trial job: ``steps`` optimizer updates, each on a batch of fresh trials of the task.

Each update resets hidden states and traces, takes the online gradient over one batch of
trials and applies the optimizer. With a checkpoint directory the run saves the whole
training state (and its config) every ``checkpoint.every`` steps and at the end, and a
rerun resumes from the newest good checkpoint; a checkpoint of another algorithm or
model is refused, naming both configs, before anything is restored.
"""

from __future__ import annotations

import time

from disttrace import config
from disttrace.tasks import per_step_targets

__all__ = ["held_out_metric", "metric_line", "train_trials"]


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


def train_trials(cfg, *, restore_step: int | None = None):
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

    if cfg.keep_freed_memory:
        dt.allocator.keep_freed_memory()
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
            xs, targets, mask = task.sample(trainer.next_key(), cfg.batch_size)
            # from `sample`, not the task's `trials`: a task that only overrides `sample` (a wrapper,
            # a user's subclass) is trained on what it samples
            ys = per_step_targets(getattr(task, "kind", "classification"), targets, mask)
            loss = trainer.train_trial(xs, ys)
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
    # the held-out metric on fresh trials, evaluated with the training batch size
    eval_key = jax.random.PRNGKey(10_000 + cfg.seed)
    n = max(1, cfg.eval_batch // cfg.batch_size)
    value = sum(held_out_metric(trainer, task, *task.sample(jax.random.fold_in(eval_key, i), cfg.batch_size))
                for i in range(n)) / n
    print(f"{metric_line(task, value)} on {n * cfg.batch_size} trials", flush=True)
    return trainer, value


def held_out_metric(trainer, task, xs, targets, mask) -> float:
    """The task's metric (``task.metric``: accuracy, or MSE for regression) of the
    trainer's model on held-out trials; ``Trainer.evaluate`` for a task without one."""
    if hasattr(task, "metric"):
        return task.metric(trainer.predict(xs), targets, mask)
    return trainer.evaluate(xs, targets, mask)


def metric_line(task, value: float) -> str:
    """``held-out accuracy: 0.949 (chance 0.5)`` or ``held-out mse: 0.0123``."""
    if getattr(task, "kind", "classification") == "regression":
        return f"held-out mse: {value:.4f}"
    return f"held-out accuracy: {value:.3f} (chance {1 / task.n_out:.3g})"
