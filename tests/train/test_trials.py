"""Trainer in trial mode: reset, online gradient over the sequence, one update; any loss;
exact resume through one checkpoint layout; held-out evaluation."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace.checkpoint import Checkpointer
from disttrace.tasks import EvidenceAccumulation

# Adam cannot run under the suite's strict dtype promotion (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("optax_promotion")

TASK = EvidenceAccumulation(n_cues=3, cue_len=3, gap=2, delay=4, recall=3)
B = 8


def _learner(algo="d_rtrl", loss_fn=None):
    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(TASK.n_in, 16, TASK.n_out, recurrent=True, tau_out=5.0)
    return dt.compile(net, algo, jnp.zeros((B, TASK.n_in)), batch_size=B, loss_fn=loss_fn)


def _trial(i):
    return TASK.sample(jax.random.PRNGKey(i), B)


def test_a_trial_is_the_mean_online_gradient_and_one_update():
    """``train_batch`` = reset + ``etrace_grad`` of the masked cross-entropy + one optax update."""
    opt = optax.adam(1e-2)
    trainer = dt.train.Trainer(dt.compile(*_spiking(), batch_size=B), opt, chunk_size=4)
    ref = dt.compile(*_spiking(), batch_size=B)
    params = ref.params()
    opt_state = opt.init(params)
    for i in range(3):
        xs, labels, mask = _trial(i)
        loss = trainer.train_batch(xs, labels, mask)
        ref.reset_state()
        ys = jnp.broadcast_to(labels, (xs.shape[0], B))
        grads, losses = ref.etrace_grad(
            xs, ys, mask, step_fn=_ref_loss(ref), return_value=True, chunk_size=4)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ref.binding.write(params=params)
        np.testing.assert_allclose(loss, float(losses.mean()), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7),
                 trainer.state.params, params)
    # the model holds the trained parameters after each trial
    jax.tree.map(np.testing.assert_array_equal, trainer.learner.params(), trainer.state.params)
    assert trainer.step_count == int(trainer.state.step) == 3


def _spiking():
    brainstate.random.seed(0)
    return dt.nn.SpikingNet(TASK.n_in, 16, TASK.n_out, recurrent=True, tau_out=5.0), "d_rtrl", jnp.zeros((B, TASK.n_in))


def _ref_loss(learner):
    def loss(x, label, m):
        return m * optax.softmax_cross_entropy_with_integer_labels(learner(x), label).mean()

    return loss


def test_the_loss_is_an_argument():
    """A regression trial with MSE learns (the loss is not hard-wired)."""
    brainstate.random.seed(0)
    net = brainstate.nn.Sequential(dt.nn.LeakyRate(4, 16), dt.nn.LeakyRateReadout(16, 2, tau=0))
    learner = dt.compile(net, dt.ES_D_RTRL, jnp.zeros((B, 4)), batch_size=B)
    trainer = dt.train.Trainer(learner, optax.adam(3e-2), loss_fn=dt.train.mse)
    losses = []
    for i in range(40):
        xs = jax.random.normal(jax.random.PRNGKey(i), (10, B, 4))
        losses.append(trainer.train_trial(xs, 0.5 * xs[..., :2]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_trials_resume_bitwise_from_a_checkpoint(tmp_path):
    def run(steps, directory):
        trainer = dt.train.Trainer(_learner(), optax.adam(1e-2), chunk_size=4, seed=3)
        with Checkpointer(directory) as ckpt:
            if ckpt.latest_step() is not None:
                assert trainer.restore(ckpt) == {"note": "x"}
            while trainer.step_count < steps:
                trainer.train_batch(*TASK.sample(trainer.next_key(), B))
                trainer.save(ckpt, meta={"note": "x"})
        return trainer

    straight = run(5, tmp_path / "straight")
    run(3, tmp_path / "cut")
    resumed = run(5, tmp_path / "cut")
    assert resumed.step_count == straight.step_count == 5
    jax.tree.map(np.testing.assert_array_equal, resumed.state, straight.state)
    jax.tree.map(np.testing.assert_array_equal, resumed.learner.params(), straight.learner.params())


def test_a_stream_then_a_trial_resets_the_state():
    trainer = dt.train.Trainer(_learner(), optax.adam(1e-2))
    fresh = jax.tree.map(np.asarray, trainer.state.learner_state)
    xs, labels, mask = _trial(0)
    y = {"label": labels, "mask": mask[0]}
    trainer.step(xs[0], y)
    trainer.train_batch(xs, labels, mask)
    jax.tree.map(np.testing.assert_array_equal, trainer.state.learner_state, fresh)
    assert trainer.step_count == 2


@pytest.mark.parametrize("algo", ["d_rtrl", "bptt"])
def test_evaluate_counts_correct_trials(algo):
    trainer = dt.train.Trainer(_learner(algo), optax.adam(1e-2))
    xs, labels, mask = _trial(7)
    acc = trainer.evaluate(xs, labels, mask)
    logits = trainer.learner.predict(xs)
    pooled = np.einsum("t,tbc->bc", np.asarray(mask), np.asarray(logits))
    assert acc == pytest.approx(float(np.mean(np.argmax(pooled, -1) == np.asarray(labels))))
    assert trainer.accuracy(xs, labels, mask) == acc


def test_auto_chunk_size_is_measured_at_the_first_trial_and_equals_the_choice():
    """``Trainer(chunk_size="auto")``: the first trial measures (``learner.tune_chunk_size``), later
    trials of the same shape reuse the choice; the updates are those of the chosen int."""
    auto = dt.train.Trainer(_learner(), optax.adam(1e-2), chunk_size="auto")
    losses_auto = [auto.train_batch(*_trial(i)) for i in range(2)]
    (choice,) = auto.learner._chunk_choices.values()  # one measurement for both trials
    assert choice.chunk_size in dt.algorithms.chunk_candidates(TASK.sample(jax.random.PRNGKey(0), B)[0].shape[0])
    fixed = dt.train.Trainer(_learner(), optax.adam(1e-2), chunk_size=choice.chunk_size)
    losses_fixed = [fixed.train_batch(*_trial(i)) for i in range(2)]
    assert losses_auto == losses_fixed
    jax.tree.map(np.testing.assert_array_equal, auto.state.params, fixed.state.params)
