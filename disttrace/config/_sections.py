"""The config sections: algorithm, model, task, loss, optimizer (+ schedule), with
registries of built-in choices; each has ``.build()``.

Built-ins:

- algorithm: ``d_rtrl``, ``es_d_rtrl(decay)``, ``hybrid(memory_budget, decay)``, ``bptt``,
  ``rtrl(memory_budget)``, ``snap(n, memory_budget)``, ``eprop(feedback, kappa_filter_decay,
  random_feedback_key)``, ``ostl_recurrent``, ``ostl_feedforward(decay_or_rank)``, ``uoro``,
  ``three_factor(modulator)``;
- model: ``spiking_net`` (LIF/ALIF layers + leaky readout), ``rnn`` (stacked RNN cells of
  one family + leaky readout), ``leaky_rate`` (leaky rate layers + readout);
- task: ``evidence_accumulation``, ``delayed_match``, ``copy``, ``integrator``,
  ``drifting`` (``disttrace.tasks``: trials, or streamed), ``counting`` (a finite
  regression stream of known records, for stream runs only);
- loss: ``masked_cross_entropy``, ``cross_entropy``, ``mse``;
- optimizer: any ``optax.<name>`` (or a registered factory) with ``learning_rate`` and
  ``kwargs``; schedule: any ``optax.<name>`` schedule with ``kwargs``.

JAX and the library are imported inside ``build`` only (``--help`` stays instant).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from disttrace.config._registry import Registry
from disttrace.config._schema import ConfigError, positive_int

__all__ = [
    "ALGORITHMS",
    "LOSSES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "AlgorithmConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TaskConfig",
    "register_loss",
    "register_optimizer",
    "register_schedule",
]


def _positive_number(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(key, f"must be a number > 0; got {value!r}")


def _decay(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(key, f"must be a number in [0, 1); got {value!r}")


# ---- algorithm ------------------------------------------------------------------------------
ALGORITHMS = Registry("algorithm")


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """The online learning rule; ``build()`` gives the spec for ``disttrace.compile``."""

    _registry: ClassVar[Registry] = ALGORITHMS
    default_name: ClassVar[str] = "d_rtrl"
    name: ClassVar[str]

    def build(self):
        raise NotImplementedError


@ALGORITHMS.register("d_rtrl")
@dataclasses.dataclass(frozen=True)
class DRTRLConfig(AlgorithmConfig):
    """D-RTRL: exact traces in the parameter dimension."""

    def build(self):
        import disttrace as dt

        return dt.D_RTRL()


@ALGORITHMS.register("es_d_rtrl")
@dataclasses.dataclass(frozen=True)
class ESDRTRLConfig(AlgorithmConfig):
    """ES-D-RTRL (pp-prop): traces in the IO dimension with smoothing ``decay`` in [0, 1)."""

    decay: float = 0.9

    def __post_init__(self):
        _decay("decay", self.decay)

    def build(self):
        import disttrace as dt

        return dt.ES_D_RTRL(self.decay)


@ALGORITHMS.register("hybrid")
@dataclasses.dataclass(frozen=True)
class HybridConfig(AlgorithmConfig):
    """D-RTRL for the weights whose traces fit ``memory_budget`` bytes, ES-D-RTRL elsewhere."""

    memory_budget: int = 2**28
    decay: float = 0.9

    def __post_init__(self):
        if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int) or self.memory_budget < 0:
            raise ConfigError("memory_budget", f"must be an int >= 0 (bytes); got {self.memory_budget!r}")
        _decay("decay", self.decay)

    def build(self):
        import disttrace as dt

        return dt.Hybrid(self.memory_budget, self.decay)


@ALGORITHMS.register("rtrl")
@dataclasses.dataclass(frozen=True)
class RTRLConfig(AlgorithmConfig):
    """RTRL: the full influence matrix, exact for any recurrent model; memory O(B·H·|θ|),
    refused above ``memory_budget`` bytes (small models only)."""

    memory_budget: int = 2**30

    def __post_init__(self):
        if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int) or self.memory_budget < 1:
            raise ConfigError("memory_budget", f"must be a positive int (bytes); got {self.memory_budget!r}")

    def build(self):
        import disttrace as dt

        return dt.RTRL(memory_budget=self.memory_budget)


@ALGORITHMS.register("snap")
@dataclasses.dataclass(frozen=True)
class SnApConfig(AlgorithmConfig):
    """SnAp-n: the influence entries reachable within ``n`` steps (n=1 the immediate
    ones; n at the coupling depth equals RTRL); memory as RTRL's (``memory_budget``)."""

    n: int = 2
    memory_budget: int = 2**30

    def __post_init__(self):
        positive_int("n", self.n)
        if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int) or self.memory_budget < 1:
            raise ConfigError("memory_budget", f"must be a positive int (bytes); got {self.memory_budget!r}")

    def build(self):
        import disttrace as dt

        return dt.SnAp(n=self.n, memory_budget=self.memory_budget)


@ALGORITHMS.register("eprop")
@dataclasses.dataclass(frozen=True)
class EPropConfig(AlgorithmConfig):
    """e-prop: D-RTRL's eligibility traces times each step's learning signal, fed back
    ``symmetric`` or through a fixed ``random`` matrix (seed ``random_feedback_key``),
    with an optional low-pass filter of the traces (``kappa_filter_decay``)."""

    feedback: Literal["symmetric", "random"] = "symmetric"
    kappa_filter_decay: float = 0.0
    random_feedback_key: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.kappa_filter_decay < 1.0:
            raise ConfigError("kappa_filter_decay", f"must be a number in [0, 1); got {self.kappa_filter_decay!r}")
        if (self.feedback == "random") != (self.random_feedback_key is not None):
            raise ConfigError(
                "random_feedback_key", "must be an int seed with feedback 'random' and null with 'symmetric'; got "
                f"{self.random_feedback_key!r} with feedback {self.feedback!r}",
            )

    def build(self):
        import disttrace as dt

        return dt.EProp(self.feedback, self.kappa_filter_decay, self.random_feedback_key)


@ALGORITHMS.register("ostl_recurrent")
@dataclasses.dataclass(frozen=True)
class OSTLRecurrentConfig(AlgorithmConfig):
    """OSTL for recurrent layers: D-RTRL with each neuron's true Jacobian block."""

    def build(self):
        import disttrace as dt

        return dt.OSTLRecurrent()


@ALGORITHMS.register("ostl_feedforward")
@dataclasses.dataclass(frozen=True)
class OSTLFeedforwardConfig(AlgorithmConfig):
    """OSTL for feed-forward layers: ES-D-RTRL with braintrace's ``decay_or_rank`` (a decay
    in [0, 1) or an int rank)."""

    decay_or_rank: float = 1e-6

    def build(self):
        import disttrace as dt

        value = self.decay_or_rank
        return dt.OSTLFeedforward(int(value) if float(value).is_integer() and value >= 1 else value)


@ALGORITHMS.register("uoro")
@dataclasses.dataclass(frozen=True)
class UOROConfig(AlgorithmConfig):
    """UORO: an unbiased rank-one estimate of RTRL's influence matrix, random signs drawn
    from ``projection_key``."""

    projection_key: int = 42
    projection_eps: float = 1e-12
    memory_budget: int = 2**30

    def __post_init__(self):
        positive_int("memory_budget", self.memory_budget)
        if self.projection_eps < 0:
            raise ConfigError("projection_eps", f"must be a number >= 0; got {self.projection_eps!r}")

    def build(self):
        import disttrace as dt

        return dt.UORO(projection_key=self.projection_key, projection_eps=self.projection_eps,
                       memory_budget=self.memory_budget)


@ALGORITHMS.register("three_factor")
@dataclasses.dataclass(frozen=True)
class ThreeFactorConfig(AlgorithmConfig):
    """A three-factor rule: a constant ``modulator`` times the eligibility traces (a
    per-step or per-row modulator needs Python: ``dt.ThreeFactor(modulator=callable)``)."""

    modulator: float = 1.0

    def build(self):
        import disttrace as dt

        return dt.ThreeFactor(modulator=self.modulator)


@ALGORITHMS.register("bptt")
@dataclasses.dataclass(frozen=True)
class BPTTConfig(AlgorithmConfig):
    """BPTT, the exact oracle (memory grows with the trial length)."""

    def build(self):
        import disttrace as dt

        return dt.BPTT()


# ---- model ----------------------------------------------------------------------------------
MODELS = Registry("model")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A network; ``build(n_in, n_out)`` gives the brainstate module (sizes from the task)."""

    _registry: ClassVar[Registry] = MODELS
    default_name: ClassVar[str] = "spiking_net"
    name: ClassVar[str]

    def build(self, n_in: int, n_out: int):
        raise NotImplementedError


@MODELS.register("spiking_net")
@dataclasses.dataclass(frozen=True)
class SpikingNetConfig(ModelConfig):
    """``disttrace.nn.SpikingNet``: ``n_layers`` LIF or ALIF layers + a leaky readout.

    ``tau_a`` and ``beta`` (adaptation) apply to ``neuron: alif`` only.
    """

    n_rec: int = 64
    n_layers: int = 1
    neuron: Literal["lif", "alif"] = "alif"
    recurrent: bool = True
    tau: float = 20.0
    v_th: float = 1.0
    tau_a: float | None = None
    beta: float | None = None
    tau_out: float = 10.0

    def __post_init__(self):
        positive_int("n_rec", self.n_rec)
        positive_int("n_layers", self.n_layers)
        _positive_number("tau", self.tau)
        _positive_number("v_th", self.v_th)
        if not self.tau_out >= 0:
            raise ConfigError("tau_out", f"must be a number >= 0 (0: memoryless readout); got {self.tau_out!r}")
        for k in ("tau_a", "beta"):
            if getattr(self, k) is not None and self.neuron != "alif":
                raise ConfigError(k, f"applies to neuron 'alif' only; got {getattr(self, k)!r} with neuron {self.neuron!r}")
        if self.tau_a is not None:
            _positive_number("tau_a", self.tau_a)

    def build(self, n_in: int, n_out: int):
        import disttrace as dt

        extra = {k: getattr(self, k) for k in ("tau_a", "beta") if getattr(self, k) is not None}
        return dt.nn.SpikingNet(
            n_in, self.n_rec, n_out, n_layers=self.n_layers, neuron=self.neuron, recurrent=self.recurrent,
            tau=self.tau, v_th=self.v_th, tau_out=self.tau_out, **extra,
        )


# RNN cell families by config name -> disttrace.nn class name (LRU handled apart: it maps
# its d_model input to d_model outputs through a d_hidden state)
_CELLS = {
    "vanilla": "ValinaRNNCell",
    "gru": "GRUCell",
    "mgu": "MGUCell",
    "lstm": "LSTMCell",
    "urlstm": "URLSTMCell",
    "minimal": "MinimalRNNCell",
    "cfn": "CFNCell",
    "minigru": "MiniGRU",
    "minilstm": "MiniLSTM",
    "lru": "LRUCell",
}


@MODELS.register("rnn")
@dataclasses.dataclass(frozen=True)
class RNNConfig(ModelConfig):
    """``n_layers`` RNN cells of one family (``cell``) and a leaky readout (``tau_out``; 0:
    memoryless). ``lru`` layers get a linear encoder to ``n_rec`` first and keep ``n_rec``
    wide inputs with a ``n_rec`` state."""

    cell: Literal["vanilla", "gru", "mgu", "lstm", "urlstm", "minimal", "cfn", "minigru", "minilstm", "lru"] = "gru"
    n_rec: int = 64
    n_layers: int = 1
    tau_out: float = 0.0

    def __post_init__(self):
        positive_int("n_rec", self.n_rec)
        positive_int("n_layers", self.n_layers)
        if not self.tau_out >= 0:
            raise ConfigError("tau_out", f"must be a number >= 0 (0: memoryless readout); got {self.tau_out!r}")

    def build(self, n_in: int, n_out: int):
        import brainstate

        import disttrace as dt

        cls = getattr(dt.nn, _CELLS[self.cell])
        if self.cell == "lru":
            layers = [dt.nn.Linear(n_in, self.n_rec)] + [cls(self.n_rec, self.n_rec) for _ in range(self.n_layers)]
        else:
            layers = [cls(n_in if i == 0 else self.n_rec, self.n_rec) for i in range(self.n_layers)]
        return brainstate.nn.Sequential(*layers, dt.nn.LeakyRateReadout(self.n_rec, n_out, tau=self.tau_out))


@MODELS.register("leaky_rate")
@dataclasses.dataclass(frozen=True)
class LeakyRateConfig(ModelConfig):
    """``n_layers`` ``disttrace.nn.LeakyRate`` layers and a leaky readout."""

    n_rec: int = 64
    n_layers: int = 1
    tau_out: float = 0.0

    def __post_init__(self):
        positive_int("n_rec", self.n_rec)
        positive_int("n_layers", self.n_layers)
        if not self.tau_out >= 0:
            raise ConfigError("tau_out", f"must be a number >= 0 (0: memoryless readout); got {self.tau_out!r}")

    def build(self, n_in: int, n_out: int):
        import brainstate

        import disttrace as dt

        layers = [dt.nn.LeakyRate(n_in if i == 0 else self.n_rec, self.n_rec) for i in range(self.n_layers)]
        return brainstate.nn.Sequential(*layers, dt.nn.LeakyRateReadout(self.n_rec, n_out, tau=self.tau_out))


# ---- task -----------------------------------------------------------------------------------
TASKS = Registry("task")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A built-in task; ``build()`` gives the task object (``n_in``, ``n_out``, ``sample``)."""

    _registry: ClassVar[Registry] = TASKS
    default_name: ClassVar[str] = "evidence_accumulation"
    name: ClassVar[str]

    def build(self):
        raise NotImplementedError


@TASKS.register("evidence_accumulation")
@dataclasses.dataclass(frozen=True)
class EvidenceConfig(TaskConfig):
    """``disttrace.tasks.EvidenceAccumulation`` (trials of ``length`` steps)."""

    n_cues: int = 7
    cue_len: int = 6
    gap: int = 4
    delay: int = 20
    recall: int = 10
    n_per_group: int = 10
    rate: float = 0.4
    noise_rate: float = 0.05

    def __post_init__(self):
        for k in ("n_cues", "cue_len", "recall", "n_per_group"):
            positive_int(k, getattr(self, k))
        for k in ("gap", "delay"):
            if getattr(self, k) < 0:
                raise ConfigError(k, f"must be an int >= 0; got {getattr(self, k)!r}")
        if self.n_cues % 2 == 0:
            raise ConfigError("n_cues", f"must be odd (no ties); got {self.n_cues}")
        for k in ("rate", "noise_rate"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(k, f"must be a probability in [0, 1]; got {getattr(self, k)!r}")

    def build(self):
        from disttrace.tasks import EvidenceAccumulation

        return EvidenceAccumulation(**dataclasses.asdict(self))


def _task(name: str, params: dict):
    """``disttrace.tasks.<name>(**params)``; the task checks its own arguments (one place),
    and its error becomes a ConfigError of the ``task`` section."""
    import disttrace.tasks

    try:
        return getattr(disttrace.tasks, name)(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError("task", str(e)) from None


@TASKS.register("delayed_match")
@dataclasses.dataclass(frozen=True)
class DMSConfig(TaskConfig):
    """``disttrace.tasks.DelayedMatchToSample``: match / non-match of two stimuli across
    ``delay`` steps (T = 2 stim_len + delay + response); classification."""

    n_stimuli: int = 2
    stim_len: int = 5
    delay: int = 10
    response: int = 5
    noise: float = 0.1
    match_prob: float = 0.5

    def build(self):
        return _task("DelayedMatchToSample", dataclasses.asdict(self))


@TASKS.register("copy")
@dataclasses.dataclass(frozen=True)
class CopyConfig(TaskConfig):
    """``disttrace.tasks.CopyTask``: recall ``memory_length`` symbols after a delimiter
    (T = 2 memory_length + delay + 1); classification per step."""

    n_symbols: int = 4
    memory_length: int = 5
    delay: int = 0

    def build(self):
        return _task("CopyTask", dataclasses.asdict(self))


@TASKS.register("integrator")
@dataclasses.dataclass(frozen=True)
class IntegratorConfig(TaskConfig):
    """``disttrace.tasks.Integrator``: the running (leaky) integral of a noisy input;
    regression (use ``loss: mse``)."""

    n_in: int = 1
    length: int = 50
    leak: float = 0.0
    dt: float = 0.1
    noise: float = 1.0
    drift: float = 0.5

    def build(self):
        return _task("Integrator", dataclasses.asdict(self))


@TASKS.register("drifting")
@dataclasses.dataclass(frozen=True)
class DriftingConfig(TaskConfig):
    """``disttrace.tasks.DriftingTask``: a mapping that switches every ``switch_every``
    steps among ``n_contexts`` (continuous adaptation); ``kind`` classification or
    regression (then ``loss: mse``)."""

    n_features: int = 8
    n_out: int = 2
    n_contexts: int = 2
    switch_every: int = 100
    kind: str = "classification"
    cue: bool = False
    mapping_seed: int = 0

    def build(self):
        return _task("DriftingTask", dataclasses.asdict(self))


@TASKS.register("counting")
@dataclasses.dataclass(frozen=True)
class CountingConfig(TaskConfig):
    """``disttrace.streaming.CountingStream``: ``n_records`` records per partition of a
    linear regression (``y = x M``), each with a known id; a stream, not a trial task, so
    it needs a ``stream`` section (and the ``mse`` loss).

    ``build()`` gives a description with ``n_in``, ``n_out``, ``n_records`` and ``kind``
    (``"stream"``); ``stream.source`` must be ``task``.
    """

    n_records: int = 4000
    n_in: int = 4
    n_out: int = 2

    is_stream: ClassVar[bool] = True

    def __post_init__(self):
        for k in ("n_records", "n_in", "n_out"):
            positive_int(k, getattr(self, k))

    def build(self):
        import types

        return types.SimpleNamespace(n_in=self.n_in, n_out=self.n_out, n_records=self.n_records, kind="stream",
                                     length=None)


# ---- loss -----------------------------------------------------------------------------------
LOSSES = Registry("loss")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """A per-step loss ``loss_fn(out, y) -> scalar``; ``build()`` gives the function."""

    _registry: ClassVar[Registry] = LOSSES
    default_name: ClassVar[str] = "masked_cross_entropy"
    name: ClassVar[str]
    function: ClassVar[Callable[[], Callable]]

    def build(self) -> Callable:
        return type(self).function()


def register_loss(name: str, fn: Callable | None = None, *, loader: Callable[[], Callable] | None = None):
    """Registers a loss ``fn(out, y) -> scalar`` under ``name`` (``loss: <name>`` in a config).

    Args:
      name: the config name.
      fn: the loss; or ``loader``, a function returning it (imported only when built).

    Raises:
      ValueError: if ``name`` is taken or neither/both of ``fn`` and ``loader`` are given.
    """
    if (fn is None) == (loader is None):
        raise ValueError("register_loss: give exactly one of 'fn' and 'loader'")
    load = loader if loader is not None else (lambda: fn)
    cls = dataclasses.dataclass(frozen=True)(type(f"Loss_{name}", (LossConfig,), {"function": staticmethod(load)}))
    return LOSSES.register(name)(cls)


def _train_loss(attr: str) -> Callable[[], Callable]:
    def load():
        from disttrace import train

        return getattr(train, attr)

    return load


for _name in ("masked_cross_entropy", "cross_entropy", "mse"):
    register_loss(_name, loader=_train_loss(_name))


# ---- optimizer and schedule -----------------------------------------------------------------
OPTIMIZERS: dict[str, Callable] = {}
SCHEDULES: dict[str, Callable] = {}


def register_optimizer(name: str, factory: Callable) -> Callable:
    """Registers ``factory(learning_rate, **kwargs) -> optax.GradientTransformation`` under
    ``name`` (it takes precedence over ``optax.<name>``)."""
    if not isinstance(name, str) or not name or not callable(factory):
        raise ValueError(f"register_optimizer: needs a name and a callable; got {name!r}, {factory!r}")
    OPTIMIZERS[name] = factory
    return factory


def register_schedule(name: str, factory: Callable) -> Callable:
    """Registers ``factory(**kwargs) -> schedule`` under ``name`` (before ``optax.<name>``)."""
    if not isinstance(name, str) or not name or not callable(factory):
        raise ValueError(f"register_schedule: needs a name and a callable; got {name!r}, {factory!r}")
    SCHEDULES[name] = factory
    return factory


def _optax_callable(kind: str, name: str, registry: dict, key: str) -> Callable:
    if name in registry:
        return registry[name]
    import optax

    fn = getattr(optax, name, None)
    if not callable(fn) or name.startswith("_"):
        raise ConfigError(key, f"unknown {kind} {name!r}; allowed: any optax.{kind} by name (e.g. "
                          f"{'adam, sgd, adamw' if kind == 'optimizer' else 'cosine_decay_schedule, linear_schedule'})"
                          f"{' or one of ' + str(sorted(registry)) if registry else ''}")
    return fn


def _call(fn: Callable, kwargs: dict, key: str, what: str):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown option of {what}; allowed: {sorted(params)}")
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(key, f"{what}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {e}") from None


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule: ``optax.<name>(**kwargs)`` (or a registered one)."""

    name: str = "constant_schedule"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self, key: str = "optimizer.schedule"):
        fn = _optax_callable("schedule", self.name, SCHEDULES, f"{key}.name")
        return _call(fn, dict(self.kwargs), f"{key}.kwargs", f"optax.{self.name}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """``optax.<name>(learning_rate, **kwargs)`` (or a registered factory). With a
    ``schedule`` the learning rate is that schedule and ``learning_rate`` is unused."""

    name: str = "adam"
    learning_rate: float = 5e-3
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: ScheduleConfig | None = None

    def __post_init__(self):
        _positive_number("learning_rate", self.learning_rate)

    def build(self):
        fn = _optax_callable("optimizer", self.name, OPTIMIZERS, "optimizer.name")
        lr = self.schedule.build() if self.schedule is not None else self.learning_rate
        return _call(fn, {"learning_rate": lr, **self.kwargs}, "optimizer.kwargs", f"optax.{self.name}")
