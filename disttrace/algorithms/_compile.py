"""``disttrace.compile``: model + algorithm -> learner (mirrors ``braintrace.compile``)."""

from __future__ import annotations

from collections.abc import Callable

import brainstate

from disttrace.algorithms._bptt import BPTTLearner
from disttrace.algorithms._learner import Learner
from disttrace.algorithms._online import OnlineLearner
from disttrace.algorithms._specs import BPTT, D_RTRL, ES_D_RTRL, Hybrid
from disttrace.compiler import ModuleBinding, compile_etrace_graph

__all__ = ["compile"]

_SPECS = (D_RTRL, ES_D_RTRL, Hybrid, BPTT)
_BY_NAME = {"d_rtrl": D_RTRL, "es_d_rtrl": ES_D_RTRL, "pp_prop": ES_D_RTRL, "hybrid": Hybrid, "bptt": BPTT}


def compile(  # noqa: A001 - the name braintrace users know
    model,
    algorithm,
    *example_args,
    batch_size: int,
    loss_fn: Callable | None = None,
    init_states: bool = True,
    **options,
) -> Learner:
    """Initialises the model's states, compiles one step and returns a learner.

    Args:
      model: a ``brainstate.nn.Module`` that creates its ``HiddenState``s in
        ``init_state(batch_size)``.
      algorithm: ``disttrace.D_RTRL``, ``ES_D_RTRL`` (alias ``pp_prop``), ``Hybrid``,
        ``BPTT`` — the class, an instance, or its name as a string.
      *example_args: one step's inputs, batch-leading (B, ...).
      batch_size: B, the leading axis of every hidden state and input.
      loss_fn: ``loss_fn(out, target) -> scalar`` for :meth:`learner.step`.
      init_states: call ``brainstate.nn.init_all_states(model, batch_size=B)`` first.
      **options: algorithm options when ``algorithm`` is a class or name
        (``decay=0.9`` / ``decay_or_rank=...``, ``memory_budget=...``).

    Returns:
      An :class:`OnlineLearner` (or :class:`BPTTLearner` for ``BPTT``).

    Raises:
      ValueError: on a bad ``algorithm``, ``batch_size`` or option.
      CompilationError: if the model cannot be handled (see ``compile_etrace_graph``).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.LIFLayer(3, 4)
      >>> learner = dt.compile(net, dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> learner.graph.groups[0].k
      1
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"compile: argument 'batch_size' must be a positive int; got {batch_size!r}")
    if isinstance(algorithm, str):
        key = algorithm.lower().replace("-", "_")
        if key not in _BY_NAME:
            raise ValueError(f"compile: unknown algorithm {algorithm!r}; allowed: {sorted(_BY_NAME)}")
        algorithm = _BY_NAME[key]
    if isinstance(algorithm, type) and issubclass(algorithm, _SPECS):
        spec = algorithm(**options)
    elif isinstance(algorithm, _SPECS):
        if options:
            raise ValueError(f"compile: options {sorted(options)} given with an algorithm instance; set them on it")
        spec = algorithm
    else:
        raise ValueError(
            f"compile: argument 'algorithm' must be one of D_RTRL, ES_D_RTRL, Hybrid, BPTT (class, instance or "
            f"name); got {algorithm!r}"
        )
    if init_states:
        brainstate.nn.init_all_states(model, batch_size=batch_size)
    binding = ModuleBinding.of(model)
    # BPTT is exact for every weight: the same-step-only warning does not apply to it.
    graph = compile_etrace_graph(model, *example_args, binding=binding, warn=not isinstance(spec, BPTT))
    if graph.batch_size != batch_size:
        raise ValueError(
            f"compile: argument 'batch_size' is {batch_size} but the model's hidden states have batch {graph.batch_size}"
        )
    if isinstance(spec, BPTT):
        return BPTTLearner(model, graph, binding, loss_fn)
    return OnlineLearner(model, graph, binding, spec, loss_fn)
