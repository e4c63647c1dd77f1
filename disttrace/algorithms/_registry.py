"""Algorithms by name, and an algorithm argument (class, instance or name) -> a spec.

``disttrace.compile`` and the config layer resolve their ``algorithm`` argument here;
:func:`register` adds a user's algorithm under a name. A spec is anything with
``rules(graph)`` (:class:`~disttrace.algorithms._rule.Algorithm`), or ``BPTT``.
"""

from __future__ import annotations

from disttrace.algorithms._bptt import BPTT
from disttrace.algorithms._d_rtrl import D_RTRL
from disttrace.algorithms._eprop import EProp
from disttrace.algorithms._es_d_rtrl import ES_D_RTRL
from disttrace.algorithms._hybrid import Hybrid
from disttrace.algorithms._ostl import OSTLFeedforward, OSTLRecurrent
from disttrace.algorithms._rtrl import RTRL
from disttrace.algorithms._rule import Algorithm
from disttrace.algorithms._snap import SnAp
from disttrace.algorithms._three_factor import ThreeFactor
from disttrace.algorithms._uoro import UORO
from disttrace.errors import NotSupportedError

__all__ = ["assign_modes", "register", "registered", "resolve"]

_BY_NAME: dict[str, type] = {
    "d_rtrl": D_RTRL,
    "es_d_rtrl": ES_D_RTRL,
    "esd_rtrl": ES_D_RTRL,  # braintrace 0.2.8's alias
    "pp_prop": ES_D_RTRL,
    "hybrid": Hybrid,
    "bptt": BPTT,
    "rtrl": RTRL,
    "snap": SnAp,
    "eprop": EProp,
    "e_prop": EProp,
    "ostl_recurrent": OSTLRecurrent,
    "ostl_feedforward": OSTLFeedforward,
    "uoro": UORO,
    "three_factor": ThreeFactor,
}


# braintrace 0.2.8 names with no algorithm here: refused saying why, not as unknown names
_NOT_HERE = {
    "dni": "DNI (synthetic gradients, Jaderberg et al. 2017) is braintrace's; disttrace has no synthetic-gradient "
    "learner: use a rule of disttrace.algorithms.registered()",
}


def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(name: str, algorithm: type) -> type:
    """Makes ``algorithm`` (a spec class) available by ``name`` (case and ``-``/``_``
    insensitive) to ``disttrace.compile`` and configs; returns it (usable as a decorator
    via ``functools.partial``).

    Raises:
      ValueError: if the name is taken by another class.
    """
    key = _normal(name)
    if _BY_NAME.get(key, algorithm) is not algorithm:
        raise ValueError(f"register: algorithm name {name!r} is taken by {_BY_NAME[key].__name__}")
    _BY_NAME[key] = algorithm
    return algorithm


def registered() -> tuple[str, ...]:
    """Every algorithm name, sorted."""
    return tuple(sorted(_BY_NAME))


def resolve(algorithm, options: dict, who: str = "compile"):
    """A spec instance from a class, an instance or a registered name (+ options).

    Names are matched without case, surrounding spaces or the ``-``/``_`` difference
    (braintrace's ``"D_RTRL"``, ``"esd_rtrl"``, ``"OSTL-recurrent"`` all resolve).

    Raises:
      ValueError: on an unknown name, options given with an instance, or anything else.
      NotSupportedError: on a braintrace name with no algorithm here (``"dni"``).
    """
    if isinstance(algorithm, str):
        key = _normal(algorithm)
        if key in _NOT_HERE and key not in _BY_NAME:
            raise NotSupportedError(f"{who}: algorithm {algorithm!r} is not supported: {_NOT_HERE[key]}")
        if key not in _BY_NAME:
            raise ValueError(f"{who}: unknown algorithm {algorithm!r}; allowed: {list(registered())}")
        algorithm = _BY_NAME[key]
    if isinstance(algorithm, type):
        if algorithm is BPTT or issubclass(algorithm, BPTT) or hasattr(algorithm, "rules"):
            return algorithm(**options)
    elif isinstance(algorithm, BPTT | Algorithm):
        if options:
            raise ValueError(f"{who}: options {sorted(options)} given with an algorithm instance; set them on it")
        return algorithm
    raise ValueError(
        f"{who}: argument 'algorithm' must be D_RTRL, ES_D_RTRL, Hybrid, BPTT or another spec with "
        f"rules(graph) (class, instance or registered name {list(registered())}); got {algorithm!r}"
    )


def assign_modes(graph, spec) -> tuple[str, ...]:
    """Per op of ``graph`` the dimension of the rule ``spec`` gives it: ``"param"``
    (D-RTRL-like), ``"io"`` (ES-D-RTRL-like) or ``"none"`` (reaches no hidden state)."""
    return tuple("none" if r is None else r.dimension for r in spec.rules(graph))
