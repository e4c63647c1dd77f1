"""braintrace 0.2.8's learner objects, as a thin layer over disttrace's learners.

braintrace builds a learner as an object around the model and compiles it afterwards::

    algo = dt.D_RTRL(model)                      # or dt.pp_prop(model, 0.9), dt.ES_D_RTRL(...)
    brainstate.nn.init_all_states(model, batch_size=B)
    algo.compile_graph(x0)
    grads = algo.etrace_grad(xs, ys, step_fn=lambda x, y: loss(algo(x), y))

Each object is a ``brainstate.nn.Module`` holding the model (so
``brainstate.nn.reset_all_states(algo, batch_size=B)`` resets the model's states and,
through :meth:`ETraceAlgorithm.reset_state`, the traces) and, once compiled, the
:class:`~disttrace.algorithms.OnlineLearner` that ``disttrace.compile`` would return:
every computation is that learner's. Its traces live in a brainstate ``State``
(``init_etrace_state``), so the stateful API runs inside ``brainstate.transform.jit``.

``D_RTRL``, ``ES_D_RTRL`` and ``pp_prop`` are both: called with a model first they build
the object; called without one (``dt.D_RTRL()``, ``dt.ES_D_RTRL(decay=0.9)``, or by
``dt.compile(model, dt.D_RTRL, ...)``) they return disttrace's algorithm spec as before,
and ``isinstance`` accepts either. The newer rules' objects (``SnAp``, ``EProp``, ``OSTL*``,
``UORO``, ``ThreeFactor``) are in :mod:`disttrace.algorithms._rule_objects`.

braintrace parameters with no meaning here are accepted and documented as such where the
result is the same, and refused with :class:`NotSupportedError` saying why where it
would not be (``config``, ``random_feedback_key``, ``trace_dtype``, non-default
:class:`ControlFlowPolicy` choices, window-mode ``etrace_grad``).

Example:
  >>> import brainstate, jax.numpy as jnp, disttrace as dt
  >>> net = dt.nn.LIFLayer(3, 4)
  >>> _ = brainstate.nn.init_all_states(net, batch_size=2)
  >>> algo = dt.D_RTRL(net)
  >>> algo.compile_graph(jnp.zeros((2, 3)))
  >>> algo(jnp.ones((2, 3))).shape
  (2, 4)
  >>> isinstance(dt.D_RTRL(), dt.D_RTRL)
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
from jax.tree_util import register_pytree_node_class

from disttrace.algorithms import _d_rtrl, _es_d_rtrl
from disttrace.algorithms._compile import compile as _compile
from disttrace.algorithms._learner import UnbatchedBinding
from disttrace.checks import boolean, one_of, positive_int
from disttrace.compiler import RNG_PATH, ControlFlowPolicy, ModuleBinding, compile_etrace_graph
from disttrace.errors import NotSupportedError

__all__ = [
    "D_RTRL",
    "ES_D_RTRL",
    "ControlFlowPolicy",
    "ETraceAlgorithm",
    "ETraceGraphExecutor",
    "ETraceVjpAlgorithm",
    "IODimVjpAlgorithm",
    "MultiStepData",
    "NotSupportedError",
    "ParamDimVjpAlgorithm",
    "SingleStepData",
    "pp_prop",
]

_MAX_JACOBIAN_ELEMENTS = 1 << 24  # braintrace's default for snap_max_jacobian_elements (unused here)
_VJP_METHODS = ("single-step", "multi-step")


# ---- input wrappers ----------------------------------------------------------------------
class _StepData:
    def __init__(self, data: Any):
        self.data = data

    def tree_flatten(self):
        return (self.data,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(children[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({jax.tree.map(jnp.shape, self.data)})"


@register_pytree_node_class
class SingleStepData(_StepData):
    """Marks an input as one time step's (the default for a bare array).

    Args:
      data: a pytree of arrays, one step (B, ...) (unbatched: no B).
    """


@register_pytree_node_class
class MultiStepData(_StepData):
    """Marks an input as time-major, (T, ...): ``algo(MultiStepData(xs))`` runs T steps
    (forward and trace update, no gradient; ``etrace_evolve``) and returns the outputs
    stacked (T, ...). Other arguments of the same call (bare or :class:`SingleStepData`)
    are the same at every step.

    Args:
      data: a pytree of arrays with a leading time axis.
    """


def _is_input(x) -> bool:
    return isinstance(x, _StepData)


# ---- control flow -----------------------------------------------------------------------------
# the compiler's policy (disttrace.compiler.ControlFlowPolicy): braintrace's fields and defaults
# (cond converted to select, scans and small static whiles unrolled, others refused)
def _check_policy(who: str, control_flow) -> ControlFlowPolicy:
    if control_flow is None:
        return ControlFlowPolicy()
    if not isinstance(control_flow, ControlFlowPolicy):
        raise ValueError(f"{who}: argument 'control_flow' must be a ControlFlowPolicy or None; got {control_flow!r}")
    return control_flow


# ---- the graph executor -----------------------------------------------------------------------
def _infer_batch(model, args) -> int | None:
    """B if the model's hidden states are (B, ...) with at least one neuron axis and every
    input leaf is (B, ...); else ``None`` (unbatched)."""
    hidden = jax.tree.leaves([st.value for st in ModuleBinding.of(model).hidden.values()])
    leads = {jnp.shape(v)[0] if jnp.ndim(v) >= 2 else None for v in hidden}
    if len(leads) != 1 or None in leads:
        return None
    (b,) = leads
    leaves = jax.tree.leaves(args)
    if leaves and all(jnp.ndim(a) >= 1 and jnp.shape(a)[0] == b for a in leaves):
        return b
    return None


class ETraceGraphExecutor:
    """Compiles a model's step into its :class:`~disttrace.compiler.ETraceGraph`.

    braintrace's executor also runs the step and its Jacobians; here the learner does
    (``disttrace.compiler.run_step`` and the learning rules), so this holds the model and
    its graph.

    Args:
      model: the ``brainstate.nn.Module``.
      include_recurrent_mixing: must be False: disttrace's D-RTRL/ES-D-RTRL keep the
        diagonal of the hidden Jacobian (full RTRL is its own learner).
      sparse_n: must be None (no SnAp-n sparsity here).
      snap_max_jacobian_elements: accepted, unused (no SnAp Jacobians here).
      control_flow: a :class:`ControlFlowPolicy` or None.

    Raises:
      NotSupportedError: for ``include_recurrent_mixing=True`` or a ``sparse_n``.
      ValueError: if ``model`` is not a ``brainstate.nn.Module``.
    """

    def __init__(
        self,
        model,
        include_recurrent_mixing: bool = False,
        sparse_n: int | None = None,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
        control_flow: ControlFlowPolicy | None = None,
    ):
        if not isinstance(model, brainstate.nn.Module):
            raise ValueError(f"ETraceGraphExecutor: argument 'model' must be a brainstate.nn.Module; got {type(model).__name__}")
        if boolean("ETraceGraphExecutor", "include_recurrent_mixing", include_recurrent_mixing) or sparse_n is not None:
            raise NotSupportedError(
                "ETraceGraphExecutor: include_recurrent_mixing/sparse_n (braintrace's SnAp) are not supported: "
                "the executor only compiles the graph; use the learner object disttrace.SnAp(model, n) (or "
                "OSTLRecurrent(model)), which keeps the recurrent Jacobian itself"
            )
        positive_int("ETraceGraphExecutor", "snap_max_jacobian_elements", snap_max_jacobian_elements)
        self.model = model
        self.control_flow = _check_policy("ETraceGraphExecutor", control_flow)
        self._graph = None

    @property
    def graph(self):
        """The compiled graph.

        Raises:
          RuntimeError: before :meth:`compile_graph`.
        """
        if self._graph is None:
            raise RuntimeError("ETraceGraphExecutor: the graph is not compiled yet; call compile_graph(*example_args)")
        return self._graph

    def compile_graph(self, *args) -> None:
        """Compiles ``model(*args)`` (batched or unbatched inputs, as the states are)."""
        binding = ModuleBinding.of(self.model)
        if _infer_batch(self.model, args) is None:
            binding = UnbatchedBinding.of(self.model)
            args = jax.tree.map(lambda a: jnp.expand_dims(jnp.asarray(a), 0), args)
        self._graph = compile_etrace_graph(self.model, *args, binding=binding)

    @property
    def states(self) -> dict:
        """The model's states by path."""
        return dict(self.model.states().items())

    @property
    def path_to_states(self) -> dict:
        """The model's states by path (braintrace's name)."""
        return self.states

    @property
    def state_id_to_path(self) -> dict:
        """``id(state) -> path``."""
        return {id(st): p for p, st in self.states.items()}

    def show_graph(self, verbose: bool = True, return_msg: bool = False) -> str | None:
        """Prints (``verbose``) and/or returns (``return_msg``) the graph summary."""
        msg = str(self.graph)
        if verbose:
            print(msg)
        return msg if return_msg else None


# ---- the learner objects ------------------------------------------------------------------------
class ETraceAlgorithm(brainstate.nn.Module):
    """Base of the learner objects: a model, its executor and, once compiled, its learner.

    Args:
      model: the ``brainstate.nn.Module`` to learn online (a child of this module).
      graph_executor: its :class:`ETraceGraphExecutor`.
      name: the module's name.

    Attributes:
      model: the model (``model4compile`` is braintrace's name for it).
      is_compiled: whether :meth:`compile_graph` ran.
      learner: see :attr:`learner`.

    Raises:
      ValueError: if ``model`` is not a ``brainstate.nn.Module`` or ``graph_executor``
        not an :class:`ETraceGraphExecutor`.
    """

    def __init__(self, model, graph_executor: ETraceGraphExecutor, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(model, brainstate.nn.Module):
            raise ValueError(f"{type(self).__name__}: argument 'model' must be a brainstate.nn.Module; got {type(model).__name__}")
        if not isinstance(graph_executor, ETraceGraphExecutor):
            raise ValueError(
                f"{type(self).__name__}: argument 'graph_executor' must be an ETraceGraphExecutor; got {type(graph_executor).__name__}"
            )
        self.model = model
        self.graph_executor = graph_executor
        self.is_compiled = False
        self._learner = None

    # ---- what the subclasses say --------------------------------------------------------------
    def _spec(self):
        raise NotSupportedError(
            f"{type(self).__name__} is abstract: use D_RTRL, ES_D_RTRL / pp_prop, SnAp, EProp, OSTLRecurrent, "
            "OSTLFeedforward, UORO or ThreeFactor"
        )

    def rules(self, graph) -> tuple:
        """The learning rule per op of ``graph`` (an object is also its algorithm's spec)."""
        return self._spec().rules(graph)

    # ---- compiling -----------------------------------------------------------------------------
    @property
    def model4compile(self):
        """The model (braintrace's attribute name)."""
        return self.model

    def compile_graph(self, *args, batch_size: int | None | str = "infer") -> None:
        """Compiles the model's step for these example inputs and allocates the traces.

        The model's states must exist (``brainstate.nn.init_all_states``). Whether the
        model is batched is read from its states: batched with B when every hidden state
        is (B, ...) with a neuron axis and every input leaf is (B, ...); else unbatched.
        Pass ``batch_size`` (an int, or None for unbatched) where that is ambiguous.
        A second call does nothing (as in braintrace).

        Raises:
          CompilationError, ValueError: as ``disttrace.compile``.
        """
        if self.is_compiled:
            return
        batch = _infer_batch(self.model, args) if batch_size == "infer" else batch_size
        self._learner = _compile(self.model, self._spec(), *args, batch_size=batch, init_states=False,
                                 control_flow=self.graph_executor.control_flow)
        self.graph_executor._graph = self._learner.graph
        self.init_etrace_state()
        self.is_compiled = True

    def init_etrace_state(self, *args, **kwargs) -> None:
        """Allocates the traces (zeros) in a brainstate ``State`` (``compile_graph`` calls it)."""
        del args, kwargs  # braintrace passes the example inputs; the shapes are the graph's
        self.learner.init_etrace_state()

    @property
    def learner(self):
        """The :class:`~disttrace.algorithms.OnlineLearner` doing the work.

        Raises:
          RuntimeError: before :meth:`compile_graph`.
        """
        if self._learner is None:
            raise RuntimeError(
                f"{type(self).__name__}: not compiled yet; call brainstate.nn.init_all_states(model, ...) and "
                "compile_graph(*example_inputs) first (or use disttrace.compile)"
            )
        return self._learner

    @property
    def graph(self):
        """The compiled :class:`~disttrace.compiler.ETraceGraph`."""
        return self.learner.graph

    @property
    def executor(self) -> ETraceGraphExecutor:
        """The graph executor."""
        return self.graph_executor

    @property
    def param_states(self) -> dict:
        """The model's ``ParamState``s by path tuple."""
        return self.learner.param_states

    @property
    def hidden_states(self) -> dict:
        """The model's ``HiddenState``s by path tuple."""
        return dict(self.learner.sync().hidden)

    @property
    def other_states(self) -> dict:
        """The model's other states by path tuple."""
        return {p: s for p, s in self.learner.sync().aux.items() if p != RNG_PATH}

    @property
    def path_to_states(self) -> dict:
        """The model's states by path tuple."""
        return self.graph_executor.path_to_states

    @property
    def state_id_to_path(self) -> dict:
        """``id(state) -> path``."""
        return self.graph_executor.state_id_to_path

    def show_graph(self, verbose: bool = True, return_msg: bool = False) -> str | None:
        """Prints (``verbose``) and/or returns (``return_msg``) the graph summary."""
        return self.graph_executor.show_graph(verbose=verbose, return_msg=return_msg)

    # ---- running -------------------------------------------------------------------------------
    def reset_state(self, batch_size: int | None = None, **kwargs) -> None:
        """Zeros the traces (and the step count); the model's states are reset by its own
        ``reset_state`` (``brainstate.nn.reset_all_states(algo, ...)`` calls both). Works
        inside ``brainstate.transform.jit``; does nothing before compilation.

        Raises:
          ValueError: if ``batch_size`` is not the compiled batch (unbatched: None).
        """
        del kwargs
        if not self.is_compiled:
            return
        compiled = None if self.learner.unbatched else self.learner.graph.batch_size
        if batch_size is not None and batch_size != compiled:
            raise ValueError(
                f"{type(self).__name__}.reset_state: argument 'batch_size' must be {compiled} (as compiled) or None; "
                f"got {batch_size!r}. To change the batch, build the object and compile_graph again"
            )
        self.learner._reset_traces()

    def update(self, *args):
        """One step (forward and trace update), or T steps when an argument is a
        :class:`MultiStepData` (outputs stacked (T, ...)).

        Raises:
          NotSupportedError: a :class:`MultiStepData` inside ``etrace_grad``'s ``step_fn``
            (braintrace's window mode).
        """
        leaves, tree = jax.tree.flatten(args, is_leaf=_is_input)
        if not any(isinstance(x, MultiStepData) for x in leaves):
            return self.learner(*jax.tree.unflatten(tree, [x.data if _is_input(x) else x for x in leaves]))
        if self.learner._active_call is not None:
            raise NotSupportedError(
                "a MultiStepData window inside etrace_grad's step_fn is braintrace's window mode; disttrace "
                "drives one step per step_fn call: call the learner on one step's input"
            )
        lengths = {jnp.shape(x)[0] for m in leaves if isinstance(m, MultiStepData) for x in jax.tree.leaves(m.data)}
        if len(lengths) != 1:
            raise ValueError(f"{type(self).__name__}: every MultiStepData must have the same leading time axis; got {sorted(lengths)}")
        (t_len,) = lengths
        seqs = [
            x.data if isinstance(x, MultiStepData)
            else jax.tree.map(lambda a: jnp.broadcast_to(a, (t_len, *jnp.shape(a))), x.data if _is_input(x) else x)
            for x in leaves
        ]
        learner = self.learner
        return learner.etrace_evolve(
            *seqs, step_fn=lambda *seq_t: learner(*jax.tree.unflatten(tree, list(seq_t))), return_outputs=True
        )

    def __call__(self, *args):
        """:meth:`update`."""
        return self.update(*args)

    def etrace_grad(
        self,
        *seqs,
        step_fn: Callable,
        mask=None,
        chunk_size: int | None = None,
        weights: dict | None = None,
        reduction: str = "mean",
        loss_output: str = "per_step",
        has_aux: bool = False,
        return_value: bool = False,
    ):
        """braintrace's ``etrace_grad``: :meth:`OnlineLearner.etrace_grad
        <disttrace.algorithms.Learner.etrace_grad>` (same arguments and results).

        ``chunk_size`` 1 is the plain path (as in braintrace); k >= 2 is disttrace's
        chunked contraction (one step per ``step_fn`` call, the same gradient).

        Raises:
          NotSupportedError: ``chunk_size`` >= 2 with ``vjp_method="multi-step"``:
            braintrace's window mode (``step_fn`` gets (k, ...) windows) is not supported.
        """
        if chunk_size == 1 and not isinstance(chunk_size, bool):
            chunk_size = None
        if chunk_size is not None and getattr(self, "vjp_method", None) == "multi-step":
            raise NotSupportedError(
                f"etrace_grad: chunk_size={chunk_size!r} with vjp_method='multi-step' is braintrace's window mode "
                "(step_fn gets (k, ...) windows and returns (k,) losses), which disttrace does not implement: give "
                "step_fn one step (chunk_size=None), or chunk_size=k on a vjp_method='single-step' object for "
                "disttrace's chunked contraction (same gradient, one step per step_fn call)"
            )
        return self.learner.etrace_grad(
            *seqs, step_fn=step_fn, return_value=return_value, chunk_size=chunk_size, mask=mask, weights=weights,
            reduction=reduction, loss_output=loss_output, has_aux=has_aux,
        )

    def etrace_evolve(self, *seqs, step_fn: Callable | None = None, chunk_size: int | None = None,
                      return_outputs: bool = False):
        """braintrace's ``etrace_evolve``: :meth:`Learner.etrace_evolve
        <disttrace.algorithms.Learner.etrace_evolve>`."""
        return self.learner.etrace_evolve(*seqs, step_fn=step_fn, chunk_size=chunk_size, return_outputs=return_outputs)


def _refuse(who: str, **given) -> None:
    reasons = {
        "config": "ETraceConfig learning-rule coordinates are not implemented; use D_RTRL, ES_D_RTRL/pp_prop or "
        "disttrace.Hybrid",
        "random_feedback_key": "there is no random-feedback learning signal here (only the exact loss gradient)",
        "trace_dtype": "traces take the dtype of the op's operands and hidden states; cast the model instead",
    }
    for arg, value in given.items():
        if value is not None:
            raise NotSupportedError(f"{who}: argument {arg!r} is not supported ({reasons[arg]}); got {value!r}")


class ETraceVjpAlgorithm(ETraceAlgorithm):
    """Base of the VJP-based learner objects (braintrace's signature).

    Args:
      model: the ``brainstate.nn.Module``.
      name: the module's name.
      vjp_method: ``"single-step"`` or ``"multi-step"``. Per step both give the same
        gradient here (disttrace's learning signal is ∂L_t/∂h_t of each step);
        ``"multi-step"`` only marks the object for braintrace's window mode, which
        ``etrace_grad`` refuses. ``algo(MultiStepData(xs))`` works with either.
      control_flow: a :class:`ControlFlowPolicy` or None.
      config, random_feedback_key: must be None (see :class:`NotSupportedError`).
      snap_max_jacobian_elements: accepted, unused (no SnAp Jacobians here).

    Raises:
      ValueError: on a bad ``vjp_method``.
      NotSupportedError: on ``config`` or ``random_feedback_key``.
    """

    def __init__(
        self,
        model,
        name: str | None = None,
        vjp_method: str = "single-step",
        control_flow: ControlFlowPolicy | None = None,
        config=None,
        random_feedback_key=None,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
    ):
        who = type(self).__name__
        executor = ETraceGraphExecutor(model, control_flow=control_flow) if isinstance(model, brainstate.nn.Module) else None
        super().__init__(model, executor, name=name)
        self.vjp_method = one_of(who, "vjp_method", vjp_method, _VJP_METHODS)
        _refuse(who, config=config, random_feedback_key=random_feedback_key)
        positive_int(who, "snap_max_jacobian_elements", snap_max_jacobian_elements)


class ParamDimVjpAlgorithm(ETraceVjpAlgorithm):
    """Traces in the parameter dimension: D-RTRL (:class:`~disttrace.algorithms.DRTRLRule`).

    Args:
      model, name, vjp_method, control_flow, config, random_feedback_key,
        snap_max_jacobian_elements: as :class:`ETraceVjpAlgorithm`.
      fast_solve: accepted; disttrace always uses each op's closed-form trace rule.
      trace_dtype: must be None (traces take the operands' dtype).
      chunked_trace: accepted; chunking is ``etrace_grad``'s ``chunk_size`` here.

    Raises:
      NotSupportedError: on ``trace_dtype``, ``config`` or ``random_feedback_key``.
    """

    def __init__(
        self,
        model,
        name: str | None = None,
        vjp_method: str = "single-step",
        fast_solve: bool = True,
        trace_dtype=None,
        chunked_trace: bool = True,
        control_flow: ControlFlowPolicy | None = None,
        config=None,
        random_feedback_key=None,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
    ):
        super().__init__(model, name, vjp_method, control_flow, config, random_feedback_key, snap_max_jacobian_elements)
        boolean(type(self).__name__, "fast_solve", fast_solve)
        boolean(type(self).__name__, "chunked_trace", chunked_trace)
        _refuse(type(self).__name__, trace_dtype=trace_dtype)

    def _spec(self):
        return _d_rtrl.D_RTRL()


class IODimVjpAlgorithm(ETraceVjpAlgorithm):
    """Traces in the input/output dimensions: ES-D-RTRL / pp-prop (:class:`~disttrace.algorithms.ESRule`).

    Args:
      model: the ``brainstate.nn.Module``.
      decay_or_rank: the smoothing decay in [0, 1), an int rank r (decay (r-1)/(r+1)),
        or an (input, output) pair of either.
      name, vjp_method, control_flow, config, random_feedback_key: as :class:`ETraceVjpAlgorithm`.
      fast_solve: accepted; disttrace always uses each op's closed-form trace rule.

    Raises:
      ValueError: on a bad ``decay_or_rank``.
      NotSupportedError: on ``config`` or ``random_feedback_key``.
    """

    def __init__(
        self,
        model,
        decay_or_rank,
        name: str | None = None,
        vjp_method: str = "single-step",
        fast_solve: bool = True,
        control_flow: ControlFlowPolicy | None = None,
        config=None,
        random_feedback_key=None,
    ):
        super().__init__(model, name, vjp_method, control_flow, config, random_feedback_key)
        boolean(type(self).__name__, "fast_solve", fast_solve)
        self._es = _es_d_rtrl.ES_D_RTRL(decay_or_rank=decay_or_rank)  # validates it

    @property
    def decay(self) -> float:
        """The output-side (f) decay, as braintrace's ``decay``."""
        return self._es.f_decay

    def _spec(self):
        return self._es


class _SpecOrLearner(type(brainstate.nn.Module)):
    """Metaclass of the names that are both: a model first -> the learner object; no
    model -> disttrace's spec (``_spec_class``). ``isinstance`` accepts both."""

    _spec_class: type

    def __call__(cls, *args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        if isinstance(model, brainstate.nn.Module):
            return super().__call__(*args, **kwargs)
        return cls._spec_class(*args, **kwargs)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls._spec_class) or super().__instancecheck__(obj)


class D_RTRL(ParamDimVjpAlgorithm, metaclass=_SpecOrLearner):  # noqa: N801 - braintrace's name
    """Diagonal RTRL: the learner object ``D_RTRL(model, ...)`` (arguments of
    :class:`ParamDimVjpAlgorithm`), or with no model the spec ``D_RTRL()`` that
    ``disttrace.compile`` takes (:class:`disttrace.algorithms._d_rtrl.D_RTRL`)."""

    _spec_class = _d_rtrl.D_RTRL


class ES_D_RTRL(IODimVjpAlgorithm, metaclass=_SpecOrLearner):  # noqa: N801 - braintrace's name
    """ES-D-RTRL (pp-prop): the learner object ``ES_D_RTRL(model, decay_or_rank, ...)``
    (arguments of :class:`IODimVjpAlgorithm`), or with no model the spec
    ``ES_D_RTRL(decay=0.9)`` / ``ES_D_RTRL(decay_or_rank=...)`` that ``disttrace.compile``
    takes (:class:`disttrace.algorithms._es_d_rtrl.ES_D_RTRL`)."""

    _spec_class = _es_d_rtrl.ES_D_RTRL


pp_prop = ES_D_RTRL
