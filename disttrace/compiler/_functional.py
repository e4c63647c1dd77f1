"""The compiler boundary: a brainstate model's states become plain pytrees.

A :class:`ModuleBinding` partitions a model's states into parameters
(``ParamState``), hidden states (``HiddenState``) and the rest (*aux*: read or written
but neither learned nor traced), each a dict keyed by the state's path tuple. Its
:meth:`ModuleBinding.pure` turns ``model(*args)`` into a pure function of those dicts,
which is what the compiler traces and what jit, sharding and Orbax see below.

Which states may carry memory from one step to the next:

- ``HiddenState``: traced; the online gradient flows through it (eligibility traces);
- ``ParamState``: learned; constant within a sequence;
- every other ``State`` (``ShortTermState``, ``BatchState``, a plain ``State``): carried
  across steps *without* gradient, so allowed only where no gradient is lost: its old
  value may not feed the model output or a hidden state's new value while its new
  value depends on the parameters or hidden states (``_memory``). Running statistics
  and step counters are fine; memory the loss depends on belongs in a ``HiddenState``;
- a plain Python attribute: never. One replaced by a traced value during a traced run
  is put back and refused (``_attributes``).

Values cross this boundary without units: a state holding a ``brainunit`` quantity
(a weight in mS, a potential in mV) is seen as its mantissa, and gets its unit back
whenever the binding writes the model or runs a step (``disttrace.units``).

brainstate's global random key is threaded as one more aux state when the model draws
from it (:meth:`ModuleBinding.with_rng`, ``_rng``); every traced run puts the global
key back afterwards, so it never keeps a tracer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import brainstate
import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.compiler._attributes import AttributeSnapshot
from disttrace.compiler._rng import (
    RNG_PATH,
    KeyUse,
    from_data,
    global_key_guard,
    global_key_state,
    is_key_state,
    to_data,
)
from disttrace.errors import CompilationError
from disttrace.units import conform, restore, strip

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
      aux: path -> any other ``State``; with :attr:`threads_rng` also brainstate's
        global ``RandomState`` under ``RNG_PATH`` (last).

    Key states (``RandomState``) appear in the value dicts as their raw key data.
    """

    model: Any
    params: dict
    hidden: dict
    aux: dict

    @classmethod
    def of(cls, model, rng: bool = False) -> ModuleBinding:
        """The binding of ``model``'s states; with ``rng``, brainstate's global key too.

        Raises:
          ArgumentTypeError: if ``rng`` is not a bool.
        """
        rng = checks.boolean("ModuleBinding.of", "rng", rng)
        params, hidden, aux = {}, {}, {}
        for path, st in model.states().items():
            if isinstance(st, brainstate.ParamState):
                params[path] = st
            elif isinstance(st, brainstate.HiddenState):
                hidden[path] = st
            else:
                aux[path] = st
        binding = cls(model, dict(sorted(params.items())), dict(sorted(hidden.items())), dict(sorted(aux.items())))
        return binding.with_rng() if rng else binding

    @property
    def threads_rng(self) -> bool:
        """Whether brainstate's global key is an input and output of the step."""
        return RNG_PATH in self.aux

    def with_rng(self) -> ModuleBinding:
        """This binding, also threading brainstate's global key (aux path ``RNG_PATH``)."""
        if self.threads_rng:
            return self
        return dataclasses.replace(self, aux={**self.aux, RNG_PATH: global_key_state()})

    def states(self) -> dict:
        """The model's own states by path (brainstate's global key excluded)."""
        return {p: s for d in (self.params, self.hidden, self.aux) for p, s in d.items() if p != RNG_PATH}

    def values(self) -> tuple[dict, dict, dict]:
        """Current (params, hidden, aux) values with weak types removed."""
        get = lambda d: {p: strip(jax.tree.map(_strong, _value(s)))[0] for p, s in d.items()}
        return get(self.params), get(self.hidden), get(self.aux)

    def write(self, hidden: dict | None = None, aux: dict | None = None, params: dict | None = None) -> None:
        """Stores concrete values back into the model's states."""
        for src, dst in ((hidden, self.hidden), (aux, self.aux), (params, self.params)):
            if src is not None:
                for p, v in src.items():
                    _assign(dst[p], v, dst[p].value)

    @contextlib.contextmanager
    def bound(self, params: dict, hidden: dict, aux: dict) -> Iterator[KeyUse]:
        """Temporarily gives the states the (possibly traced) values given.

        Every state, and brainstate's global key even when it is not threaded, gets its
        original value back in a ``finally``. Yields a :class:`~disttrace.compiler._rng.KeyUse`
        whose ``drew`` is set on a normal exit: whether the run drew from the global key
        although this binding does not thread it.
        """
        all_states = {**self.params, **self.hidden, **self.aux}
        with brainstate.StateTraceStack(), global_key_guard() as use:
            old = {p: s.value for p, s in all_states.items()}
            try:
                for d, vals in ((self.params, params), (self.hidden, hidden), (self.aux, aux)):
                    for p, s in d.items():
                        _assign(s, vals[p], old[p])
                yield use
            finally:
                for p, s in all_states.items():
                    s.value = old[p]

    def units(self) -> dict:
        """path -> the units of each leaf of the state's value now (``strip``), for
        every state of the binding."""
        return {p: strip(_value(s))[1] for d in (self.params, self.hidden, self.aux) for p, s in d.items()}

    def read(self, units: dict | None = None) -> tuple[dict, dict]:
        """(hidden, aux) values as the states hold them now (inside :meth:`bound`),
        without units: each leaf expressed in the unit ``units`` (:meth:`units`, taken
        before the step) gives it.

        Raises:
          ValueError: if the step wrote a state in a unit of another dimension.
        """
        units = {} if units is None else units

        def get(d):
            return {
                p: conform(f"state {path_str(p)!r}", _value(s), units[p]) if p in units else strip(_value(s))[0]
                for p, s in d.items()
            }

        return get(self.hidden), get(self.aux)

    def pure(self, call: Callable[..., Any] | None = None) -> Callable:
        """``(params, hidden, aux, *args) -> (out, hidden_new, aux_new)`` for ``call(*args)``.

        ``call`` defaults to ``model.__call__``. The model is left as it was: its states,
        its attributes and brainstate's global key.

        Raises (when the returned function is called):
          CompilationError: ``kind="leaked_tracer_attribute"`` if the run replaced a
            module attribute with a traced value (``path`` names it, e.g.
            ``"layers.0.last_v"``; the attribute is put back); ``kind="unbound_randomness"``
            if it drew from brainstate's global key but the binding does not thread it
            (:meth:`with_rng`).
        """
        call = self.model if call is None else call

        def fn(params, hidden, aux, *args):
            attrs = AttributeSnapshot.of(self.model)
            units = self.units()
            try:
                with self.bound(params, hidden, aux) as key_use:
                    out = call(*args)
                    new_hidden, new_aux = self.read(units)
            finally:
                leaked = attrs.undo_leaks()
            _check_run(leaked, key_use)
            return out, new_hidden, new_aux

        return fn


def _value(state):
    return to_data(state.value) if is_key_state(state) else state.value


def _assign(state, value, like) -> None:
    # ``value`` has no units (``values``); the state keeps the units it holds (``like``)
    state.value = from_data(value, like) if is_key_state(state) else restore(value, strip(like)[1])


def _check_run(leaked: tuple[str, ...], key_use: KeyUse) -> None:
    if leaked:
        raise CompilationError(
            f"the model keeps a value across steps in the Python attribute {leaked[0]!r} (it holds a traced "
            "value after the step was traced, so the compiled step would never see the value carried over); "
            "keep it in a brainstate.HiddenState instead. The attribute was put back",
            kind="leaked_tracer_attribute",
            path=leaked[0],
        )
    if key_use.drew:
        raise CompilationError(
            "the model draws from brainstate.random's global key but this ModuleBinding does not thread it, so "
            "every step would reuse one draw; use ModuleBinding.of(model, rng=True) (dt.compile does this itself)",
            kind="unbound_randomness",
            path=".".join(RNG_PATH),
        )
