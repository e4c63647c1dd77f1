"""The command line of a config-driven job: ``--config FILE``, dotted overrides
(``--model.n_rec 128``, ``--set model.n_rec=128``), ``--help`` listing every field with
the value in effect, and user errors as one line plus an exit code.

Nothing here imports JAX: ``--help`` and config errors answer before the job starts.
Exit codes: 0 done, 2 a user error (config, command line, a checkpoint that does not fit
the run), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from disttrace.config._load import ALIASES, load, parse_value
from disttrace.config._schema import ConfigError, hints
from disttrace.config._sections import ALGORITHMS, LOSSES, MODELS, TASKS
from disttrace.config._train import TrainConfig

__all__ = ["parse_args", "run"]

_SECTIONS = {"algorithm": ALGORITHMS, "model": MODELS, "task": TASKS, "loss": LOSSES}


def _fields(cfg, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf field of a config dataclass."""
    out = []
    if getattr(type(cfg), "_registry", None) is not None:
        out.append((f"{prefix}.name", type(cfg).name))
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += _fields(value, key)
        else:
            out.append((key, value))
    return out


def _normalise(argv: Sequence[str]) -> list[str]:
    """``--model.n-rec`` -> ``--model.n_rec`` and ``--key=value`` kept whole (dashes in flag names only)."""
    out = []
    for a in argv:
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            out.append("--" + name.replace("-", "_") + eq + value)
        else:
            out.append(a)
    return out


def _pre_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=False)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage first)
        raise ConfigError("", f"command line: {message} (see --help)")


def parse_args(
    argv: Sequence[str] | None = None, *, prog: str = "launch.train", description: str = "",
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[TrainConfig, argparse.Namespace]:
    """Parses a command line into a :class:`TrainConfig` (and the non-config options).

    Args:
      argv: the arguments (default ``sys.argv[1:]``).
      prog, description: for ``--help``.
      extra: adds job options (not config fields) to the parser, e.g. ``--restore-step``.

    Returns:
      ``(cfg, namespace)``: the namespace has ``config`` and the ``extra`` options.

    Raises:
      ConfigError: on a bad command line, file, key or value.
      SystemExit: after ``--help`` (code 0).
    """
    argv = _normalise(sys.argv[1:] if argv is None else argv)
    pre, _ = _pre_parser(prog).parse_known_args(argv)
    base = load(pre.config, pre.set)
    source = pre.config if pre.config else "none (built-in defaults, as configs/evidence_lif.yaml)"
    parser = _Parser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config file in use: {source}\n\nEvery field below can be set as --KEY VALUE or --set KEY=VALUE "
        "(values are read as YAML: 128, 1e-3, null, '{b1: 0.9}'). Precedence: defaults < --config < --set < --KEY.",
    )
    parser.add_argument("--config", metavar="FILE", help=f"YAML config (in use: {source})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    if extra is not None:
        extra(parser)
    group = parser.add_argument_group(f"config fields (value in effect; config file: {source})")
    for name, registry in _SECTIONS.items():
        group.add_argument(f"--{name}", dest=f"cfg:{name}", default=argparse.SUPPRESS, metavar="NAME",
                           help=f"choose the {name}: one of {registry.names()}")
    in_effect = _fields(base)
    for key, value in in_effect:
        group.add_argument(f"--{key}", dest=f"cfg:{key}", default=argparse.SUPPRESS, metavar="V",
                           help=f"default: {value!r}")
    # the options of the other choices of each section (e.g. --algorithm.decay for es_d_rtrl)
    others: dict[str, list[str]] = {}
    for section, registry in _SECTIONS.items():
        for name in registry.names():
            for f in dataclasses.fields(registry.lookup(name, section)):
                others.setdefault(f"{section}.{f.name}", []).append(name)
    # the fields of an optional section that is null here (e.g. --stream.mode for a trial config)
    for name, tp in hints(type(base)).items():
        section = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
        if section is not None and getattr(base, name) is None:
            for f in dataclasses.fields(section):
                others.setdefault(f"{name}.{f.name}", []).append(f"{name} (null in this config)")
    known = {key for key, _ in in_effect}
    for key, names in others.items():
        if key not in known:
            group.add_argument(f"--{key}", dest=f"cfg:{key}", default=argparse.SUPPRESS, metavar="V",
                               help=f"option of {key.split('.')[0]} {', '.join(names)}")
    for alias, target in ALIASES.items():
        group.add_argument(f"--{alias}", dest=f"cfg:{target}", default=argparse.SUPPRESS, metavar="V",
                           help=f"same as --{target}")
    args, rest = parser.parse_known_args(argv)
    if rest:
        if rest[0].startswith("--"):  # an unknown key: the config names its section's keys
            load(pre.config, [*pre.set, (rest[0][2:].partition("=")[0], None)])
        raise ConfigError("", f"command line: unrecognized arguments: {' '.join(rest)} (see --help)")
    flags = [(k[4:], parse_value(v)) for k, v in vars(args).items() if k.startswith("cfg:")]
    # a section chosen by name first, so that its options given as flags apply to it
    flags.sort(key=lambda kv: kv[0] not in _SECTIONS)
    cfg = load(pre.config, [*pre.set, *flags]) if flags else base
    return cfg, argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("cfg:")})


def job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a training job that are not config fields (``--restore-step``)."""
    parser.add_argument("--restore_step", "--restore-step", type=int, default=None, metavar="N",
                        help="resume a trial run from checkpoint step N (an error if it is missing or corrupt)")


def run(job: Callable[[], Any], *, prog: str) -> int:
    """Runs ``job()`` and turns user errors into one line on stderr plus an exit code.

    ``ConfigError`` and ``disttrace.errors.CheckpointError``: code 2; Ctrl-C: 130. Other
    exceptions (bugs) propagate with their traceback.

    Returns:
      The exit code (0 when ``job`` returns).
    """
    try:
        job()
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        errors = sys.modules.get("disttrace.errors")
        if errors is not None and isinstance(e, errors.CheckpointError):
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        raise
    return 0
