"""The common interface of every built-in task: shapes and dtypes, determinism from the key,
the trial form, the stream (keys, seek, boundaries, agreement with TaskStream), the held-out
set and the metric."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.streaming import TaskStream
from disttrace.tasks import (
    CopyTask,
    DelayedMatchToSample,
    DriftingTask,
    EvidenceAccumulation,
    Integrator,
    TrialStream,
)

B = 4
TASKS = {
    "evidence": EvidenceAccumulation(n_cues=3, cue_len=2, gap=1, delay=2, recall=2, n_per_group=2),
    "dms": DelayedMatchToSample(n_stimuli=3, stim_len=2, delay=3, response=2),
    "copy": CopyTask(n_symbols=3, memory_length=3, delay=1),
    "integrator": Integrator(n_in=2, length=6, leak=0.2),
    "drifting": DriftingTask(n_features=3, n_out=3, switch_every=3),
    "drifting_regression": DriftingTask(n_features=3, n_out=2, switch_every=2, kind="regression", cue=True),
}
PER_TRIAL = {"evidence", "dms"}  # labels (B,); the others' targets vary per step
task_ids = pytest.mark.parametrize("name", sorted(TASKS))


def _targets_shape(name, task):
    if task.kind == "regression":
        return (task.length, B, task.n_out), jnp.float32
    return ((B,) if name in PER_TRIAL else (task.length, B)), jnp.int32


def _trial(task, seed, partition, index, batch=B):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), partition), index)
    return task.sample(key, batch)


@task_ids
def test_sample_shapes_dtypes_and_determinism(name):
    task = TASKS[name]
    assert task.kind in ("classification", "regression")
    xs, targets, mask = task.sample(jax.random.PRNGKey(0), B)
    assert xs.shape == (task.length, B, task.n_in) and xs.dtype == jnp.float32
    shape, dtype = _targets_shape(name, task)
    assert targets.shape == shape and targets.dtype == dtype
    assert mask.shape == (task.length,) and mask.dtype == jnp.float32 and float(mask.sum()) > 0
    if task.kind == "classification":
        assert 0 <= int(targets.min()) and int(targets.max()) < task.n_out
    again = task.sample(jax.random.PRNGKey(0), B)
    jax.tree.map(np.testing.assert_array_equal, (xs, targets, mask), again)
    other = task.sample(jax.random.PRNGKey(1), B)
    assert not np.array_equal(np.asarray(xs), np.asarray(other[0]))


@task_ids
def test_trials_are_the_sample_per_step(name):
    task = TASKS[name]
    key = jax.random.PRNGKey(3)
    xs, targets, mask = task.sample(key, B)
    txs, ys = task.trials(key, B)
    np.testing.assert_array_equal(txs, xs)
    if task.kind == "regression":
        np.testing.assert_array_equal(ys, targets)
        return
    assert set(ys) == {"label", "mask"} and ys["label"].shape == (task.length, B)
    want = jnp.broadcast_to(targets, (task.length, B)) if name in PER_TRIAL else targets
    np.testing.assert_array_equal(ys["label"], want)
    np.testing.assert_array_equal(ys["mask"], mask)


def _steps(stream, n):
    return [next(stream) for _ in range(n)]


def _assert_steps_equal(a, b):
    assert len(a) == len(b)
    for (xa, ya, ba), (xb, yb, bb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        jax.tree.map(np.testing.assert_array_equal, ya, yb)
        assert ba == bb


@task_ids
def test_stream_steps_are_the_trials_of_folded_keys(name):
    """Trial k of partition p comes from fold_in(fold_in(PRNGKey(seed), p), k); a step is
    one time step of it, with the boundary on its first step."""
    task = TASKS[name]
    T = task.length
    stream = task.stream(B, seed=5, partition=2)
    assert isinstance(stream, TrialStream) and iter(stream) is stream and stream.trial_length == T
    steps = _steps(stream, 2 * T + 1)
    assert stream.position == 2 * T + 1
    assert [b for _, _, b in steps] == [t % T == 0 for t in range(2 * T + 1)]
    for k in range(3):
        xs, ys = task.trials(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(5), 2), k), B)
        for t in range(T if k < 2 else 1):
            x, y, _ = steps[k * T + t]
            assert x.shape == (B, task.n_in) and x.dtype == np.float32
            np.testing.assert_array_equal(x, xs[t])
            jax.tree.map(np.testing.assert_array_equal, y, jax.tree.map(lambda a, t=t: a[t], ys))


@task_ids
def test_seek_reproduces_the_next_steps_bitwise(name):
    task = TASKS[name]
    T = task.length
    straight = _steps(task.stream(B, seed=7), 3 * T + 2)
    for start in (0, 1, T - 1, T, 2 * T + 1):
        stream = task.stream(B, seed=7)
        stream.seek(start)
        assert stream.position == start
        _assert_steps_equal(_steps(stream, 3 * T + 2 - start), straight[start:])
    back = task.stream(B, seed=7)
    _steps(back, 2 * T + 1)
    back.seek(1)  # backwards, from another trial
    _assert_steps_equal(_steps(back, T), straight[1 : T + 1])


@task_ids
def test_streams_differ_by_seed_and_partition(name):
    task = TASKS[name]
    base = next(task.stream(B, seed=0))[0]
    assert not np.array_equal(base, next(task.stream(B, seed=1))[0])
    assert not np.array_equal(base, next(task.stream(B, seed=0, partition=1))[0])


@pytest.mark.parametrize("name", sorted(PER_TRIAL))
def test_the_stream_agrees_with_task_stream(name):
    """One partition: the same inputs, labels and masks, step by step, as TaskStream's."""
    task = TASKS[name]
    mine = task.stream(B, seed=3)
    theirs = TaskStream(task, batch_size=B, seed=3)
    for _ in range(2 * task.length + 1):
        x, y, _ = next(mine)
        batch = theirs.next()
        np.testing.assert_array_equal(x, batch.x)
        np.testing.assert_array_equal(y["label"], batch.y["label"])
        np.testing.assert_array_equal(y["mask"], batch.y["mask"])
    jax.tree.map(np.testing.assert_array_equal, task.held_out(B, seed=3), theirs.held_out(B))


@task_ids
def test_held_out_is_fixed_and_apart_from_the_streams(name):
    task = TASKS[name]
    first = task.held_out(B, seed=0)
    jax.tree.map(np.testing.assert_array_equal, first, task.held_out(B, seed=0))
    assert first[0].shape == (task.length, B, task.n_in)
    assert not np.array_equal(np.asarray(first[0]), np.asarray(task.held_out(B, seed=1)[0]))
    for partition in (0, 1):
        assert not np.array_equal(np.asarray(first[0]), np.asarray(_trial(task, 0, partition, 0)[0]))


def _one_hot_logits(labels, n_out):
    return jax.nn.one_hot(labels, n_out, dtype=jnp.float32)


@task_ids
def test_metric_scores_perfect_and_wrong_outputs(name):
    task = TASKS[name]
    xs, targets, mask = task.sample(jax.random.PRNGKey(2), B)
    T = task.length
    if task.kind == "regression":
        assert task.metric(targets, targets, mask) == 0.0
        assert task.metric(targets + 2.0, targets, mask) == pytest.approx(4.0)
        # only the masked steps count
        half = mask.at[: T // 2].set(0.0)
        off = targets.at[: T // 2].add(5.0)
        assert task.metric(off, targets, half) == 0.0
        return
    labels = jnp.broadcast_to(targets, (T, B)) if name in PER_TRIAL else targets
    perfect = _one_hot_logits(labels, task.n_out)
    wrong = _one_hot_logits((labels + 1) % task.n_out, task.n_out)
    assert task.metric(perfect, targets, mask) == 1.0
    assert task.metric(wrong, targets, mask) == 0.0
    # one of the B trials wrong on every step: accuracy (B - 1) / B
    mixed = perfect.at[:, 0].set(wrong[:, 0])
    assert task.metric(mixed, targets, mask) == pytest.approx((B - 1) / B)


def test_per_trial_accuracy_pools_the_masked_logits_like_evaluate():
    """Labels (B,): the argmax of the mask-weighted sum over time (Trainer.evaluate's rule)."""
    task = TASKS["dms"]
    _, labels, mask = task.sample(jax.random.PRNGKey(0), B)
    logits = jax.random.normal(jax.random.PRNGKey(1), (task.length, B, 2))
    pooled = np.einsum("t,tbc->bc", np.asarray(mask), np.asarray(logits))
    want = float(np.mean(np.argmax(pooled, -1) == np.asarray(labels)))
    assert task.metric(logits, labels, mask) == pytest.approx(want)


def test_metric_rejects_shapes_that_do_not_fit():
    task = TASKS["copy"]
    _, labels, mask = task.sample(jax.random.PRNGKey(0), B)
    logits = jnp.zeros((task.length, B, task.n_out))
    with pytest.raises(ValueError, match="targets must have shape"):
        task.metric(logits, labels[:, :2], mask)
    with pytest.raises(ValueError, match="outputs must be"):
        task.metric(logits[0], labels, mask)
    with pytest.raises(ValueError, match="targets must have shape"):
        TASKS["integrator"].metric(jnp.zeros((6, B, 1)), jnp.zeros((6, B, 2)), jnp.ones(6))


def test_stream_and_held_out_arguments_are_checked():
    task = TASKS["dms"]
    for kwargs, arg in [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": B, "seed": -1}, "seed"),
        ({"batch_size": B, "seed": 2**32}, "seed"),
        ({"batch_size": B, "seed": 1.0}, "seed"),
        ({"batch_size": B, "partition": -1}, "partition"),
        ({"batch_size": B, "partition": 2**32 - 1}, "partition"),
    ]:
        with pytest.raises(ValueError, match=f"'{arg}'.*got {kwargs[arg]!r}"):
            task.stream(**kwargs)
    stream = task.stream(B)
    for step in (-1, True, 1.5):
        with pytest.raises(ValueError, match=f"TrialStream.seek: argument 'step'.*got {step!r}"):
            stream.seek(step)
    with pytest.raises(ValueError, match="'batch'"):
        task.held_out(0)
    with pytest.raises(ValueError, match="'seed'"):
        task.held_out(B, seed=2**32)
    with pytest.raises(TypeError, match="'task'"):
        TrialStream(object(), B)


def test_past_the_last_foldable_trial_is_an_overflow_error():
    task = TASKS["copy"]
    stream = task.stream(B)
    stream.seek(task.length * 2**32 - 1)  # the last step of the last trial works
    next(stream)
    with pytest.raises(OverflowError, match="foldable"):
        next(stream)


def test_evidence_accumulation_keeps_its_fields_and_draws():
    """The interface is added on top: fields, repr and draws are the task's own."""
    import dataclasses

    task = EvidenceAccumulation()
    assert [f.name for f in dataclasses.fields(task)] == [
        "n_cues", "cue_len", "gap", "delay", "recall", "n_per_group", "rate", "noise_rate",
    ]
    assert task.kind == "classification" and "kind" not in repr(task)
    assert task == EvidenceAccumulation() and hash(task) == hash(EvidenceAccumulation())
