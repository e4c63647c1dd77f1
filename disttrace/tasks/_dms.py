"""Delayed match-to-sample: is the second stimulus the same as the first?

A trial shows a sample stimulus (one of ``n_stimuli``) for ``stim_len`` steps, then
``delay`` silent steps, then a test stimulus for ``stim_len`` steps; during the
``response`` steps that follow, a go cue is on and the answer is read: 1 (match) if the
test stimulus is the sample, 0 (non-match) otherwise. With two stimuli this is XOR across
time: a model must hold the sample through the delay and combine it non-linearly with
the test, so neither stimulus alone says anything about the answer (the classic working
memory task, e.g. Miller, Erickson & Desimone, 1996; Masse et al., 2019).

Input channels: ``[stimulus one-hot (n_stimuli) | go cue (1)]``, each plus Gaussian noise
of standard deviation ``noise`` at every step. No downloads: every batch is drawn from a
``jax.random`` key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.tasks._trial_task import TrialTask

__all__ = ["DelayedMatchToSample"]


@dataclasses.dataclass(frozen=True)
class DelayedMatchToSample(TrialTask):
    """Task parameters; :meth:`sample` draws a batch (module docstring).

    Attributes:
      n_stimuli: stimuli to choose from (>= 2); a non-match test is any other one.
      stim_len: steps each stimulus lasts (>= 1).
      delay: silent steps between the two stimuli (>= 0; 1000 and more work: a trial is
        drawn in one piece, T·B·n_in floats).
      response: steps of the response window, where the answer is read (>= 1).
      noise: standard deviation of the Gaussian noise on every input (>= 0).
      match_prob: probability that a trial is a match, in [0, 1].

    Shapes: ``length`` T = 2·stim_len + delay + response; ``n_in`` = n_stimuli + 1;
    ``n_out`` = 2 (0 non-match, 1 match); ``kind`` = "classification".

    Raises:
      ValueError: on a bad argument (named, with the value and what is allowed).

    Example:
      >>> import jax
      >>> task = DelayedMatchToSample(stim_len=2, delay=3, response=2)
      >>> xs, labels, mask = task.sample(jax.random.PRNGKey(0), 5)
      >>> xs.shape, labels.shape, mask.tolist()
      ((9, 5, 3), (5,), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    """

    n_stimuli: int = 2
    stim_len: int = 5
    delay: int = 10
    response: int = 5
    noise: float = 0.1
    match_prob: float = 0.5

    kind = "classification"

    def __post_init__(self):
        who = "DelayedMatchToSample"
        checks.positive_int(who, "n_stimuli", self.n_stimuli)
        if self.n_stimuli < 2:
            raise ValueError(f"{who}: argument 'n_stimuli' must be an int >= 2 (a non-match needs another); got "
                             f"{self.n_stimuli!r}")
        for name in ("stim_len", "response"):
            checks.positive_int(who, name, getattr(self, name))
        checks.non_negative_int(who, "delay", self.delay)
        checks.number(who, "noise", self.noise, low=0.0)
        checks.unit_interval(who, "match_prob", self.match_prob, high_open=False)

    @property
    def n_in(self) -> int:
        return self.n_stimuli + 1

    @property
    def n_out(self) -> int:
        return 2

    @property
    def length(self) -> int:
        return 2 * self.stim_len + self.delay + self.response

    @functools.partial(jax.jit, static_argnums=(0, 2))  # one compile per (task, batch): eager calls are fast
    def sample(self, key: jax.Array, batch: int):
        """Draws a batch.

        Args:
          key: a ``jax.random`` key; batch: trials B.

        Returns:
          ``(xs, labels, mask)``: inputs (T, B, n_in) float32, labels (B,) int32 (1
          match, 0 non-match), mask (T,) float32, 1 during the response window.

        Raises:
          ValueError: if ``batch`` is not a positive int.
        """
        batch = checks.positive_int("DelayedMatchToSample.sample", "batch", batch)
        k_sample, k_match, k_other, k_noise = jax.random.split(key, 4)
        n = self.n_stimuli
        first = jax.random.randint(k_sample, (batch,), 0, n)
        match = jax.random.bernoulli(k_match, self.match_prob, (batch,))
        other = (first + jax.random.randint(k_other, (batch,), 1, n)) % n  # any stimulus but the first
        second = jnp.where(match, first, other)
        t = jnp.arange(self.length)
        test_start = self.stim_len + self.delay
        in_first = (t < self.stim_len)[:, None]
        in_second = ((t >= test_start) & (t < test_start + self.stim_len))[:, None]
        go = t >= test_start + self.stim_len
        stim = (in_first & (jnp.arange(n) == first[:, None, None])) | (in_second & (jnp.arange(n) == second[:, None, None]))
        stim = jnp.swapaxes(stim, 0, 1)  # (B, T, n) -> (T, B, n)
        cue = jnp.broadcast_to(go[:, None, None], (self.length, batch, 1))
        clean = jnp.concatenate([stim, cue], axis=-1).astype(jnp.float32)
        xs = clean + self.noise * jax.random.normal(k_noise, clean.shape, jnp.float32)
        return xs, match.astype(jnp.int32), go.astype(jnp.float32)
