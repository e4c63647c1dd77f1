"""Issue 13, case 1: one NaN in one input value of one trial must not poison the model.

The Trainer's non-finite policy (``nonfinite="skip"`` by default): a trial or stream step
whose input, target, loss or gradient is not finite changes nothing but the step count
and the counters (bitwise: as if it had never come), the log shows it, no checkpoint
ever holds a non-finite value, ``"raise"`` stops at the first one naming it, and
``max_skips`` consecutive skips stop naming the first step of the run and its leaf.
"""

import dataclasses

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace import config
from disttrace.checkpoint import Checkpointer
from disttrace.errors import NonFiniteError
from disttrace.tasks import EvidenceAccumulation
from launch.train import parse, train
from tests.nn.layer_case import Stack

# Adam cannot run under the suite's strict dtype promotion (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("optax_promotion")

TINY = ["--batch-size", "4", "--eval-batch", "4", "--log-every", "1", "--model.n_rec", "8", "--task.n_cues", "3",
        "--task.delay", "4"]
NAN_AT = (5, 1, 2)  # (t, b, i): one input value of one trial


class _NaNTask:
    """Evidence accumulation whose ``nan_trial``-th sampled trial holds one NaN input value."""

    def __init__(self, base: EvidenceAccumulation, nan_trial: int):
        self.base, self.nan_trial, self.calls = base, nan_trial, 0

    def __getattr__(self, name):
        return getattr(self.base, name)

    def sample(self, key, batch):
        self.calls += 1
        xs, labels, mask = self.base.sample(key, batch)
        if self.calls == self.nan_trial:
            xs = xs.at[NAN_AT].set(jnp.nan)
        return xs, labels, mask


@config.TASKS.register("evidence_with_a_nan")
@dataclasses.dataclass(frozen=True)
class NaNEvidenceConfig(config.EvidenceConfig):
    """A task of the registry (an extension, as a user would add one): the evidence task
    with one NaN input value in its ``nan_trial``-th trial."""

    nan_trial: int = 3

    def build(self):
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "nan_trial"}
        return _NaNTask(EvidenceAccumulation(**fields), self.nan_trial)


def _launch_trainer(cfg, **options):
    """The Trainer ``launch.train`` builds for ``cfg`` (same construction, same seed)."""
    brainstate.random.seed(cfg.seed)
    task = cfg.task.build()
    net = cfg.model.build(task.n_in, task.n_out)
    learner = dt.compile(net, cfg.algorithm.build(), jnp.zeros((cfg.batch_size, task.n_in)), batch_size=cfg.batch_size)
    trainer = dt.train.Trainer(learner, cfg.optimizer.build(), loss_fn=cfg.loss.build(), chunk_size=cfg.chunk_size,
                               seed=cfg.seed, **options)
    return trainer, task


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(a).dtype, np.inexact))


def _same(a, b) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _kept_states(directory, trainer):
    with Checkpointer(directory, read_only=True) as ckpt:
        return {s: ckpt.restore(trainer.rules, s)[0] for s in ckpt.steps()}


def test_a_nan_trial_in_launch_train_is_skipped_logged_and_never_saved(tmp_path, capsys):
    cfg = parse(["--steps", "5", "--checkpoint-dir", str(tmp_path), "--checkpoint-every", "1",
                 "--checkpoint.max_to_keep", "2", "--task", "evidence_with_a_nan", *TINY])
    trainer, _ = train(cfg)
    out = capsys.readouterr().out
    assert "step     3  skipped: non-finite value in the input x" in out, out
    last = next(line for line in out.splitlines() if line.startswith("step     5  loss"))
    assert "skipped 1" in last, last
    assert trainer.nonfinite_counts() == {"skipped": 1, "consecutive": 0, "first": 3, "leaf": "the input x"}
    assert _finite(trainer.state)
    kept = _kept_states(tmp_path, trainer)
    assert sorted(kept) == [4, 5] and all(_finite(s) for s in kept.values())


def test_a_nan_trial_leaves_the_params_of_the_run_without_its_update(tmp_path):
    """The launch.train construction, trials drawn as it draws them; one NaN input value in
    trial 3: the result is bitwise the run that never trained on trial 3, and no
    checkpoint kept (max_to_keep=2, a save after every trial) holds a non-finite value."""
    cfg = parse([*TINY, "--task", "evidence_with_a_nan"])
    trainer, task = _launch_trainer(cfg)
    ref, ref_task = _launch_trainer(dataclasses.replace(cfg, task=config.EvidenceConfig(n_cues=3, delay=4)))
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in range(1, 6):
            xs, labels, mask = task.sample(trainer.next_key(), cfg.batch_size)
            trainer.train_trial(xs, dt.train.label_targets(labels, mask))
            trainer.save(ckpt)
            xs, labels, mask = ref_task.sample(ref.next_key(), cfg.batch_size)
            if step != 3:
                ref.train_trial(xs, dt.train.label_targets(labels, mask))
    # (the reported loss may well stay finite, as in issue 13: a NaN membrane potential emits no
    # spike; the gradient and the input are what give it away)
    assert trainer.nonfinite_counts() == {"skipped": 1, "consecutive": 0, "first": 3, "leaf": "the input x"}
    _same(trainer.state.params, ref.state.params)
    _same(trainer.state.opt_state, ref.state.opt_state)
    assert trainer.step_count == 5 and ref.step_count == 4
    kept = _kept_states(tmp_path, trainer)
    assert sorted(kept) == [4, 5] and all(_finite(s) for s in kept.values())


def test_ignore_lets_the_nan_in_but_save_refuses_the_poisoned_state(tmp_path):
    cfg = parse(TINY)
    trainer, task = _launch_trainer(cfg, nonfinite="ignore")
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for i in range(1, 4):
            xs, labels, mask = task.sample(jax.random.PRNGKey(i), cfg.batch_size)
            if i == 3:
                xs = xs.at[NAN_AT].set(jnp.nan)
            trainer.train_batch(xs, labels, mask)
            if i < 3:
                assert trainer.save(ckpt)
        assert not _finite(trainer.state.params)  # what issue 13 saw: the weights went NaN
        with pytest.raises(NonFiniteError, match="was not saved") as err:
            trainer.save(ckpt)
        assert err.value.step == 3 and err.value.leaf.startswith(("params/", "opt_state/"))
        assert trainer.nonfinite_counts()["skipped"] == 0  # "ignore" counts nothing
    kept = _kept_states(tmp_path, trainer)
    assert sorted(kept) == [1, 2] and all(_finite(s) for s in kept.values())


def test_raise_stops_at_the_first_nonfinite_trial_naming_the_input(tmp_path):
    cfg = parse(TINY)
    trainer, task = _launch_trainer(cfg, nonfinite="raise")
    trials = [task.sample(jax.random.PRNGKey(i), cfg.batch_size) for i in range(3)]
    trainer.train_batch(*trials[0])
    before = jax.tree.map(np.asarray, (trainer.state.params, trainer.state.opt_state))
    xs, labels, mask = trials[1]
    with pytest.raises(NonFiniteError, match="at step 2 in the input x: its update was not applied") as err:
        trainer.train_batch(xs.at[NAN_AT].set(jnp.nan), labels, mask)
    assert (err.value.step, err.value.leaf) == (2, "the input x")
    _same((trainer.state.params, trainer.state.opt_state), before)
    # stopped: every training call and save raise again, until clear_nonfinite()
    with pytest.raises(NonFiniteError, match="raised again"):
        trainer.train_batch(*trials[2])
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(NonFiniteError):
            trainer.save(ckpt)
        assert ckpt.steps() == []
        trainer.clear_nonfinite()
        trainer.train_batch(*trials[2])
        assert trainer.save(ckpt)
    assert trainer.step_count == 3
    assert trainer.nonfinite_counts() == {"skipped": 1, "consecutive": 0, "first": 2, "leaf": "the input x"}


def test_max_skips_consecutive_skips_stop_naming_the_first_step_and_leaf():
    cfg = parse(TINY)
    trainer, task = _launch_trainer(cfg, max_skips=3)
    good = [True, False, True, False, False, False]  # a finite trial ends a run: only 4..6 are 3 in a row
    for i, ok in enumerate(good, start=1):
        xs, labels, mask = task.sample(jax.random.PRNGKey(i), cfg.batch_size)
        if not ok:
            mask = mask.at[-1].set(jnp.inf)  # a non-finite target (the loss weights)
        if i < len(good):
            trainer.train_batch(xs, labels, mask)
            if i == 3:
                after_3 = jax.tree.map(np.asarray, trainer.state.params)
            continue
        with pytest.raises(NonFiniteError, match=r"at step 4 in the target y: this step and the 2 after it \(to step "
                                                 r"6\) had non-finite values.*max_skips=3") as err:
            trainer.train_batch(xs, labels, mask)
    assert (err.value.step, err.value.leaf) == (4, "the target y")
    _same(trainer.state.params, after_3)
    assert trainer.nonfinite_counts() == {"skipped": 4, "consecutive": 3, "first": 4, "leaf": "the target y"}


def test_check_policy_arguments():
    learner = dt.compile(dt.nn.LIFLayer(3, 4), dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2, loss_fn=dt.train.mse)
    with pytest.raises(ValueError, match="'nonfinite'.*'warn'"):
        dt.train.Trainer(learner, optax.sgd(0.1), nonfinite="warn")
    with pytest.raises(ValueError, match="'max_skips' must be a positive int"):
        dt.train.Trainer(learner, optax.sgd(0.1), max_skips=0)
    with pytest.raises(ValueError, match="'check_every' must be a positive int"):
        dt.train.Trainer(learner, optax.sgd(0.1), check_every=0)
    with pytest.raises(config.ConfigError, match="'nonfinite': must be one of"):
        config.load(None, ["nonfinite=warn"])
    assert config.load(None, ["nonfinite=raise", "max_skips=2"]).max_skips == 2


# ---- streams --------------------------------------------------------------------------------
B, N_IN, N, N_OUT = 4, 3, 8, 2


def _stream_trainer(loss_fn=dt.train.mse, target=None, **options):
    brainstate.random.seed(0)
    net = Stack(dt.nn.LeakyRate(N_IN, N), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=loss_fn)
    target = jnp.zeros((B, N_OUT)) if target is None else target
    return dt.train.Trainer(learner, optax.adam(1e-2), (jnp.zeros((B, N_IN)), target), **options)


def _stream(n, nan_steps=()):
    xs = jax.random.normal(jax.random.PRNGKey(0), (n, B, N_IN))
    for t in nan_steps:
        xs = xs.at[t, 1, 0].set(jnp.nan)
    return xs, 0.5 * jnp.nan_to_num(xs)[..., :N_OUT]


def test_a_nan_stream_step_is_skipped_as_if_it_never_came():
    xs, ys = _stream(6, nan_steps=[2])
    skipping, reference = _stream_trainer(), _stream_trainer()
    for t in range(6):
        skipping.step(xs[t], ys[t])
        if t != 2:
            reference.step(xs[t], ys[t])
    # parameters, optimizer state AND hidden states and traces: the stream goes on unpoisoned
    _same(skipping.state.params, reference.state.params)
    _same(skipping.state.opt_state, reference.state.opt_state)
    _same(skipping.state.learner_state, reference.state.learner_state)
    assert _finite(skipping.state)
    assert (skipping.step_count, int(skipping.state.step), reference.step_count) == (6, 6, 5)
    assert skipping.nonfinite_counts() == {"skipped": 1, "consecutive": 0, "first": 3, "leaf": "the input x"}


def test_a_stream_reads_the_counters_every_check_every_steps_and_is_halted_in_between(tmp_path):
    xs, ys = _stream(8, nan_steps=[0, 1])
    trainer = _stream_trainer(max_skips=2, check_every=5)
    start = jax.tree.map(np.asarray, trainer.state)
    for t in range(4):  # no host read yet: steps 3 and 4 are finite, but the halted state drops them
        trainer.step(xs[t], ys[t])
    with pytest.raises(NonFiniteError, match="at step 1 in the input x: this step and the 1 after it") as err:
        trainer.step(xs[4], ys[4])  # the 5th step reads the counters
    assert err.value.step == 1
    _same(trainer.state.params, start.params)
    _same(trainer.state.learner_state, start.learner_state)
    assert trainer.nonfinite_counts()["skipped"] == 5 and trainer.step_count == 5
    with pytest.raises(NonFiniteError, match="raised again"):
        trainer.step(xs[5], ys[5])
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(NonFiniteError):
            trainer.save(ckpt)


def test_a_non_finite_gradient_with_a_finite_loss_names_the_parameter():
    @jax.custom_vjp
    def poison_gradient(out, bad):
        return out

    def fwd(out, bad):
        return out, bad

    def bwd(bad, g):  # a NaN cotangent where bad > 0: the loss stays finite, the gradient does not
        return g * jnp.where(bad > 0, jnp.nan, 1.0), jnp.zeros_like(bad)

    poison_gradient.defvjp(fwd, bwd)

    def loss(out, y):
        return dt.train.mse(poison_gradient(out, y["bad"]), y["t"])

    target = {"t": jnp.zeros((B, N_OUT)), "bad": jnp.zeros(())}
    trainer = _stream_trainer(loss, target, nonfinite="raise", check_every=1)
    xs, ys = _stream(3)
    trainer.step(xs[0], {"t": ys[0], "bad": jnp.zeros(())})
    with pytest.raises(NonFiniteError, match="at step 2 in the gradient of ") as err:
        trainer.step(xs[1], {"t": ys[1], "bad": jnp.ones(())})
    params = {r.path.removeprefix("params/") for r in trainer.rules.leaves if r.path.startswith("params/")}
    assert err.value.leaf.removeprefix("the gradient of ") in params


def test_the_policy_applies_to_each_step_of_a_block():
    xs, ys = _stream(8, nan_steps=[3])
    block, single = _stream_trainer(), _stream_trainer()
    losses = block.step_block(xs, ys)
    for t in range(8):
        np.testing.assert_array_equal(np.asarray(single.step(xs[t], ys[t])), np.asarray(losses[t]))
    _same(block.state, single.state)  # the counters too
    assert block.nonfinite_counts() == {"skipped": 1, "consecutive": 0, "first": 4, "leaf": "the input x"}
    # a block that ends halted raises when it crosses check_every; the state is the pre-halt one
    halting = _stream_trainer(max_skips=2, check_every=8)
    xs, ys = _stream(8, nan_steps=[5, 6])
    with pytest.raises(NonFiniteError, match="at step 6 in the input x"):
        halting.step_block(xs, ys)
    ref = _stream_trainer()
    ref.step_block(xs[:5], ys[:5])
    _same(halting.state.params, ref.state.params)


def test_the_counters_are_checkpointed(tmp_path):
    xs, ys = _stream(4, nan_steps=[1])
    trainer = _stream_trainer()
    for t in range(4):
        trainer.step(xs[t], ys[t])
    with Checkpointer(tmp_path) as ckpt:
        trainer.save(ckpt)
        ckpt.wait()
        other = _stream_trainer()
        other.restore(ckpt)
    assert other.nonfinite_counts() == trainer.nonfinite_counts() == {
        "skipped": 1, "consecutive": 0, "first": 2, "leaf": "the input x"}


def test_launch_train_stops_with_exit_code_3_and_one_line(tmp_path, capsys):
    from launch.train import cli

    code = cli(["--steps", "4", "--nonfinite", "raise", "--checkpoint-dir", str(tmp_path), "--checkpoint-every", "1",
                "--task", "evidence_with_a_nan", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and err[0].startswith("python -m launch.train: stopped: non-finite value at step 3 in the "
                                               "input x: its update was not applied"), err
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        assert ckpt.steps() == [1, 2]  # nothing after the stop
