"""DelayedMatchToSample: the trial layout, the labels, argument errors, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.tasks import DelayedMatchToSample
from tests.tasks.learning import train_trials


def test_layout_and_labels():
    task = DelayedMatchToSample(n_stimuli=4, stim_len=2, delay=3, response=2, noise=0.0)
    assert (task.length, task.n_in, task.n_out, task.kind) == (9, 5, 2, "classification")
    xs, labels, mask = task.sample(jax.random.PRNGKey(0), 64)
    xs = np.asarray(xs)
    np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 0, 0, 1, 1])
    first, second = xs[:2, :, :4], xs[5:7, :, :4]
    # one stimulus, held for stim_len steps; silence in the delay; the go cue in the response
    assert (first.sum(-1) == 1).all() and (second.sum(-1) == 1).all()
    assert (first[0] == first[1]).all() and (second[0] == second[1]).all()
    assert (xs[2:5] == 0).all() and (xs[:7, :, 4] == 0).all() and (xs[7:, :, 4] == 1).all()
    assert (xs[7:, :, :4] == 0).all()
    same = (first[0].argmax(-1) == second[0].argmax(-1)).astype(np.int32)
    np.testing.assert_array_equal(labels, same)
    assert 0 < same.mean() < 1


def test_match_probability_and_noise():
    always = DelayedMatchToSample(match_prob=1.0, noise=0.0)
    never = DelayedMatchToSample(match_prob=0.0, noise=0.0)
    assert int(always.sample(jax.random.PRNGKey(0), 32)[1].sum()) == 32
    assert int(never.sample(jax.random.PRNGKey(0), 32)[1].sum()) == 0
    noisy = DelayedMatchToSample(noise=0.5, delay=100)
    xs, _, _ = noisy.sample(jax.random.PRNGKey(0), 32)
    silent = xs[noisy.stim_len : noisy.stim_len + noisy.delay]  # pure noise
    assert float(jnp.std(silent)) == pytest.approx(0.5, rel=0.05)


def test_a_delay_of_a_thousand_steps():
    task = DelayedMatchToSample(delay=1000)
    xs, labels, mask = task.sample(jax.random.PRNGKey(0), 2)
    assert xs.shape == (1015, 2, 3) and float(mask.sum()) == 5


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"n_stimuli": 1}, "n_stimuli"),
        ({"n_stimuli": 2.0}, "n_stimuli"),
        ({"stim_len": 0}, "stim_len"),
        ({"delay": -1}, "delay"),
        ({"delay": True}, "delay"),
        ({"response": 0}, "response"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"match_prob": 1.5}, "match_prob"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, arg):
    with pytest.raises(ValueError, match=f"DelayedMatchToSample: argument '{arg}'.*got {kwargs[arg]!r}"):
        DelayedMatchToSample(**kwargs)


@pytest.mark.slow  # 5.4 s quiet, 12.6 s loaded (2-core machine): a two-layer compile and 30 trials
@pytest.mark.usefixtures("optax_promotion")
def test_a_two_layer_rate_network_learns_it():
    """XOR across a delay of 5: two LeakyRate layers (the second combines the held sample
    with the test), D-RTRL, Adam 1e-2, 30 trials of 32. Held-out accuracy (128 trials),
    measured for seeds 0, 1, 2: 1.000, 1.000, 0.984 (chance 0.5); required > 0.8."""
    task = DelayedMatchToSample(stim_len=3, delay=5, response=3)
    before, after = train_trials(task, seed=0, steps=30, layers=2)
    assert after > 0.8, (before, after)
