"""Reading a config: a YAML file, dotted overrides (``model.n_rec=128``), a dataclass.

Precedence: the dataclass defaults, then the file, then the overrides in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import yaml

from disttrace.config._schema import ConfigError, from_data
from disttrace.config._train import TrainConfig

__all__ = ["load", "parse_override", "read_yaml", "set_dotted"]

# old spellings of moved keys (configs and command lines written before the sections)
ALIASES = {
    "checkpoint_dir": "checkpoint.directory",
    "checkpoint_every": "checkpoint.every",
    "learning_rate": "optimizer.learning_rate",
}


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML file.

    Raises:
      ConfigError: if the file is missing or unreadable, is not valid YAML (the message
        has the line), or does not hold a mapping.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"config file {str(path)!r} not found") from None
    except OSError as e:
        raise ConfigError("", f"config file {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError("", f"config file {str(path)!r} is not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"config file {str(path)!r} must hold a mapping of keys; got {type(data).__name__}")
    return dict(data)


def parse_override(text: str) -> tuple[str, object]:
    """``"key.path=value"`` -> ``(key, value)``, the value read as YAML (``128`` an int,
    ``null`` None, ``{b1: 0.9}`` a mapping; anything else a string).

    Raises:
      ConfigError: without ``=`` or with an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("", f"override {text!r} must be KEY=VALUE, e.g. model.n_rec=128")
    return key, parse_value(raw)


def parse_value(raw: str):
    """A command-line value read as YAML (falls back to the string itself)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def set_dotted(data: dict, key: str, value) -> None:
    """Sets ``data[a][b][c] = value`` for ``key = "a.b.c"`` (in place), creating sections;
    a section given by name only (``algorithm: d_rtrl``) becomes ``{name: d_rtrl}``.

    Raises:
      ConfigError: if a part of the path is set to a value that is not a section.
    """
    parts = ALIASES.get(key.replace("-", "_"), key.replace("-", "_")).split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str):
            child = node[part] = {"name": child}
        elif not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value ({child!r}), not a section; cannot set {key!r}")
        else:
            child = node[part] = dict(child)
        node = child
    node[parts[-1]] = value


def load(path: str | os.PathLike | None = None, overrides: Iterable[str | tuple[str, object]] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file (``None``: the defaults) and overrides.

    Args:
      path: a YAML file of the :class:`TrainConfig` keys, or ``None``.
      overrides: ``"key.path=value"`` strings or ``(key, value)`` pairs, applied in order.

    Raises:
      ConfigError: on a missing or malformed file, an unknown key or a bad value; the
        message names the key, the value and what is allowed.

    Example:
      >>> cfg = load(None, ["model.n_rec=128", "optimizer.learning_rate=1e-3", "algorithm=es_d_rtrl"])
      >>> cfg.model.n_rec, cfg.optimizer.learning_rate, cfg.algorithm.name, cfg.algorithm.decay
      (128, 0.001, 'es_d_rtrl', 0.9)
    """
    data: dict = {}
    for key, value in ({} if path is None else read_yaml(path)).items():
        if str(key) in ALIASES:  # a file may spell a moved key the old way
            set_dotted(data, str(key), value)
        else:
            data[key] = value
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(data, key, value)
    return from_data(TrainConfig, data)
