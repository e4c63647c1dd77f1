"""A bounded cache of jitted functions keyed by what a user's ``step_fn`` *is*, not by
the function object.

``learner.etrace_grad(xs, ys, step_fn=lambda x, y: loss_fn(learner(x), y))`` makes a
new ``lambda`` object on every call. Keyed on the object, every call would trace and
compile again (measured: 9.3 s a call instead of 0.04 s on a 2-core CPU) and memory
would grow without bound. Two functions with the same code, the same defaults, the
same closed-over objects and the same referenced globals compute the same thing, so
:func:`function_key` keys on those:

- code objects and plain immutable values (numbers, strings, ``None``, tuples of
  them) by value, so ``lambda x: f(x) * 0.5`` made twice shares one entry;
- every other object (arrays, modules, the learner, a loss function bound to a
  global name) by identity, holding a reference so the identity cannot be reused;
- nested functions in closures and ``functools.partial`` objects recursively.

This is as sound as ``jax.jit`` itself, which also does not retrace when a global
that a jitted function reads is mutated in place. The cache is an LRU of bounded
size, and :class:`JitCache` warns once when one kind of entry has been compiled for
many distinct functions (a step function that really differs on every call).
"""

from __future__ import annotations

import collections
import functools
import types
import warnings
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["JitCache", "function_key"]

_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))
_MAX_DEPTH = 4


class _Ident:
    """Hashes and compares by identity, and keeps the object alive (so its id is not reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ident) and other.obj is self.obj


def _value_key(value, depth: int) -> Hashable:
    if isinstance(value, _IMMUTABLE):
        return (type(value), value)
    if isinstance(value, tuple) and depth < _MAX_DEPTH:
        return ("tuple", tuple(_value_key(v, depth + 1) for v in value))
    if isinstance(value, types.FunctionType | functools.partial) and depth < _MAX_DEPTH:
        return function_key(value, depth + 1)
    return _Ident(value)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def function_key(fn: Callable, depth: int = 0) -> Hashable:
    """A hashable key equal for two callables that compute the same thing.

    Args:
      fn: any callable (a function, a lambda, a ``functools.partial``, a bound
        method, a callable object).

    Returns:
      A key: code + closure contents + defaults + referenced globals for Python
      functions (see the module docstring), the object's identity for anything else.
    """
    if isinstance(fn, functools.partial):
        kw = tuple(sorted((k, _value_key(v, depth + 1)) for k, v in fn.keywords.items()))
        return ("partial", _value_key(fn.func, depth), tuple(_value_key(a, depth + 1) for a in fn.args), kw)
    if isinstance(fn, types.MethodType):
        return ("method", _value_key(fn.__func__, depth), _Ident(fn.__self__))
    if not isinstance(fn, types.FunctionType):
        return ("object", _Ident(fn))
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_value_key(cell.cell_contents, depth + 1))
        except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
            cells.append(("empty",))
    scope = fn.__globals__
    # globals by identity only: a rebound global name is a new object, so a new key
    used = tuple(sorted((n, _Ident(scope[n])) for n in _global_names(fn.__code__) if n in scope))
    defaults = tuple(_value_key(d, depth + 1) for d in fn.__defaults__ or ())
    kwdefaults = tuple(sorted((k, _value_key(v, depth + 1)) for k, v in (fn.__kwdefaults__ or {}).items()))
    return ("function", fn.__code__, tuple(cells), used, defaults, kwdefaults)


class JitCache:
    """An LRU cache of compiled functions with a warning for runaway retracing.

    Args:
      max_size: entries kept (the least recently used is dropped, and with it its
        compiled executables).
      warn_after: warn once when this many distinct entries of one kind (the first
        element of the key) have been created.
    """

    def __init__(self, max_size: int = 32, warn_after: int = 8):
        self._entries: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._made: collections.Counter = collections.Counter()
        self._warned: set = set()
        self.max_size = max_size
        self.warn_after = warn_after

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], Any], describe: Callable[[], str] | None = None) -> Any:
        """The entry for ``key``, made with ``make()`` on a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = self._entries[key] = make()
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        kind = key[0] if isinstance(key, tuple) and key else key
        self._made[kind] += 1
        if self._made[kind] >= self.warn_after and kind not in self._warned:
            self._warned.add(kind)
            what = describe() if describe is not None else repr(kind)
            warnings.warn(
                f"disttrace: {what} has been compiled for {self._made[kind]} different functions on this learner. "
                "A function whose code, closed-over objects or defaults differ from call to call (e.g. a closure "
                "over a new array each time) is compiled again every call; define the step function once and "
                "pass data as arguments instead.",
                stacklevel=4,
            )
        return value
