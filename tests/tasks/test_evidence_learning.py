"""EvidenceAccumulation through the common interface: a small network learns it from
``trials`` and is scored with ``held_out`` and ``metric``."""

import pytest

from disttrace.tasks import EvidenceAccumulation
from tests.tasks.learning import train_trials


@pytest.mark.slow  # 7.3 s (2-core machine): the task draws op by op (its sample is not jitted)
@pytest.mark.usefixtures("optax_promotion")
def test_a_rate_network_learns_it():
    """Three cues, delay 4: one LeakyRate layer of 32, D-RTRL, Adam 1e-2, 40 trials of 32.
    Held-out accuracy (128 trials), measured for seeds 0, 1, 2: 0.992, 1.000, 0.984
    (chance 0.5); required > 0.8."""
    task = EvidenceAccumulation(n_cues=3, cue_len=3, gap=2, delay=4, recall=3)
    before, after = train_trials(task, seed=0, steps=40)
    assert after > 0.8, (before, after)
