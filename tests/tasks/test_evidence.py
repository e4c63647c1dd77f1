import jax
import jax.numpy as jnp
import pytest

from disttrace.tasks import EvidenceAccumulation


def test_sample_shapes_and_labels():
    task = EvidenceAccumulation(n_cues=5, delay=5)
    xs, labels, mask = task.sample(jax.random.PRNGKey(0), 16)
    assert xs.shape == (task.length, 16, task.n_in)
    assert labels.shape == (16,) and set(labels.tolist()) <= {0, 1}
    assert float(mask.sum()) == task.recall
    # the label is the side whose population fired during more cue windows: left/right counts agree
    left = xs[:, :, : task.n_per_group].sum((0, 2))
    right = xs[:, :, task.n_per_group : 2 * task.n_per_group].sum((0, 2))
    agree = jnp.mean((right > left).astype(jnp.int32) == labels)
    assert float(agree) > 0.8


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_cues"):
        EvidenceAccumulation(n_cues=4)
    with pytest.raises(ValueError, match="rate"):
        EvidenceAccumulation(rate=1.5)
