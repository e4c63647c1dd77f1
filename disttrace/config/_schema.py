"""Typed conversion of plain data (YAML, command line) into frozen config dataclasses.

Every value is converted by its field's type annotation, and every failure is a
:class:`ConfigError` that names the dotted key, the value given and what is allowed.
YAML 1.1 reads ``1e-3`` as a *string*; a ``float`` field accepts it (converted), an
``int`` field accepts ``"128"`` (the command line gives strings), ``bool`` never
stands in for a number.

This module imports neither JAX nor the rest of disttrace, so that ``--help`` and
config errors answer at once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["ConfigError", "from_data", "positive_int", "to_data"]


class ConfigError(ValueError):
    """A configuration problem: ``key``, the value given and what is allowed.

    Attributes:
      key: the dotted key (``"model.n_rec"``), or ``""`` for the whole file.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key {key!r}: {message}" if key else f"config: {message}")


def positive_int(key: str, value, *, allow_none: bool = False) -> None:
    """Checks a section's int field that must be >= 1 (or null with ``allow_none``).

    Raises:
      ConfigError: naming ``key`` and the value.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"must be a positive int{' or null' if allow_none else ''}; got {value!r}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(key, f"must be {allowed}; got {value!r}")


def _number(key: str, value, allowed: str) -> float:
    if isinstance(value, bool):
        raise _bad(key, value, allowed)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _bad(key, value, allowed) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(key, value, allowed)
    return value


def convert(value, tp, key: str):
    """``value`` converted to the annotation ``tp`` (raises :class:`ConfigError`)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and dataclasses.is_dataclass(rest[0]):  # a section or null: its own error names the key
            return convert(value, rest[0], key)
        errors = []
        for a in rest:
            try:
                return convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        allowed = " or ".join(_describe(a) for a in rest) + (" or null" if type(None) in args else "")
        raise _bad(key, value, allowed)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {list(allowed)}; got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            raise _bad(key, value, "true or false")
        return value
    if tp is int:
        v = _number(key, value, "an int")
        if isinstance(v, float) and not (v.is_integer() and isinstance(value, str)):
            raise _bad(key, value, "an int")
        return int(v)
    if tp is float:
        return float(_number(key, value, "a number"))
    if tp is str:
        if not isinstance(value, str):
            raise _bad(key, value, "a string")
        return value
    if tp is Any:
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _bad(key, value, "a mapping (key: value)")
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_data(tp, value, key)
    raise AssertionError(f"unsupported config annotation {tp!r} at {key}")


def _describe(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return f"one of {list(typing.get_args(tp))}"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__} mapping"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def hints(cls) -> dict[str, Any]:
    """``field name -> resolved annotation`` of a config dataclass."""
    return typing.get_type_hints(cls)


def from_data(cls, data, prefix: str = ""):
    """An instance of the config dataclass ``cls`` from a mapping (unknown keys are errors).

    A section class with a ``_registry`` (see ``_registry.Registry``) is chosen by the
    mapping's ``name`` (a bare string is ``{"name": ...}``).

    Raises:
      ConfigError: naming the key, the value and what is allowed.
    """
    registry = getattr(cls, "_registry", None)
    if registry is not None:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise _bad(prefix, data, f"a name ({', '.join(registry.names())}) or a mapping with 'name'")
        name = data.get("name", getattr(cls, "default_name", None))
        cls = registry.lookup(name, _join(prefix, "name"))
    elif isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _bad(prefix, data, f"a mapping of {sorted(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    allowed = sorted([*fields, *(["name"] if registry is not None else [])])
    kwargs = {}
    types_ = hints(cls)
    for k, v in data.items():
        key = _join(prefix, str(k))
        if k == "name" and registry is not None:
            continue
        if k not in fields:
            where = f"section {prefix!r}" if prefix else "the top level"
            raise ConfigError(key, f"unknown key; allowed keys of {where}: {allowed}")
        kwargs[k] = convert(v, types_[k], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not e.key.startswith(prefix):
            raise ConfigError(_join(prefix, e.key), str(e).split(": ", 1)[-1]) from None
        raise


def to_data(cfg) -> Any:
    """A config dataclass as plain data (dicts, lists, scalars), ``name`` first for registered
    sections: the inverse of :func:`from_data` (JSON- and YAML-serialisable)."""
    if dataclasses.is_dataclass(cfg):
        out = {}
        if getattr(type(cfg), "_registry", None) is not None:
            out["name"] = type(cfg).name
        for f in dataclasses.fields(cfg):
            out[f.name] = to_data(getattr(cfg, f.name))
        return out
    if isinstance(cfg, Mapping):
        return {k: to_data(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_data(v) for v in cfg]
    return cfg
