"""Integrator (regression): output the running, optionally leaky, integral of a noisy input.

Each input channel carries ``x_t = μ + noise·ε_t``: a drift μ ~ N(0, drift²) drawn per
trial and channel, plus white noise ε_t ~ N(0, 1). The target of every step is the
integral of what the model has seen so far, per channel:

.. math::
    y_t = (1 - \\text{leak})\\, y_{t-1} + dt\\, x_t, \\qquad y_{-1} = 0

(``leak = 0``: the exact running sum, a perfect integrator; ``leak > 0``: a leaky one
that forgets with time constant ≈ 1/leak steps). The target is a function of the inputs
alone, so a perfect model reaches MSE 0; the score is the MSE over every step (mask all
ones). The classic neural-integrator task (e.g. Seung, 1996; Mante et al., 2013). No
downloads: every batch is drawn from a ``jax.random`` key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.tasks._trial_task import TrialTask

__all__ = ["Integrator"]


@dataclasses.dataclass(frozen=True)
class Integrator(TrialTask):
    """Task parameters; :meth:`sample` draws a batch (module docstring).

    Attributes:
      n_in: input channels, each integrated on its own (>= 1); ``n_out`` = n_in.
      length: steps per trial T (>= 1).
      leak: forgetting per step, in [0, 1) (0: perfect integrator).
      dt: input scale of the integral (> 0), keeps the targets O(1): with
        ``leak = 0`` the last target's spread is about ``dt·√(T·noise² + T²·drift²)``.
      noise: standard deviation of the per-step input noise (>= 0).
      drift: standard deviation of the per-trial mean input (>= 0).

    Shapes: ``kind`` = "regression"; targets (T, B, n_out) float32.

    Raises:
      ValueError: on a bad argument (named, with the value and what is allowed).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> task = Integrator(length=4, dt=1.0)
      >>> xs, ys, mask = task.sample(jax.random.PRNGKey(0), 3)
      >>> xs.shape, ys.shape, mask.tolist()
      ((4, 3, 1), (4, 3, 1), [1.0, 1.0, 1.0, 1.0])
      >>> bool(jnp.allclose(ys, jnp.cumsum(xs, axis=0)))
      True
    """

    n_in: int = 1
    length: int = 50
    leak: float = 0.0
    dt: float = 0.1
    noise: float = 1.0
    drift: float = 0.5

    kind = "regression"

    def __post_init__(self):
        who = "Integrator"
        checks.positive_int(who, "n_in", self.n_in)
        checks.positive_int(who, "length", self.length)
        checks.unit_interval(who, "leak", self.leak)
        checks.number(who, "dt", self.dt, low=0.0, low_open=True)
        checks.number(who, "noise", self.noise, low=0.0)
        checks.number(who, "drift", self.drift, low=0.0)

    @property
    def n_out(self) -> int:
        return self.n_in

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compile per (task, batch): eager calls are fast
    def sample(self, key: jax.Array, batch: int):
        """Draws a batch.

        Args:
          key: a ``jax.random`` key; batch: trials B.

        Returns:
          ``(xs, targets, mask)``: inputs (T, B, n_in) float32, targets (T, B, n_out)
          float32 (the integral up to and including each step), mask (T,) float32 of ones.

        Raises:
          ValueError: if ``batch`` is not a positive int.
        """
        batch = checks.positive_int("Integrator.sample", "batch", batch)
        k_drift, k_noise = jax.random.split(key)
        mean = self.drift * jax.random.normal(k_drift, (batch, self.n_in), jnp.float32)
        xs = mean + self.noise * jax.random.normal(k_noise, (self.length, batch, self.n_in), jnp.float32)
        keep = jnp.float32(1.0 - self.leak)

        def integrate(y, x):
            y = keep * y + self.dt * x
            return y, y

        _, targets = jax.lax.scan(integrate, jnp.zeros((batch, self.n_in), jnp.float32), xs)
        return xs, targets, jnp.ones((self.length,), jnp.float32)
