"""The stream job: a ``TrainConfig`` with a ``stream`` section, run by
``disttrace.streaming.ray.run`` — locally, or on Ray workers (sync or async).

What it adds to the driver:

- the factories the workers call (:func:`config_trainer`, :func:`config_source`), which
  rebuild the model, the optimizer (``optax.MultiSteps`` when ``stream.update_every`` >
  1) and the source from the config carried in the :class:`WorkerSpec`;
- checks made before Ray starts: a checkpoint directory written by another run (another
  model or algorithm, another ``num_partitions``, another source) is refused, naming both
  values and the checkpoint;
- the output: one progress line every ``log_every`` steps (step, records, loss, held-out
  accuracy where the task has one, records/s, restarts), a JSONL metrics file
  (``stream.metrics_file``: the progress dicts plus ``{"event": "restart" | "checkpoint"
  | "stop", ...}``), a learning-curve PNG beside it when matplotlib is installed, and the
  final held-out accuracy;
- SIGTERM and SIGINT stop every worker at the next step (local), averaging round
  (async) or collective check (sync) with a final checkpoint, and the job exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from disttrace import config
from disttrace.jobs._trial import held_out_metric, metric_line

__all__ = ["config_source", "config_trainer", "run_stream", "worker_spec"]


def _config(spec) -> config.TrainConfig:
    return config.from_data(config.TrainConfig, spec.config)


def _is_stream_task(cfg) -> bool:
    return bool(getattr(cfg.task, "is_stream", False))


def config_trainer(spec, batch_size: int, mesh=None):
    """The ``Trainer`` of ``spec.config`` for ``batch_size`` rows (on ``mesh``): the same
    seed, so every worker starts from the same parameters."""
    import brainstate
    import jax.numpy as jnp
    import optax

    import disttrace as dt

    cfg = _config(spec)
    brainstate.random.seed(cfg.seed)
    task = cfg.task.build()
    net = cfg.model.build(task.n_in, task.n_out)
    learner = dt.compile(net, cfg.algorithm.build(), jnp.zeros((batch_size, task.n_in)), batch_size=batch_size)
    optimizer = cfg.optimizer.build()
    if cfg.stream.update_every > 1:
        # one update per `update_every` steps (the mean of their gradients); update_every = T reproduces
        # one update per trial
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=cfg.stream.update_every)
    return dt.train.Trainer(
        learner, optimizer, mesh=mesh, loss_fn=cfg.loss.build(), seed=cfg.seed, nonfinite=cfg.nonfinite,
        max_skips=cfg.max_skips,
    )


def config_source(spec, rank: int):
    """Worker ``rank``'s source of ``spec.config`` over its partitions ``rank, rank+W, …``."""
    from disttrace import streaming

    cfg = _config(spec)
    s, parts, p = cfg.stream, spec.partitions_of(rank), spec.num_partitions
    if s.source == "task" and _is_stream_task(cfg):
        t = cfg.task
        return streaming.CountingStream(t.n_records, cfg.batch_size, parts, p, n_in=t.n_in, n_out=t.n_out,
                                        seed=cfg.seed)
    if s.source == "task":
        return streaming.TaskStream(cfg.task.build(), cfg.batch_size, parts, p, seed=cfg.seed)
    if s.source == "directory":
        return streaming.DirectoryStream(s.directory, parts, follow=s.follow, num_partitions=p)
    from disttrace.streaming.ray import RayDataStream

    return RayDataStream.from_directory(s.directory, cfg.batch_size, parts, p)


def worker_spec(cfg):
    """The :class:`~disttrace.streaming.ray.WorkerSpec` of a stream config.

    Raises:
      ConfigError: if sync or async mode has no ``checkpoint.directory`` (restarts
        resume from it).
    """
    from disttrace.streaming.ray import WorkerSpec

    s = cfg.stream
    directory = cfg.checkpoint.directory
    if directory is None and s.mode != "local":
        raise config.ConfigError(
            "checkpoint.directory", f"must be set in mode {s.mode!r}: group restarts and rollbacks resume from it; "
            "got null (e.g. --set checkpoint.directory=runs/stream)",
        )
    if directory is not None and "://" not in directory:
        directory = os.path.abspath(directory)  # the workers' working directory may differ from the driver's
    trial = not _is_stream_task(cfg) and s.source == "task"
    return WorkerSpec(
        mode=s.mode, num_workers=s.num_workers, num_partitions=s.partitions, batch_size=cfg.batch_size,
        seed=cfg.seed, max_steps=cfg.steps, average_every=s.average_every,
        checkpoint_every=s.checkpoint_every or cfg.checkpoint.every, checkpoint_dir=directory,
        max_to_keep=max(cfg.checkpoint.max_to_keep, 2) if s.mode == "async" else cfg.checkpoint.max_to_keep,
        max_failures=s.max_failures, devices_per_worker=s.devices_per_worker, address=s.address,
        num_cpus=s.num_cpus, resources_per_worker=s.resources_per_worker, log_every=cfg.log_every,
        stall_timeout_s=s.stall_timeout_s, trainer_factory="disttrace.jobs._stream:config_trainer",
        source_factory="disttrace.jobs._stream:config_source",
        reset_every=cfg.task.build().length if trial else None,
        evaluate_every_log=trial and s.mode != "sync", tpu_slice=s.tpu_slice,
        config={**config.to_data(cfg), "checkpoint": {**config.to_data(cfg.checkpoint), "directory": directory}},
        keep_freed_memory=cfg.keep_freed_memory,
    )


def _check_source(cfg, spec) -> None:
    """Opens the data a run reads once before Ray starts, so that a missing directory or a
    malformed file is a config error naming it, not a failure of every worker."""
    s = cfg.stream
    if s.source == "ray_data":  # reading it would start Ray in this process: only the folders are checked
        for p in range(spec.num_partitions):
            path = os.path.join(s.directory, f"p{p}")
            if "://" not in path and not os.path.isdir(path):
                raise config.ConfigError("stream.directory", f"partition {p}'s folder {path} does not exist")
        return
    try:
        source = config_source(spec, 0)
    except (OSError, ValueError) as e:
        raise config.ConfigError("stream.directory" if s.source == "directory" else "stream.source", str(e)) from None
    source.close()


def _check_resume(cfg, spec) -> int | None:
    """Refuses a checkpoint directory written by another run, before Ray starts; returns
    the step a run resumes from (``None``: a fresh start)."""
    if spec.checkpoint_dir is None:
        return None
    from disttrace.checkpoint import Checkpointer
    from disttrace.streaming.ray import worker_directory

    directory = worker_directory(spec, 0)
    if "://" not in directory and not os.path.isdir(directory):
        return None
    with Checkpointer(directory, read_only=True) as reader:
        step = reader.latest_step()
        if step is None:
            return None
        meta = reader.meta(step)
    saved, mine = meta.get("config") or {}, config.to_data(cfg)
    for section in ("algorithm", "model", "task"):
        if saved and saved.get(section) != mine[section]:
            raise config.ConfigError(
                "checkpoint.directory", f"{directory} (step {step}) holds the state of another run: it was written "
                f"with {section} {saved.get(section)}; this run has {mine[section]}; use another checkpoint.directory, "
                f"or the checkpoint's {section}",
            )
    stream = meta.get("stream") or {}
    if stream.get("num_partitions") not in (None, spec.num_partitions):
        raise config.ConfigError(
            "stream.num_partitions", f"is {spec.num_partitions}, but the checkpoint at step {step} in {directory} was "
            f"written with num_partitions {stream['num_partitions']}; a run keeps its partitions for its lifetime: "
            f"resume with {stream['num_partitions']}, or use another checkpoint.directory",
        )
    source = config_source(spec, 0)
    try:
        fingerprint = source.fingerprint()
    finally:
        source.close()
    saved_source = stream.get("source") or {}
    if saved_source and saved_source.get("fingerprint") != fingerprint:
        raise config.ConfigError(
            "stream.source", f"the checkpoint at step {step} in {directory} was written for the source "
            f"{saved_source}, but this config's source is {{'kind': {type(source).__name__!r}, 'fingerprint': "
            f"{fingerprint!r}}}; resume with the same stream (task, batch_size, seed, data), or use another "
            "checkpoint.directory",
        )
    return step


class _Metrics:
    """Prints progress lines and events, and appends them to the JSONL metrics file."""

    def __init__(self, path: str | None):
        self.path, self.rows = path, []
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def __call__(self, rank: int, metrics: dict) -> None:
        from disttrace.streaming import format_metrics

        record = {"time": time.time(), "rank": rank, **metrics}
        if "event" in metrics:
            print(f"rank {rank}  {format_metrics(metrics)}", flush=True)
            self.write(record)
        elif rank == 0:
            print(format_metrics(metrics), flush=True)
            self.rows.append(metrics)
            self.write(record)

    def plot(self) -> str | None:
        """A learning-curve PNG beside the metrics file (``None`` without matplotlib)."""
        if not self.path or not self.rows:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        steps = [r["step"] for r in self.rows]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [r["loss"] for r in self.rows], label="loss")
        ax.set_xlabel("stream step")
        ax.set_ylabel("loss")
        accuracy = [(r["step"], r["accuracy"]) for r in self.rows if r.get("accuracy") is not None]
        if accuracy:
            twin = ax.twinx()
            twin.plot(*zip(*accuracy), color="tab:orange", label="held-out accuracy")
            twin.set_ylabel("held-out accuracy")
            twin.set_ylim(0, 1)
        fig.tight_layout()
        out = os.path.splitext(self.path)[0] + ".png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def held_out_accuracy(cfg, spec, params) -> float | None:
    """The task's held-out metric (accuracy, or MSE for regression) of ``params`` on
    ``eval_batch`` held-out trials (``None``: the task has none), with a model built for
    ``batch_size`` rows."""
    if _is_stream_task(cfg) or cfg.stream.source != "task":
        return None
    from disttrace.streaming import TaskStream

    trainer = config_trainer(spec, cfg.batch_size)
    trainer.set_params(params)
    task = cfg.task.build()
    stream = TaskStream(task, cfg.batch_size, None, spec.num_partitions, seed=cfg.seed)
    n = max(1, cfg.eval_batch // cfg.batch_size)
    return sum(held_out_metric(trainer, task, *stream.held_out(cfg.batch_size, seed=1 + i)) for i in range(n)) / n


def run_stream(cfg, *, should_stop=None):
    """Runs the stream job of ``cfg``; returns ``(RunResult, held-out accuracy or None)``.

    Raises:
      ConfigError: a bad combination, a checkpoint of another run, an unreachable address.
      disttrace.streaming.ray.StreamRunError: a worker kept failing.
    """
    import jax

    import disttrace as dt
    from disttrace.streaming.ray import connect, disconnect, run

    s = cfg.stream
    spec = worker_spec(cfg)
    _check_source(cfg, spec)
    resume = _check_resume(cfg, spec)
    where = "this process" if s.mode == "local" else f"{s.num_workers} Ray workers"
    print(f"disttrace {dt.__version__}: {cfg.algorithm.name} on the {cfg.task.name} stream, {s.mode} mode on {where}, "
          f"global batch {cfg.batch_size} in {spec.num_partitions} partitions, {cfg.steps} steps"
          + (f", resuming from step {resume}" if resume is not None else "")
          + f", {jax.devices()[0].platform}", flush=True)
    metrics = _Metrics(s.metrics_file)
    started = False
    try:
        if s.mode != "local":
            # before our handlers: ray.init installs its own for SIGTERM
            try:
                started = connect(s.address, num_cpus=s.num_cpus)
            except (ValueError, ConnectionError) as e:
                raise config.ConfigError("stream.address", str(e)) from None
        stop: list[int] = []

        def on_signal(signum, frame):  # the run stops at its next step, round or check, with a checkpoint
            if not stop:
                print(f"received signal {signum}: stopping at the next step with a final checkpoint", flush=True)
            stop.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            result = run(spec, on_metrics=metrics, should_stop=lambda: bool(stop) or bool(should_stop and should_stop()))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        disconnect(started)
    total = result.ledger.total()
    print(f"done: mode {result.mode}  reason {result.reason}  steps {result.steps}  records {total.count}  "
          f"checkpoint {result.checkpoint_step}  restarts {result.restarts}  {result.elapsed_s:.1f} s", flush=True)
    accuracy = held_out_accuracy(cfg, spec, result.params)
    if accuracy is not None:
        n = max(1, cfg.eval_batch // cfg.batch_size) * cfg.batch_size
        print(f"{metric_line(cfg.task.build(), accuracy)} on {n} trials", flush=True)
    metrics.write({"time": time.time(), "event": "final", "reason": result.reason, "steps": result.steps,
                   "records": total.count, "accuracy": accuracy, "restarts": result.restarts})
    png = metrics.plot()
    if png:
        print(f"learning curve: {png}", flush=True)
    return result, accuracy
