"""Open registries: a config section type per name (``"d_rtrl"``, ``"spiking_net"``, ...).

A section (algorithm, model, task, loss) is a base class with a :class:`Registry`; each
registered name is a frozen dataclass subclass holding that choice's options and a
``build(...)`` method. A YAML section ``{name: es_d_rtrl, decay: 0.9}`` (or the bare
string ``es_d_rtrl``) becomes that subclass, options type-checked. Registering a new
name needs no edit here::

    @register_model("my_net")
    @dataclasses.dataclass(frozen=True)
    class MyNet(ModelConfig):
        width: int = 32

        def build(self, n_in, n_out):
            return MyModule(n_in, self.width, n_out)
"""

from __future__ import annotations

from disttrace.config._schema import ConfigError

__all__ = ["Registry"]


class Registry:
    """Name -> config dataclass for one section.

    Args:
      section: the section's key in the config (for messages), e.g. ``"model"``.
    """

    def __init__(self, section: str):
        self.section = section
        self._types: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: registers a config dataclass under ``name`` (sets ``cls.name``).

        Raises:
          ValueError: if ``name`` is not a non-empty string or is taken by another class.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"register: argument 'name' must be a non-empty string; got {name!r}")

        def decorate(cls):
            old = self._types.get(name)
            if old is not None and old is not cls:
                raise ValueError(
                    f"register: {self.section} {name!r} is already registered ({old.__module__}.{old.__qualname__})"
                )
            cls.name = name
            self._types[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._types)

    def lookup(self, name, key: str) -> type:
        """The class registered as ``name``; ConfigError naming ``key`` and the allowed names otherwise."""
        if name not in self._types:
            raise ConfigError(key, f"unknown {self.section} {name!r}; allowed: {self.names()}")
        return self._types[name]

    def __contains__(self, name) -> bool:
        return name in self._types
