"""Choosing ``chunk_size`` by a one-off measurement (``etrace_grad(..., chunk_size="auto")``).

The chunked forms compute the same gradient for every chunk size U (to float rounding),
but their speed depends on U: a larger chunk means fewer passes over the big trace and
larger matrix products, a smaller one a smaller working set. Measured on a 2-core CPU,
one recurrent LIF layer of 512 neurons, batch 64, T = 400 (``benchmarks/README.md``):
chunked D-RTRL took 1.61× BPTT's time at U = 25, 1.40× at 50, 1.23× at 100 and 1.21× at
200; at 128 neurons and batch 16 U = 200 was best and U = 25 was 30 % slower. The best U
depends on the model, the batch, T and the device, so it is measured rather than guessed:
the program ``etrace_grad`` would run is compiled for each candidate and timed on the
call's own inputs, without changing the learner's state.

Candidates are 32, 64, 128 and 256 below T, and T itself when T ≤ 256: memory grows with
U, never with T, so the choice is capped at 256 steps of per-step factors. They are timed on
the first ``min(T, PROBE_STEPS)`` steps (512: at least two chunks of the largest
candidate), so tuning a call over 100,000 steps costs a few calls of 512 steps, not of
100,000.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax

__all__ = ["AUTO", "ChunkChoice", "MAX_AUTO_CHUNK", "PROBE_STEPS", "chunk_candidates", "fastest_chunk"]

AUTO = "auto"
MAX_AUTO_CHUNK = 256
PROBE_STEPS = 2 * MAX_AUTO_CHUNK
_BASES = (32, 64, 128, 256)


class ChunkChoice(NamedTuple):
    """The outcome of a chunk-size measurement.

    Attributes:
      chunk_size: the fastest candidate, or ``None`` where the learner has no chunked form
        (its calls are the same for every chunk size).
      seconds: candidate -> the fastest of the timed calls, in wall seconds (empty when
        nothing was timed: no chunked form, or a single candidate).
    """

    chunk_size: int | None
    seconds: dict


def chunk_candidates(t_len: int) -> tuple[int, ...]:
    """The chunk sizes ``"auto"`` tries for sequences of ``t_len`` steps, ascending."""
    found = {u for u in _BASES if u < t_len}
    if t_len <= MAX_AUTO_CHUNK:
        found.add(t_len)
    return tuple(sorted(found))


def fastest_chunk(candidates: tuple[int, ...], compile_call: Callable[[int], Callable[[], object]],
                  repeats: int = 2) -> ChunkChoice:
    """Times one call per candidate and returns the fastest.

    Args:
      candidates: chunk sizes to try (a single one is returned untimed).
      compile_call: ``compile_call(u)`` compiles the program for chunk size ``u`` and
        returns a function that runs one call of it (without side effects).
      repeats: timed calls per candidate after one untimed call; the fastest counts.

    Returns:
      :class:`ChunkChoice`; ties go to the smaller chunk (less memory).
    """
    if len(candidates) == 1:
        return ChunkChoice(candidates[0], {})
    seconds = {}
    for u in candidates:
        run = compile_call(u)
        jax.block_until_ready(run())  # the first call pays for allocations and caches
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run())
            best = min(best, time.perf_counter() - t0)
        seconds[u] = best
    return ChunkChoice(min(seconds, key=lambda u: (seconds[u], u)), seconds)
