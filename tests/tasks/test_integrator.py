"""Integrator: the targets' recurrence, argument errors, and learning (regression)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.tasks import Integrator
from tests.tasks.learning import train_trials, zero_mse


@pytest.mark.parametrize("leak", [0.0, 0.25])
def test_targets_are_the_leaky_integral_of_the_inputs(leak):
    task = Integrator(n_in=3, length=30, leak=leak, dt=0.2)
    assert (task.n_in, task.n_out, task.kind) == (3, 3, "regression")
    xs, ys, mask = task.sample(jax.random.PRNGKey(0), 8)
    assert xs.shape == ys.shape == (30, 8, 3) and ys.dtype == jnp.float32
    np.testing.assert_array_equal(mask, np.ones(30))
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    want, y = [], np.zeros((8, 3))
    for x in xs:
        y = (1 - leak) * y + 0.2 * x
        want.append(y)
    np.testing.assert_allclose(ys, np.stack(want), rtol=1e-5, atol=1e-5)


def test_inputs_are_a_per_trial_drift_plus_noise():
    task = Integrator(length=400, noise=0.3, drift=2.0)
    xs, _, _ = task.sample(jax.random.PRNGKey(1), 256)
    xs = np.asarray(xs[..., 0])
    assert np.mean(np.std(xs, axis=0)) == pytest.approx(0.3, rel=0.05)  # within a trial: the noise
    assert np.std(np.mean(xs, axis=0)) == pytest.approx(2.0, rel=0.15)  # across trials: the drift


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"n_in": 0}, "n_in"),
        ({"length": 0}, "length"),
        ({"length": 5.0}, "length"),
        ({"leak": 1.0}, "leak"),
        ({"leak": -0.1}, "leak"),
        ({"dt": 0.0}, "dt"),
        ({"noise": -1.0}, "noise"),
        ({"drift": float("inf")}, "drift"),
        ({"drift": True}, "drift"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, arg):
    with pytest.raises(ValueError, match=f"Integrator: argument '{arg}'.*got {kwargs[arg]!r}"):
        Integrator(**kwargs)


@pytest.mark.slow  # 3.4 s quiet, 7.6 s loaded (2-core machine); test_drifting.py keeps a fast learning test
@pytest.mark.usefixtures("optax_promotion")
def test_a_rate_network_learns_it():
    """A leaky integral (leak 0.1, T = 20): one LeakyRate layer of 32, D-RTRL (exact here:
    no recurrent weights), Adam 1e-2, 40 trials of 32, MSE loss. Held-out MSE (128
    trials), measured for seeds 0, 1, 2: 0.0045, 0.0199, 0.0188, against 0.1066 for
    predicting 0 (R^2 >= 0.81); required < 0.4 of the zero predictor's (R^2 > 0.6)."""
    task = Integrator(length=20, leak=0.1, noise=0.5)
    before, after = train_trials(task, seed=0, steps=40)
    assert after < 0.4 * zero_mse(task), (before, after, zero_mse(task))
