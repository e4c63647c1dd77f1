"""``run_worker``: the loop of one online-learning worker over a stream, resumable
exactly once.

Each step reads a batch from the source, applies one ``trainer.step`` and adds the
batch's record ids to the ledger. The source's offsets and the ledger are *pending*
until the next checkpoint: they enter the checkpoint's JSON meta,

.. code-block:: python

    {"stream": {"num_partitions": P, "offsets": {"<p>": offset}, "ledger": {"<p>": {"count", "id_sum",
     "id_sq_sum"}}, "source": {"kind": ..., "fingerprint": ...}, "steps": n}}

saved by ``trainer.save`` beside the state that has seen exactly those records. So the
committed offsets and ledger change only inside a committed checkpoint, and a restarted
worker — which restores the newest good checkpoint and seeks the source to its offsets —
reads every record after the checkpoint once and none before it twice: after any number
of crashes the final ledger is the closed form of each record used once, and (with a
deterministic trainer) the final parameters are bitwise those of an uninterrupted run.
What a crash loses is the work since the last checkpoint, which is redone.

The loop knows nothing of Ray or of other processes: the trainer, the source and the
checkpointer are injected, and ``gather_meta`` lets a multi-process caller make the meta
the same on every process before each save (the union of every worker's partitions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from disttrace import checks
from disttrace.streaming._ledger import Ledger
from disttrace.streaming._partitions import offsets_for
from disttrace.streaming._source import StreamSource

__all__ = ["RunResult", "format_metrics", "run_worker", "stream_meta"]

_KEY = "stream"


class RunResult(NamedTuple):
    """What :func:`run_worker` did.

    Attributes:
      reason: why it returned: ``"end"`` (the stream ended), ``"max_steps"`` or
        ``"stopped"`` (``should_stop()`` was true).
      steps: stream steps consumed in total, by this call and the runs it resumed.
      step: ``trainer.step_count`` at the end.
      checkpoint_step: the newest checkpoint (committed when ``run_worker`` returns), or
        ``None``.
      resumed_from: the checkpoint step this call restored, or ``None`` (a fresh start).
      offsets: ``{partition: offset}`` of the source's partitions in that checkpoint
        (without a checkpointer: where the source stands).
      ledger: the ledger of the source's partitions in that checkpoint (likewise).
      records: records (rows × steps) this call consumed.
      elapsed_s: seconds this call ran.
    """

    reason: str
    steps: int
    step: int
    checkpoint_step: int | None
    resumed_from: int | None
    offsets: dict
    ledger: Ledger
    records: int
    elapsed_s: float


def stream_meta(source: StreamSource, ledger: Ledger, steps: int) -> dict:
    """The checkpoint meta of a stream position: ``{"stream": {...}}`` (module docstring)."""
    return {
        _KEY: {
            "num_partitions": source.num_partitions,
            "offsets": {str(p): off for p, off in source.offsets().items()},
            "ledger": ledger.to_json(),
            "source": {"kind": type(source).__name__, "fingerprint": source.fingerprint()},
            "steps": steps,
        }
    }


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """One line of a progress dict or an event, as :func:`run_worker` prints it.

    Example:
      >>> format_metrics({"step": 20, "records": 640, "loss": 0.5, "records_per_s": 1234.5, "restarts": 0})
      'step 20  records 640  loss 0.5000  records/s 1234  restarts 0'
    """
    if "event" in metrics:
        rest = "  ".join(f"{k} {v}" for k, v in metrics.items() if k != "event")
        return f"[{metrics['event']}] {rest}"
    parts = [f"step {metrics['step']}", f"records {metrics['records']}", f"loss {metrics['loss']:.4f}"]
    if metrics.get("accuracy") is not None:
        parts.append(f"accuracy {metrics['accuracy']:.3f}")
    parts += [f"records/s {metrics['records_per_s']:.0f}", f"restarts {metrics['restarts']}"]
    return "  ".join(parts)


def _print(metrics: Mapping[str, Any]) -> None:
    print(format_metrics(metrics), flush=True)


def _scalar(value) -> float:
    # a loss replicated over several processes is not fully addressable; every copy is equal
    if getattr(value, "is_fully_addressable", True) is False:
        value = value.addressable_data(0)
    return float(value)


def _check_callable(who: str, name: str, value, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise checks.ArgumentTypeError(f"{who}: argument {name!r} must be callable or None; got {type(value).__name__}")


def _restore(trainer, source: StreamSource, checkpointer, step: int) -> tuple[dict[int, Any], Ledger, int]:
    """Restores ``step`` into the trainer; returns the source's offsets, ledger and stream steps."""
    meta = trainer.restore(checkpointer, step)
    where = f"the checkpoint at step {step} in {checkpointer.directory}"
    stream = meta.get(_KEY) if isinstance(meta, Mapping) else None
    keys = ("num_partitions", "offsets", "ledger", "source", "steps")
    if not isinstance(stream, Mapping) or any(k not in stream for k in keys):
        raise ValueError(
            f"run_worker: {where} has no stream position (meta['stream'] with {list(keys)}): it was not written by "
            "run_worker; use an empty checkpoint directory for a new stream run"
        )
    if stream["num_partitions"] != source.num_partitions:
        raise ValueError(
            f"run_worker: {where} was written with num_partitions {stream['num_partitions']}, but the source has "
            f"num_partitions {source.num_partitions}; a run keeps its partitions for its lifetime: resume with "
            f"num_partitions {stream['num_partitions']}, or start a new run in another checkpoint directory"
        )
    saved = stream["source"]
    if not isinstance(saved, Mapping) or saved.get("fingerprint") != source.fingerprint():
        raise ValueError(
            f"run_worker: {where} was written for the source {saved!r}, but this source is "
            f"{{'kind': {type(source).__name__!r}, 'fingerprint': {source.fingerprint()!r}}} ({source!r}); resume "
            "with the same stream, or start a new run in another checkpoint directory"
        )
    offsets = offsets_for(f"run_worker ({where})", stream["offsets"], source.partitions)
    ledger = Ledger.from_json(stream["ledger"])
    missing = [p for p in source.partitions if p not in ledger.partitions]
    if missing:
        raise ValueError(f"run_worker: {where} has no ledger of partitions {missing}")
    return offsets, ledger.restrict(source.partitions), checks.non_negative_int("run_worker", "meta['stream']['steps']", stream["steps"])


def run_worker(
    trainer,
    source: StreamSource,
    checkpointer,
    *,
    checkpoint_every: int | None,
    max_steps: int | None = None,
    reset_every: int | None = None,
    log_every: int | None = 100,
    on_metrics: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    gather_meta: Callable[[dict], dict] | None = None,
    after_step: Callable[[int], None] | None = None,
    evaluate: Callable[[], float] | None = None,
    process_local: bool = False,
    restarts: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Trains ``trainer`` on ``source``, step by step, checkpointing the stream position
    with the state, from the newest good checkpoint if there is one (module docstring).

    Resuming: when ``checkpointer`` has a good step, the trainer restores it
    (``trainer.restore``), the saved ``num_partitions`` and source fingerprint must equal
    the source's, the source seeks to the saved offsets of its partitions and the ledger
    starts from the saved one.

    Each step: ``trainer.reset_state()`` first if ``steps % reset_every == 0`` (trial
    boundaries; ``steps`` counts stream steps from the start of the run, across
    restarts), ``batch = source.next()``, ``trainer.step(batch.x, batch.y)``, the batch's
    ids into the ledger, ``after_step(steps)``. Every ``checkpoint_every`` steps, ``trainer.save(checkpointer,
    meta, force=True)`` (this loop owns the interval). When the stream ends, ``max_steps``
    is reached or ``should_stop()`` is true, a final checkpoint is forced (unless the last
    step was just saved) and waited for. An exception ends the run without a save: the
    last checkpoint is then where a rerun resumes.

    Args:
      trainer: a ``disttrace.train.Trainer`` (``step``, ``reset_state``, ``save``,
        ``restore``, ``step_count``).
      source: a :class:`~disttrace.streaming.StreamSource`.
      checkpointer: a ``disttrace.checkpoint.Checkpointer`` (one writer per directory),
        or ``None`` to run without checkpoints (not resumable).
      checkpoint_every: stream steps between checkpoints (``None``: the final one only).
      max_steps: stop when ``steps`` reaches this (a total over restarts; ``None``: run
        until the stream ends or ``should_stop``).
      reset_every: steps per trial of a trial stream (``TaskStream.trial_length``);
        ``None``: never reset.
      log_every: steps between progress reports (``None``: none).
      on_metrics: receives each progress dict (``step``, ``trainer_step``, ``records``,
        ``loss`` (the mean since the last report), ``accuracy`` (or ``None``),
        ``records_per_s``, ``restarts``) and each event dict (``{"event": "resume" |
        "checkpoint" | "stop", ...}``). Default: print one line each
        (:func:`format_metrics`).
      should_stop: asked before every step; true ends the run cleanly (final checkpoint).
      gather_meta: ``meta -> meta`` before every save, to make the meta the same on every
        process of a multi-process job (identity by default). It receives this worker's
        partitions; a restored ledger is cut back to the source's partitions.
      after_step: ``after_step(steps)`` after each step's update and ledger entry, before
        that step's checkpoint: e.g. an async mode's parameter averaging every K steps
        (``trainer.set_params``), so that a checkpoint at a multiple of K holds the mean.
      evaluate: ``() -> accuracy`` at each progress report (e.g. ``lambda:
        trainer.evaluate(*stream.held_out(64))``).
      process_local: passed to ``trainer.step`` (each process feeds its own rows).
      restarts: reported in progress lines (a supervising caller counts them).
      clock: seconds, for records/s.

    Returns:
      A :class:`RunResult`.

    Raises:
      ValueError: on a bad argument; if the checkpoint to resume from was written for
        another ``num_partitions`` or source (both values and the checkpoint are named),
        or not by ``run_worker`` (the trainer then holds the checkpoint's state: it is
        read before its meta can be checked); whatever ``trainer.restore`` raises.
    """
    who = "run_worker"
    for attr in ("step", "reset_state", "save", "restore", "step_count"):
        if not hasattr(trainer, attr):
            raise checks.ArgumentTypeError(
                f"{who}: argument 'trainer' must be a disttrace.train.Trainer; got {type(trainer).__name__} "
                f"without {attr!r}"
            )
    if not isinstance(source, StreamSource):
        raise checks.ArgumentTypeError(
            f"{who}: argument 'source' must be a StreamSource (partitions, num_partitions, next, offsets, seek, "
            f"fingerprint, close); got {type(source).__name__}"
        )
    for name, value in (("checkpoint_every", checkpoint_every), ("reset_every", reset_every), ("log_every", log_every)):
        if value is not None:
            checks.positive_int(who, name, value)
    if max_steps is not None:
        checks.non_negative_int(who, "max_steps", max_steps)
    checks.non_negative_int(who, "restarts", restarts)
    checks.boolean(who, "process_local", process_local)
    for name, fn in (("on_metrics", on_metrics), ("should_stop", should_stop), ("gather_meta", gather_meta),
                     ("after_step", after_step), ("evaluate", evaluate), ("clock", clock)):
        _check_callable(who, name, fn, optional=name != "clock")
    report = on_metrics or _print
    gather = gather_meta or (lambda meta: meta)
    partitions = tuple(source.partitions)

    started = clock()
    steps, ledger, resumed_from = 0, Ledger(partitions), None
    latest = None
    if checkpointer is not None:
        checkpointer.wait()  # a save of this checkpointer still in flight is not yet a candidate
        latest = checkpointer.latest_step()
    if latest is not None:
        offsets, ledger, steps = _restore(trainer, source, checkpointer, latest)
        source.seek(offsets)
        resumed_from = latest
        report({"event": "resume", "step": latest, "steps": steps, "checkpoint": str(checkpointer.directory)})
    committed = (source.offsets(), ledger.copy(), latest)
    saved_steps = steps

    def save() -> None:
        nonlocal committed, saved_steps
        meta = gather(stream_meta(source, ledger, steps))
        trainer.save(checkpointer, meta, force=True)
        committed, saved_steps = (source.offsets(), ledger.copy(), trainer.step_count), steps
        report({"event": "checkpoint", "step": trainer.step_count, "steps": steps})

    records, losses = 0, []
    window_start, window_records = clock(), 0
    while True:
        if max_steps is not None and steps >= max_steps:
            reason = "max_steps"
            break
        if should_stop is not None and should_stop():
            reason = "stopped"
            break
        try:
            batch = source.next()
        except StopIteration:
            reason = "end"
            break
        if reset_every is not None and steps % reset_every == 0:
            trainer.reset_state()
        loss = trainer.step(batch.x, batch.y, process_local=process_local)
        if log_every is not None:  # kept until the report reads them (reading one waits for its step)
            losses.append(loss)
        ledger.add_batch(partitions, batch.ids)
        steps += 1
        rows = len(batch.ids)
        records += rows
        window_records += rows
        if after_step is not None:
            after_step(steps)
        if checkpointer is not None and checkpoint_every is not None and steps % checkpoint_every == 0:
            save()
        if log_every is not None and steps % log_every == 0:
            now = clock()
            report({
                "step": steps,
                "trainer_step": trainer.step_count,
                "records": ledger.total().count,
                "loss": sum(_scalar(v) for v in losses) / len(losses),
                "accuracy": None if evaluate is None else float(evaluate()),
                "records_per_s": window_records / max(now - window_start, 1e-9),
                "restarts": restarts,
            })
            losses, window_start, window_records = [], now, 0
    if checkpointer is not None:
        if steps != saved_steps:
            save()
        checkpointer.wait()
    else:
        committed = (source.offsets(), ledger.copy(), None)
    report({"event": "stop", "reason": reason, "steps": steps, "step": trainer.step_count})
    offsets, final_ledger, checkpoint_step = committed
    return RunResult(
        reason, steps, trainer.step_count, checkpoint_step, resumed_from, offsets, final_ledger, records,
        clock() - started,
    )
