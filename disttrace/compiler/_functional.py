"""The compiler boundary: a brainstate model's states become plain pytrees.

A :class:`ModuleBinding` partitions a model's states into parameters
(``ParamState``), hidden states (``HiddenState``) and the rest (*aux*: read or written
but neither learned nor traced), each a dict keyed by the state's path tuple. Its
:meth:`ModuleBinding.pure` turns ``model(*args)`` into a pure function of those dicts,
which is what the compiler traces and what jit, sharding and Orbax see below.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import brainstate
import jax
import jax.numpy as jnp

__all__ = ["ModuleBinding", "path_str"]

Path = tuple


def path_str(path: Path) -> str:
    """``('layer', 'weight')`` -> ``'layer.weight'``."""
    return ".".join(str(p) for p in path)


def _strong(x):
    # Weakly typed initial values (python scalars broadcast by init functions) make
    # jit retrace once their first update returns a strongly typed value.
    x = jnp.asarray(x)
    return jax.lax.convert_element_type(x, x.dtype) if getattr(x, "weak_type", False) else x


@dataclasses.dataclass(frozen=True)
class ModuleBinding:
    """A model and the partition of its states.

    Attributes:
      model: the brainstate module.
      params: path -> ``ParamState``.
      hidden: path -> ``HiddenState``.
      aux: path -> any other ``State``.
    """

    model: Any
    params: dict
    hidden: dict
    aux: dict

    @classmethod
    def of(cls, model) -> ModuleBinding:
        params, hidden, aux = {}, {}, {}
        for path, st in model.states().items():
            if isinstance(st, brainstate.ParamState):
                params[path] = st
            elif isinstance(st, brainstate.HiddenState):
                hidden[path] = st
            else:
                aux[path] = st
        return cls(model, dict(sorted(params.items())), dict(sorted(hidden.items())), dict(sorted(aux.items())))

    def values(self) -> tuple[dict, dict, dict]:
        """Current (params, hidden, aux) values with weak types removed."""
        get = lambda d: {p: jax.tree.map(_strong, s.value) for p, s in d.items()}
        return get(self.params), get(self.hidden), get(self.aux)

    def write(self, hidden: dict | None = None, aux: dict | None = None, params: dict | None = None) -> None:
        """Stores concrete values back into the model's states."""
        for src, dst in ((hidden, self.hidden), (aux, self.aux), (params, self.params)):
            if src is not None:
                for p, v in src.items():
                    dst[p].value = v

    @contextlib.contextmanager
    def bound(self, params: dict, hidden: dict, aux: dict) -> Iterator[None]:
        """Temporarily gives the states the (possibly traced) values given."""
        all_states = {**self.params, **self.hidden, **self.aux}
        with brainstate.StateTraceStack():
            old = {p: s.value for p, s in all_states.items()}
            try:
                for d, vals in ((self.params, params), (self.hidden, hidden), (self.aux, aux)):
                    for p, s in d.items():
                        s.value = vals[p]
                yield
            finally:
                for p, s in all_states.items():
                    s.value = old[p]

    def read(self) -> tuple[dict, dict]:
        """(hidden, aux) values as the states hold them now (inside :meth:`bound`)."""
        return {p: s.value for p, s in self.hidden.items()}, {p: s.value for p, s in self.aux.items()}

    def pure(self, call: Callable[..., Any] | None = None) -> Callable:
        """``(params, hidden, aux, *args) -> (out, hidden_new, aux_new)`` for ``call(*args)``.

        ``call`` defaults to ``model.__call__``.
        """
        call = self.model if call is None else call

        def fn(params, hidden, aux, *args):
            with self.bound(params, hidden, aux):
                out = call(*args)
                new_hidden, new_aux = self.read()
            return out, new_hidden, new_aux

        return fn
