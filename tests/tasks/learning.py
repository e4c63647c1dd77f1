"""The learning checks of the task tests: a small leaky-rate network trained on trials
with D-RTRL and Adam, scored on the task's held-out set with the task's own metric."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

import disttrace as dt


def rate_net(n_in: int, n_out: int, width: int = 32, layers: int = 1):
    """``layers`` LeakyRate layers and a memoryless linear readout."""
    stack = [dt.nn.LeakyRate(n_in if i == 0 else width, width) for i in range(layers)]
    return brainstate.nn.Sequential(*stack, dt.nn.LeakyRateReadout(width, n_out, tau=0))


def trainer_for(task, seed: int, *, batch: int, lr: float = 1e-2, layers: int = 1):
    """A Trainer on a fresh rate network (initialised from ``seed``), loss by the task's kind."""
    brainstate.random.seed(seed)
    net = rate_net(task.n_in, task.n_out, layers=layers)
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((batch, task.n_in)), batch_size=batch)
    loss = dt.train.mse if task.kind == "regression" else dt.train.masked_cross_entropy
    return dt.train.Trainer(learner, optax.adam(lr), loss_fn=loss, seed=seed)


def held_out_score(trainer, task, *, batch: int, chunks: int = 4, seed: int = 100) -> float:
    """``task.metric`` on ``chunks · batch`` held-out trials (the learner runs ``batch`` at a
    time, the batch it was compiled for), averaged over the chunks."""
    xs, targets, mask = task.held_out(chunks * batch, seed=seed)
    trainer.write_back()
    scores = []
    for i in range(chunks):
        rows = slice(i * batch, (i + 1) * batch)
        trainer.learner.reset_state()
        out = trainer.learner.predict(xs[:, rows])
        scores.append(task.metric(out, targets[rows] if targets.ndim == 1 else targets[:, rows], mask))
    return float(np.mean(scores))


def train_trials(task, seed: int, steps: int, *, batch: int = 32, lr: float = 1e-2, layers: int = 1):
    """Trains on ``steps`` batches of ``task.trials``; returns ``(score before, score after)``."""
    trainer = trainer_for(task, seed, batch=batch, lr=lr, layers=layers)
    before = held_out_score(trainer, task, batch=batch)
    draw = jax.jit(task.trials, static_argnums=1)  # EvidenceAccumulation.sample alone runs op by op
    for _ in range(steps):
        trainer.train_trial(*draw(trainer.next_key(), batch))
    return before, held_out_score(trainer, task, batch=batch)


def zero_mse(task, *, batch: int = 128, seed: int = 100) -> float:
    """The held-out MSE of predicting 0 everywhere (the regression baseline)."""
    xs, targets, mask = task.held_out(batch, seed=seed)
    return task.metric(jnp.zeros_like(targets), targets, mask)

