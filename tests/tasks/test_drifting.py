"""DriftingTask: the mapping per context, the cue, argument errors, and online adaptation
on the stream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.tasks import DriftingTask
from tests.tasks.learning import trainer_for


def test_labels_follow_the_mapping_of_each_context():
    task = DriftingTask(n_features=4, n_out=3, n_contexts=3, switch_every=5)
    assert (task.length, task.n_in, task.n_out, task.kind) == (15, 4, 3, "classification")
    xs, labels, mask = task.sample(jax.random.PRNGKey(0), 8)
    w = np.asarray(task.mappings())
    assert w.shape == (3, 4, 3)
    np.testing.assert_array_equal(mask, np.ones(15))
    for t in range(15):
        assert task.context(t) == t // 5
        np.testing.assert_array_equal(labels[t], np.argmax(np.asarray(xs[t]) @ w[t // 5], -1))
    assert [task.context(s) for s in (15, 19, 20, 44, 45)] == [0, 0, 1, 2, 0]  # stream steps cycle


def test_the_mappings_are_fixed_by_their_seed():
    np.testing.assert_array_equal(DriftingTask().mappings(), DriftingTask().mappings())
    assert not np.array_equal(DriftingTask().mappings(), DriftingTask(mapping_seed=1).mappings())


def test_regression_and_the_cue():
    task = DriftingTask(n_features=4, n_out=2, n_contexts=2, switch_every=3, kind="regression", cue=True)
    assert (task.n_in, task.kind) == (6, "regression")
    xs, ys, _ = task.sample(jax.random.PRNGKey(0), 5)
    assert ys.shape == (6, 5, 2) and ys.dtype == jnp.float32
    w = np.asarray(task.mappings())
    for t in range(6):
        np.testing.assert_allclose(ys[t], np.asarray(xs[t, :, :4]) @ w[t // 3] / 2.0, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(xs[t, :, 4:], np.broadcast_to(np.eye(2)[t // 3], (5, 2)))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"n_features": 0}, "n_features"),
        ({"n_out": 1}, "n_out"),
        ({"n_out": 0, "kind": "regression"}, "n_out"),
        ({"n_contexts": 0}, "n_contexts"),
        ({"switch_every": 0}, "switch_every"),
        ({"switch_every": 2.0}, "switch_every"),
        ({"kind": "ranking"}, "kind"),
        ({"cue": 1}, "cue"),
        ({"mapping_seed": -1}, "mapping_seed"),
        ({"mapping_seed": 2**32}, "mapping_seed"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, arg):
    with pytest.raises(ValueError, match=f"DriftingTask: argument '{arg}'.*got {kwargs[arg]!r}"):
        DriftingTask(**kwargs)


@pytest.mark.usefixtures("optax_promotion")
def test_online_learning_on_the_stream_adapts_after_each_switch():
    """Two contexts switching every 100 steps (the mappings agree on 47% of inputs), no
    cue: one LeakyRate layer of 32, D-RTRL, Adam 1e-2, one update per stream step (B =
    16), 300 steps. Measured for seeds 0, 1, 2: mean loss over the 20 steps after the two
    switches 1.22 / 1.07 / 1.15 and 0.97 / 0.95 / 0.93, over the last 50 steps before the
    next 0.32 / 0.27 / 0.26 and 0.16 / 0.18 / 0.17; held-out accuracy afterwards on the
    current context 0.957 / 0.953 / 0.957, on the other (now unlearned) 0.505 / 0.486 /
    0.461. Required: after each switch the loss falls below half of what it was just
    after the switch, the current context scores > 0.85 and the other < 0.7."""
    task, batch = DriftingTask(n_features=8, n_out=2, switch_every=100), 16
    trainer = trainer_for(task, 0, batch=batch)
    stream = task.stream(batch, seed=0)
    losses = np.array([float(trainer.step(*next(stream)[:2])) for _ in range(300)]).reshape(3, 100)
    after_switch, settled = losses[1:, :20].mean(1), losses[1:, -50:].mean(1)
    assert (settled < 0.5 * after_switch).all(), (after_switch, settled)
    xs, labels, mask = task.held_out(batch, seed=0)
    trainer.write_back()
    trainer.learner.reset_state()
    out = trainer.learner.predict(xs)
    current, other = (task.metric(out[c * 100 : (c + 1) * 100], labels[c * 100 : (c + 1) * 100], mask[:100])
                      for c in (task.context(299), 1 - task.context(299)))
    assert current > 0.85 and other < 0.7, (current, other)
