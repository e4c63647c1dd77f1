"""Compare a learner's gradients with BPTT's on the same model, weights and data."""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from disttrace.algorithms import compile as dt_compile

__all__ = ["cosine", "flat", "gradients"]


def gradients(make_model: Callable, algorithm, xs, ys, *, seed: int = 0, chunk_size=None, **options):
    """Builds ``make_model()`` with a fixed seed, compiles it with ``algorithm`` and
    returns the ``etrace_grad`` of the mean MSE over the sequence.

    Args:
      make_model: no-argument constructor of the model.
      algorithm: ``D_RTRL``, ``ES_D_RTRL``, ``Hybrid`` or ``BPTT``.
      xs: (T, B, I) inputs; ys: (T, B, O) targets.
    """
    brainstate.random.seed(seed)
    model = make_model()
    learner = dt_compile(model, algorithm, jnp.zeros(xs.shape[1:], xs.dtype), batch_size=xs.shape[1], **options)
    step_fn = lambda x, y: jnp.mean((learner(x) - y) ** 2)
    return learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size=chunk_size)


def flat(tree) -> np.ndarray:
    """All leaves of a gradient tree, flattened and concatenated (sorted by path)."""
    return np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(tree)])


def cosine(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
