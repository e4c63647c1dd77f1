"""Memory in plain Python attributes: detected, undone and refused.

A model that keeps a value from one step to the next in an ordinary attribute
(``self.last_v = v`` in ``update``) has memory outside every ``State``: tracing the step
replaces the attribute with a tracer, the compiled step never sees the value carried
over, and the model is left holding a leaked tracer. :class:`AttributeSnapshot` records
every module's attributes before a traced run; afterwards :meth:`~AttributeSnapshot.undo_leaks`
puts back every attribute that now holds a tracer (or deletes it when it did not exist
before) and names it, so the caller can refuse the model with a
:class:`~disttrace.errors.CompilationError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from disttrace.checks import path_str
from disttrace.compiler import _jax_compat as jc

__all__ = ["AttributeSnapshot"]

_MISSING = object()
_MAX_DEPTH = 3  # plain containers nested this deep are searched for tracers


def _holds_tracer(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is a tracer or a plain container (list, tuple, dict) holding one.

    Modules and ``State``s are not searched: a ``State``'s value is restored by the
    binding itself, and every module is checked on its own.
    """
    if jc.is_tracer(value):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if type(value) in (list, tuple):
        return any(_holds_tracer(v, depth + 1) for v in value)
    if type(value) is dict:
        return any(_holds_tracer(v, depth + 1) for v in value.values())
    return False


@dataclasses.dataclass
class AttributeSnapshot:
    """Every module's attributes (its instance ``__dict__``) at one moment.

    Attributes:
      modules: module path -> module.
      saved: module path -> a shallow copy of its attributes.
    """

    modules: dict
    saved: dict

    @classmethod
    def of(cls, model) -> AttributeSnapshot:
        modules = dict(model.nodes().items()) if hasattr(model, "nodes") else {(): model}
        return cls(modules, {p: dict(vars(m)) for p, m in modules.items()})

    def undo_leaks(self) -> tuple[str, ...]:
        """Restores every attribute that now holds a tracer; returns their paths.

        An attribute that held a tracer before the snapshot is left alone; one created
        since is deleted. Paths read like state paths (``"layers.0.last_v"``).
        """
        leaked = []
        for path, module in self.modules.items():
            attrs, saved = vars(module), self.saved[path]
            for name, value in list(attrs.items()):
                before = saved.get(name, _MISSING)
                if value is before or not _holds_tracer(value):
                    continue
                leaked.append(path_str((*path, name)))
                # the instance dict directly: a module's __setattr__ may register values
                if before is _MISSING:
                    del attrs[name]
                else:
                    attrs[name] = before
        return tuple(leaked)
