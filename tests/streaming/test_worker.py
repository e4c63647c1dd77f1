"""``run_worker`` in one process: a clean stop and a resume in a fresh trainer equal an
uninterrupted run bitwise (trial resets included), the stream position is committed only
with checkpoints, a checkpoint of another stream is refused naming both values, progress
lines and events, and ``import disttrace.streaming`` leaves Ray out."""

import os
import subprocess
import sys
from pathlib import Path

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace.checkpoint import Checkpointer
from disttrace.streaming import CountingStream, Ledger, TaskStream, format_metrics, run_worker
from disttrace.tasks import EvidenceAccumulation
from tests.streaming._counting_run import build_trainer

ROOT = Path(__file__).resolve().parents[2]
TASK = EvidenceAccumulation(n_cues=1, cue_len=2, gap=1, delay=1, recall=2, n_per_group=2)  # T = 6
B, P = 4, 2


def _task_trainer():
    brainstate.random.seed(0)
    net = brainstate.nn.Sequential(dt.nn.LeakyRate(TASK.n_in, 8), dt.nn.LeakyRateReadout(8, 2, tau=0))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((B, TASK.n_in)), batch_size=B)  # masked cross-entropy
    example = (jnp.zeros((B, TASK.n_in)), {"label": jnp.zeros((B,), jnp.int32), "mask": jnp.zeros(())})
    return dt.train.Trainer(learner, optax.sgd(0.1, momentum=0.9), example)


def _stream():
    return TaskStream(TASK, batch_size=B, num_partitions=P, seed=5)


def _bitwise(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _stop_after(n):
    calls = []
    return lambda: calls.append(1) or len(calls) > n


def test_clean_stop_and_resume_equal_an_uninterrupted_run(tmp_path):
    T, R = TASK.length, B // P
    straight = _task_trainer()
    with Checkpointer(tmp_path / "straight") as ckpt:
        full = run_worker(straight, _stream(), ckpt, checkpoint_every=4, max_steps=20, reset_every=T, log_every=None)
    assert full.reason == "max_steps" and full.steps == 20 and full.step == 20 and full.resumed_from is None
    assert full.checkpoint_step == 20 and full.records == 20 * B

    cut = _task_trainer()
    events = []
    with Checkpointer(tmp_path / "cut") as ckpt:
        stopped = run_worker(cut, _stream(), ckpt, checkpoint_every=4, max_steps=20, reset_every=T, log_every=None,
                             should_stop=_stop_after(9), on_metrics=events.append)
        assert ckpt.steps()[-1] == 9  # the final checkpoint of a clean stop (mid-trial, off the interval)
    assert stopped.reason == "stopped" and stopped.steps == 9 and stopped.checkpoint_step == 9
    assert stopped.offsets == {0: 9, 1: 9} and stopped.ledger == Ledger.exactly_once([0, 1], 9 * R)
    assert [e["step"] for e in events if e.get("event") == "checkpoint"] == [4, 8, 9]
    assert events[-1] == {"event": "stop", "reason": "stopped", "steps": 9, "step": 9}

    resumed = _task_trainer()  # a fresh process would build the same
    with Checkpointer(tmp_path / "cut") as ckpt:
        rest = run_worker(resumed, _stream(), ckpt, checkpoint_every=4, max_steps=20, reset_every=T, log_every=None)
    assert rest.resumed_from == 9 and rest.steps == 20 and rest.records == 11 * B and rest.checkpoint_step == 20
    assert rest.ledger == full.ledger == Ledger.exactly_once([0, 1], 20 * R)
    assert rest.offsets == full.offsets == {0: 20, 1: 20}
    _bitwise(resumed.state, straight.state)

    # a rerun of a finished run does nothing and saves nothing
    with Checkpointer(tmp_path / "cut") as ckpt:
        again = run_worker(resumed, _stream(), ckpt, checkpoint_every=4, max_steps=20, reset_every=T,
                           log_every=None)
        assert ckpt.steps()[-1] == 20
    assert again.reason == "max_steps" and again.records == 0 and again.resumed_from == 20
    assert again.ledger == full.ledger


def test_a_checkpoint_of_another_stream_is_refused(tmp_path):
    trainer = build_trainer()
    with Checkpointer(tmp_path / "run") as ckpt:
        run_worker(trainer, CountingStream(40, 4, None, 2), ckpt, checkpoint_every=2, max_steps=3, log_every=None)
        with pytest.raises(ValueError, match=rf"checkpoint at step 3 in {tmp_path / 'run'} was written with "
                                             r"num_partitions 2, but the source has num_partitions 1.*resume with "
                                             r"num_partitions 2"):
            run_worker(trainer, CountingStream(40, 4, None, 1), ckpt, checkpoint_every=2, log_every=None)
        other = CountingStream(40, 4, None, 2, seed=1)
        with pytest.raises(ValueError, match=rf"at step 3 in {tmp_path / 'run'} was written for the source "
                                             rf"{{'kind': 'CountingStream', 'fingerprint': 'CountingStream:\w+'}}, "
                                             rf"but this source is .*'{other.fingerprint()}'.*seed=1"):
            run_worker(trainer, other, ckpt, checkpoint_every=2, log_every=None)
    with Checkpointer(tmp_path / "plain") as ckpt:
        trainer.save(ckpt, {"config": {}})
        with pytest.raises(ValueError, match=r"has no stream position .* not written by run_worker"):
            run_worker(trainer, CountingStream(40, 4, None, 2), ckpt, checkpoint_every=2, log_every=None)


def test_without_checkpointer_and_gathered_meta(tmp_path):
    trainer = build_trainer()
    stream = CountingStream(8, 4, None, 2)
    done = run_worker(trainer, stream, None, checkpoint_every=None, log_every=None)
    assert done.reason == "end" and done.steps == 4 and done.checkpoint_step is None
    assert done.ledger == Ledger.exactly_once([0, 1], 8) and done.offsets == {0: 4, 1: 4}

    seen = []

    def gather(meta):  # what a multi-process caller would do: the same dict everywhere
        seen.append(meta)
        return {**meta, "gathered": len(seen)}

    order = []

    def after_step(steps):  # e.g. averaging every 3 steps: before that step's checkpoint
        order.append(("after", steps))
        if steps == 3:
            trainer.set_params(jax.tree.map(np.zeros_like, trainer.params_host()))

    with Checkpointer(tmp_path) as ckpt:
        run_worker(trainer, CountingStream(8, 4, None, 2), ckpt, checkpoint_every=3, log_every=None,
                   gather_meta=gather, after_step=after_step,
                   on_metrics=lambda m: order.append((m["event"], m["steps"])))
        assert ckpt.steps() == [7, 8]  # the trainer had taken 4 steps already
        with Checkpointer(tmp_path, read_only=True) as reader:
            first = reader.restore(trainer.rules, 7)[0]
        meta = trainer.restore(ckpt)
    assert all(not np.any(np.asarray(a)) for a in jax.tree.leaves(first.params))  # the checkpoint holds the mean
    assert order == [("after", 1), ("after", 2), ("after", 3), ("checkpoint", 3), ("after", 4), ("checkpoint", 4),
                     ("stop", 4)]
    assert meta["gathered"] == 2 and [m["stream"]["steps"] for m in seen] == [3, 4]
    stream_meta = meta["stream"]
    assert stream_meta["num_partitions"] == 2 and stream_meta["offsets"] == {"0": 4, "1": 4}
    assert Ledger.from_json(stream_meta["ledger"]) == Ledger.exactly_once([0, 1], 8)
    assert stream_meta["source"] == {"kind": "CountingStream", "fingerprint": stream.fingerprint()}


def test_progress_lines_and_accuracy(tmp_path, capsys):
    trainer = _task_trainer()
    stream = _stream()
    held = stream.held_out(B)
    ticks = iter(range(1000))
    metrics = []
    run_worker(trainer, stream, None, checkpoint_every=None, max_steps=6, reset_every=6, log_every=3,
               on_metrics=metrics.append, evaluate=lambda: trainer.evaluate(*held), restarts=2,
               clock=lambda: float(next(ticks)))
    progress = [m for m in metrics if "event" not in m]
    assert [m["step"] for m in progress] == [3, 6] and [m["records"] for m in progress] == [12, 24]
    for m in progress:
        assert set(m) == {"step", "trainer_step", "records", "loss", "accuracy", "records_per_s", "restarts"}
        assert m["loss"] >= 0 and 0 <= m["accuracy"] <= 1 and m["restarts"] == 2 and m["records_per_s"] > 0

    run_worker(build_trainer(), CountingStream(8, 4, None, 2), None, checkpoint_every=None, log_every=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1] == "[stop] reason end  steps 4  step 4"
    assert lines[0].startswith("step 2  records 8  loss ") and " records/s " in lines[0]
    assert lines[0].endswith("  restarts 0") and "accuracy" not in lines[0]
    assert format_metrics({"event": "checkpoint", "step": 5, "steps": 5}) == "[checkpoint] step 5  steps 5"


def test_bad_arguments_are_named():
    trainer = build_trainer()
    stream = CountingStream(8, 4, None, 2)
    with pytest.raises(ValueError, match="'checkpoint_every' must be a positive int; got 0"):
        run_worker(trainer, stream, None, checkpoint_every=0)
    with pytest.raises(TypeError, match="'source' must be a StreamSource .*got list"):
        run_worker(trainer, [], None, checkpoint_every=None)
    with pytest.raises(TypeError, match="'trainer' must be a disttrace.train.Trainer; got object"):
        run_worker(object(), stream, None, checkpoint_every=None)
    with pytest.raises(TypeError, match="'should_stop' must be callable or None; got bool"):
        run_worker(trainer, stream, None, checkpoint_every=None, should_stop=True)
    with pytest.raises(ValueError, match="'max_steps' must be an int >= 0; got -1"):
        run_worker(trainer, stream, None, checkpoint_every=None, max_steps=-1)
    assert stream.offsets() == {0: 0, 1: 0} and trainer.step_count == 0


def test_importing_disttrace_and_streaming_leaves_ray_out():
    code = ("import sys, disttrace, disttrace.streaming, disttrace.streaming._worker, disttrace.streaming._directory; "
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] == 'ray')")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
