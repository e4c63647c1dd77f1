"""``disttrace.compile``: model + algorithm -> learner (mirrors ``braintrace.compile``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp

from disttrace.algorithms._bptt import BPTT, BPTTLearner
from disttrace.algorithms._learner import Learner, UnbatchedBinding
from disttrace.algorithms._online import OnlineLearner
from disttrace.algorithms._registry import resolve
from disttrace.checks import boolean, non_negative_int, one_of, positive_int
from disttrace.compiler import RNG_PATH, ModuleBinding, compile_etrace_graph

__all__ = ["compile"]

_VERBOSE = (0, 1, 2)  # braintrace's levels: silent, the summary, the summary with diagnostics


def compile(  # noqa: A001 - the name braintrace users know
    model,
    algorithm,
    *example_args,
    batch_size: int | None = None,
    loss_fn: Callable | None = None,
    init_states: bool = True,
    vmap: bool = False,
    control_flow=None,
    seed: int | None = None,
    verbose: int = 0,
    **options,
) -> Learner:
    """Initialises the model's states, compiles one step and returns a learner.

    Args:
      model: a ``brainstate.nn.Module`` that creates its ``HiddenState``s in
        ``init_state(batch_size)``.
      algorithm: ``disttrace.D_RTRL``, ``ES_D_RTRL`` (alias ``pp_prop``), ``Hybrid``,
        ``BPTT`` — the class, an instance, or its name as a string — or any spec
        with ``rules(graph)`` (see ``disttrace.algorithms.LearningRule``).
      *example_args: one step's inputs, batch-leading (B, ...).
      batch_size: B, the leading axis of every hidden state and input. ``None``
        (braintrace's default): the model is unbatched, its states and inputs have no
        batch axis, and the learner is the batch-of-one learner seen without it (see
        ``disttrace.algorithms.UnbatchedBinding``).
      loss_fn: ``loss_fn(out, target) -> scalar`` for :meth:`learner.step`.
      init_states: call ``brainstate.nn.init_all_states(model, batch_size=B)`` first.
      vmap: braintrace's per-sample mode (needs ``batch_size``; inputs batch-leading).
        disttrace's learners are batched already, each sample independent, so this
        is the batched learner.
      control_flow: a ``disttrace.compiler.ControlFlowPolicy`` (``cond``/``scan``/``while``
        in the step; ``None``: the default policy) for ``compile_etrace_graph``.
      seed: as braintrace: an int seeds the state initialisation (``init_all_states``
        runs inside ``brainstate.random.seed_context(seed)``, so random initial states
        repeat; the global key is restored afterwards). Weights drawn when the model was
        built are not affected. ``None`` (default): the global key as it is.
      verbose: as braintrace: 0 (default) prints nothing; 1 prints the compiled graph's
        summary (hidden groups, trace ops and their traces, each parameter's kind:
        ``str(learner.graph)`` without its diagnostics) headed by the learner's class;
        2 adds the compiler's diagnostics (``learner.graph.records``). ``True`` is 1,
        as in braintrace.
      **options: algorithm options when ``algorithm`` is a class or name
        (``decay=0.9`` / ``decay_or_rank=...``, ``memory_budget=...``).

    Returns:
      An :class:`OnlineLearner` (or :class:`BPTTLearner` for ``BPTT``).

    Randomness: a model whose step draws from ``brainstate.random`` (``Dropout``,
    ``brainstate.random.rand``, ...) gets brainstate's global key threaded through its
    step: the key is in the learner state (``state.aux[disttrace.compiler.RNG_PATH]``,
    raw key data), so every step draws anew, reproducibly from
    ``brainstate.random.seed``, and a checkpoint of the state continues the same
    draws. ``learner.init()`` takes the global key as it is; the stateful API
    (``etrace_grad``, ``learner(x)``) advances it. Compiling leaves the global key
    unchanged. ``Dropout`` is active when compiled under
    ``brainstate.environ.context(fit=True)``.

    Raises:
      ValueError: on a bad ``algorithm``, ``batch_size``, ``seed``, ``verbose`` or option;
        on ``seed`` with ``init_states=False`` (there is no initialisation to seed).
      CompilationError: if the model cannot be handled (see ``compile_etrace_graph``).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.LIFLayer(3, 4)
      >>> learner = dt.compile(net, dt.D_RTRL, jnp.zeros((2, 3)), batch_size=2)
      >>> learner.graph.groups[0].k
      1
    """
    batch_size, seed = _check_arguments(batch_size, init_states, vmap, seed, verbose)
    unbatched = batch_size is None
    spec = resolve(algorithm, options)
    if init_states:
        with brainstate.random.seed_context(seed) if seed is not None else contextlib.nullcontext():
            brainstate.nn.init_all_states(model, batch_size=batch_size)
    binding = (UnbatchedBinding if unbatched else ModuleBinding).of(model)
    if unbatched:  # compiled as a batch of one; the learner adds and drops the axis
        example_args = jax.tree.map(lambda a: jnp.expand_dims(jnp.asarray(a), 0), example_args)
    graph = _graph_of(model, spec, example_args, binding, control_flow)
    if RNG_PATH in graph.aux_paths:  # the step draws random numbers: the learner threads the key
        binding = binding.with_rng()
    if not unbatched and graph.batch_size != batch_size:
        raise ValueError(
            f"compile: argument 'batch_size' is {batch_size} but the model's hidden states have batch {graph.batch_size}"
        )
    if isinstance(spec, BPTT):
        learner = BPTTLearner(model, graph, binding, loss_fn)
    elif hasattr(spec, "learner"):  # a whole-model algorithm with a learner of its own (RTRL, SnAp)
        learner = spec.learner(model, graph, binding, loss_fn)
    else:
        learner = OnlineLearner(model, graph, binding, spec, loss_fn)
    if verbose:
        print(_summary(learner, spec, verbose))
    return learner


def _graph_of(model, spec, example_args: tuple, binding, control_flow):
    """``compile_etrace_graph`` for :func:`compile`, with brainstate's wrapped step errors
    turned into one line (``_step_error``)."""
    # BPTT and whole-model learners (RTRL, SnAp) trace every weight through time: the
    # same-step-only warning does not apply to them.
    whole = isinstance(spec, BPTT) or hasattr(spec, "learner")
    try:
        return compile_etrace_graph(model, *example_args, binding=binding, warn=not whole, control_flow=control_flow)
    except Exception as err:
        if type(err).__name__ != "BrainStateError":  # ours (CompilationError, checks) pass unchanged
            raise
        raise _step_error(err, example_args) from err


def _check_arguments(batch_size, init_states, vmap, seed, verbose) -> tuple[int | None, int | None]:
    """:func:`compile`'s checks of its own arguments: ``(batch_size, seed)`` validated."""
    if boolean("compile", "vmap", vmap) and batch_size is None:
        raise ValueError("compile: vmap=True needs batch_size, the leading axis of the example inputs")
    if batch_size is not None:
        batch_size = positive_int("compile", "batch_size", batch_size)
    one_of("compile", "verbose", verbose, _VERBOSE)
    if seed is not None:
        seed = non_negative_int("compile", "seed", seed)
        if not init_states:
            raise ValueError(
                f"compile: argument 'seed' ({seed}) seeds the state initialisation, but init_states=False skips it; "
                "drop seed, or seed the states yourself (brainstate.random.seed_context)"
            )
    return batch_size, seed


def _summary(learner: Learner, spec, verbose: int) -> str:
    """``compile(verbose=1|2)``'s report: the learner and algorithm, then the graph's
    summary, with its diagnostics at 2 only (``str(ETraceGraph)`` ends with them)."""
    graph = learner.graph if verbose == 2 else dataclasses.replace(learner.graph, records=())
    return f"disttrace.compile: {type(learner).__name__} ({type(spec).__name__})\n{graph}"


def _step_error(err: Exception, example_args) -> Exception:
    """The error to show when the model could not run one step on the example inputs.

    brainstate wraps an exception raised inside a module in a ``BrainStateError`` whose
    message is the whole module's repr (dozens of lines) with the real cause only in
    ``__cause__``: unwrap it to one line naming what was expected and what was given.
    """
    root = err
    while root.__cause__ is not None and type(root).__name__ == "BrainStateError":
        root = root.__cause__
    given = ", ".join(
        f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', ()))}" for a in jax.tree.leaves(example_args)
    )
    first = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return type(root)(f"compile: the model cannot run one step on the example input(s) [{given}]: {first}")
