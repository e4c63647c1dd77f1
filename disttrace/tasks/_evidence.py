"""Evidence (cue) accumulation, as in e-prop (Bellec et al., 2020), generated on the fly.

An agent sees ``n_cues`` cues, each on the left or the right input population (Poisson
spikes for ``cue_len`` steps, then ``gap`` silent steps), waits ``delay`` steps, and then,
while the recall population fires, must report the side that had more cues. Background
noise fires throughout. No downloads; every batch is drawn from a ``jax.random`` key.

Input channels: ``[left | right | recall | noise]``, ``n_per_group`` each.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.tasks._trial_task import TrialTask

__all__ = ["EvidenceAccumulation"]


@dataclasses.dataclass(frozen=True)
class EvidenceAccumulation(TrialTask):
    """Task parameters; :meth:`sample` draws a batch.

    The common task interface (:class:`~disttrace.tasks.TrialTask`: ``kind`` =
    "classification", ``trials``, ``stream``, ``held_out``, ``metric``) comes on top;
    labels are one per trial (B,).

    Attributes:
      n_cues: cues per trial (odd, so there is no tie).
      cue_len, gap: steps a cue lasts and the silence after it.
      delay: steps between the last cue and the recall period.
      recall: length of the recall period (the loss is taken there).
      n_per_group: input neurons per population.
      rate: firing probability per step of an active population.
      noise_rate: firing probability per step of the noise population.
    """

    n_cues: int = 7
    cue_len: int = 6
    gap: int = 4
    delay: int = 20
    recall: int = 10
    n_per_group: int = 10
    rate: float = 0.4
    noise_rate: float = 0.05

    kind = "classification"

    def __post_init__(self):
        who = "EvidenceAccumulation"
        for name in ("n_cues", "cue_len", "recall", "n_per_group"):
            checks.positive_int(who, name, getattr(self, name))
        for name in ("gap", "delay"):
            checks.non_negative_int(who, name, getattr(self, name))
        if self.n_cues % 2 == 0:
            raise ValueError(f"{who}: argument 'n_cues' must be odd (no ties); got {self.n_cues}")
        for name in ("rate", "noise_rate"):
            checks.unit_interval(who, name, getattr(self, name), high_open=False)

    @property
    def n_in(self) -> int:
        return 4 * self.n_per_group

    @property
    def n_out(self) -> int:
        return 2

    @property
    def length(self) -> int:
        return self.n_cues * (self.cue_len + self.gap) + self.delay + self.recall

    def sample(self, key: jax.Array, batch: int):
        """Draws a batch.

        Returns:
          ``(xs, labels, mask)``: spikes (T, B, n_in) float32, labels (B,) int32 (0 left,
          1 right), and mask (T,) float32, 1 during the recall period.
        """
        k_side, k_spk, k_noise = jax.random.split(key, 3)
        sides = jax.random.bernoulli(k_side, 0.5, (batch, self.n_cues)).astype(jnp.int32)  # 1 = right
        labels = (sides.sum(1) * 2 > self.n_cues).astype(jnp.int32)
        t = jnp.arange(self.length)
        period = self.cue_len + self.gap
        cue_idx = t // period
        in_cue = (t % period < self.cue_len) & (cue_idx < self.n_cues)
        side_t = sides[:, jnp.clip(cue_idx, 0, self.n_cues - 1)].T  # (T, B)
        left_on = in_cue[:, None] & (side_t == 0)
        right_on = in_cue[:, None] & (side_t == 1)
        recall_on = jnp.broadcast_to((t >= self.length - self.recall)[:, None], left_on.shape)
        active = jnp.stack([left_on, right_on, recall_on], axis=-1)  # (T, B, 3)
        probs = jnp.repeat(active.astype(jnp.float32) * self.rate, self.n_per_group, axis=-1)
        spikes = jax.random.bernoulli(k_spk, probs).astype(jnp.float32)
        noise = jax.random.bernoulli(k_noise, self.noise_rate, (self.length, batch, self.n_per_group))
        xs = jnp.concatenate([spikes, noise.astype(jnp.float32)], axis=-1)
        mask = (t >= self.length - self.recall).astype(jnp.float32)
        return xs, labels, mask
