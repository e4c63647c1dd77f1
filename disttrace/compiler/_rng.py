"""brainstate's random key at the compiler boundary.

``brainstate.random.*`` calls and ``brainstate.nn.Dropout`` draw from one global
``RandomState`` (``brainstate.random.DEFAULT``), splitting its key on every draw. A
step traced with that key as a concrete value would bake the draw into the jaxpr as a
constant (every step the same dropout mask) and leave the global holding a tracer
(every later random call in the process raises ``UnexpectedTracerError``). So:

- a model whose step draws from the global key gets it as one more *aux* state under
  the reserved path :data:`RNG_PATH` (``"~"`` cannot occur in an attribute name): its
  key is an input of the step and its split key an output, so it lives in the learner
  state (``OnlineState.aux`` / ``BPTTState.aux``), advances every step and is saved
  with it. An aux entry rather than a field of its own: the state types, their mesh
  layout (aux is replicated, which is what a key must be), partition rules and
  checkpoints all take it unchanged, and models without randomness carry nothing;
- every key state (``RandomState``: the global one or a model's own) is held in the
  pytrees as its raw key data (an unsigned-integer array, ``(2,)`` for the default
  threefry key), so Orbax and sharding see a plain array; it is wrapped back into a
  typed key of the state's own implementation when written into the state;
- whoever runs the model with traced values swaps the key in and restores the
  original in a ``finally`` (:func:`global_key_guard`), so the global never keeps a
  tracer.

Under SPMD (``jit`` over a mesh with the batch sharded on ``data``) the key is
replicated and every draw has the global (batch-leading) shape, so each data shard
gets its own slice of one draw: different values per shard, without a per-shard key.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import brainstate
import jax

__all__ = ["RNG_PATH", "KeyUse", "from_data", "global_key_guard", "global_key_state", "is_key_state", "to_data"]

#: The aux path under which a learner threads brainstate's global key.
RNG_PATH: tuple = ("~rng",)


def global_key_state() -> brainstate.State:
    """brainstate's global ``RandomState`` (the one ``brainstate.random.*`` draws from)."""
    return brainstate.random.DEFAULT


def is_key_state(state: Any) -> bool:
    """Whether a ``State`` holds a random key (a ``brainstate.random.RandomState``)."""
    return isinstance(state, brainstate.random.RandomState)


def _is_typed_key(value: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key)


def to_data(value: Any) -> Any:
    """A key as raw key data (typed keys unwrapped; raw data passes unchanged)."""
    return jax.random.key_data(value) if _is_typed_key(value) else value


def from_data(data: Any, like: Any) -> Any:
    """Raw key data as a key of ``like``'s kind: typed with ``like``'s implementation if
    ``like`` is a typed key, else unchanged."""
    if _is_typed_key(like) and not _is_typed_key(data):
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
    return data


@dataclasses.dataclass
class KeyUse:
    """What :func:`global_key_guard` saw: ``drew`` is True when the global key was
    changed inside the block (a random draw)."""

    drew: bool = False


@contextlib.contextmanager
def global_key_guard() -> Iterator[KeyUse]:
    """Keeps brainstate's global key as it is outside the block, whatever happens inside.

    Yields a :class:`KeyUse`; on a normal exit its ``drew`` says whether the block
    changed the key. The original key is put back in a ``finally``, so a key traced
    inside the block never leaks out of it.
    """
    state = global_key_state()
    old = state.value
    use = KeyUse()
    try:
        yield use
        use.drew = state.value is not old
    finally:
        state.value = old
