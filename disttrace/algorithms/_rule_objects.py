"""braintrace 0.2.8's learner objects of the newer rules: SnAp, EProp, OSTL, UORO, ThreeFactor.

The same thin layer as :mod:`disttrace.algorithms._objects` (``D_RTRL(model)``,
``pp_prop(model, ...)``): each name is both. Called with a model first it builds the
learner object, a ``brainstate.nn.Module`` holding the model whose ``compile_graph``
builds the learner ``disttrace.compile`` returns for the spec (the object computes
nothing itself); called without one it returns disttrace's spec as before::

    algo = dt.SnAp(model, n=2)           # braintrace's spelling: the object
    brainstate.nn.init_all_states(model, batch_size=B)
    algo.compile_graph(x0)
    grads = algo.etrace_grad(xs, ys, step_fn=lambda x, y: loss(algo(x), y))

    spec = dt.SnAp(n=2)                  # disttrace's: the spec, for dt.compile(model, spec, x0, ...)

Object -> the learner its ``compile_graph`` builds (the spec with no model):

- ``SnAp(model, n)`` -> :class:`~disttrace.algorithms.SnApLearner` (``SnAp(n)``);
- ``EProp(model, feedback, kappa_filter_decay, random_feedback_key)`` ->
  :class:`~disttrace.algorithms.OnlineLearner` with e-prop rules (``EProp(...)``);
- ``OSTLRecurrent(model)`` -> :class:`~disttrace.algorithms.OSTLRecurrentLearner`
  (``OSTLRecurrent()``);
- ``OSTLFeedforward(model, decay_or_rank)`` -> :class:`~disttrace.algorithms.OnlineLearner`
  (``OSTLFeedforward(decay_or_rank)``);
- ``UORO(model, projection_key=...)`` -> :class:`~disttrace.algorithms.UOROLearner` (``UORO(...)``);
- ``ThreeFactor(model, modulator=...)`` -> :class:`~disttrace.algorithms.ThreeFactorLearner`
  (``ThreeFactor(modulator)``).

``RandomProjectionVjpAlgorithm`` is ``UORO`` (braintrace's only named random-projection
rule; its ``config=`` coordinates are not implemented here). braintrace's ``DNI`` / ``SyntheticGradient`` have no counterpart here.

What differs from braintrace, and why:

- ``snap_max_jacobian_elements``, ``fast_solve``, ``chunked_trace``: accepted and unused
  (disttrace's SnAp bounds its influence matrix by ``memory_budget`` bytes instead, a
  disttrace keyword; each op's closed-form trace rule is always used; chunking is
  ``etrace_grad``'s ``chunk_size``).
- ``config``, ``trace_dtype`` and (except for ``EProp``, where it draws the random
  feedback) ``random_feedback_key`` raise :class:`NotSupportedError`, as for ``D_RTRL``.
- ``UORO`` defaults to ``vjp_method='multi-step'`` as in braintrace, whose UORO runs
  ``etrace_grad`` in window mode (``chunk_size=k``, ``step_fn`` given (k, ...) windows);
  that mode is refused here (:class:`NotSupportedError`): give ``step_fn`` one step. The
  estimate is the paper's over the whole model (see :mod:`disttrace.algorithms._uoro`).
- ``ThreeFactor``'s modulator is fixed when the graph is compiled: a number, a (B,)
  array or disttrace's ``modulator(t, loss, out)`` (a per-step reward sequence ``r`` is
  ``lambda t, loss, out: r[t]``). braintrace's per-call ``algo.update(x, modulator=m)``
  and assigning ``algo.modulator`` after compiling raise :class:`NotSupportedError`.

Example:
  >>> import brainstate, jax.numpy as jnp, disttrace as dt
  >>> net = dt.nn.LIFLayer(3, 4, recurrent=True)
  >>> _ = brainstate.nn.init_all_states(net, batch_size=2)
  >>> algo = dt.SnAp(net, n=1)
  >>> algo.compile_graph(jnp.zeros((2, 3)))
  >>> type(algo.learner).__name__, algo.n
  ('SnApLearner', 1)
  >>> isinstance(dt.SnAp(n=1), dt.SnAp), type(dt.SnAp(n=1)).__name__
  (True, 'SnAp')
"""

from __future__ import annotations

from typing import Any

from disttrace.algorithms import _eprop, _ostl, _snap, _three_factor, _uoro
from disttrace.algorithms._objects import (
    _MAX_JACOBIAN_ELEMENTS,
    ES_D_RTRL,
    ControlFlowPolicy,
    ETraceVjpAlgorithm,
    ParamDimVjpAlgorithm,
    _SpecOrLearner,
)
from disttrace.checks import boolean
from disttrace.errors import NotSupportedError

__all__ = ["EProp", "OSTLFeedforward", "OSTLRecurrent", "RandomProjectionVjpAlgorithm", "SnAp", "ThreeFactor", "UORO"]

_DEFAULT_BUDGET = 2**30  # the specs' default memory_budget (1 GiB)


class SnAp(ParamDimVjpAlgorithm, metaclass=_SpecOrLearner):
    """SnAp-n: the learner object ``SnAp(model, n, ...)``, or with no model the spec
    ``SnAp(n, memory_budget)`` (:class:`disttrace.algorithms._snap.SnAp`).

    Args:
      model: the ``brainstate.nn.Module``.
      n: steps of the influence matrix's sparsity pattern (>= 1; default 2, as braintrace).
      name, vjp_method, fast_solve: as :class:`ParamDimVjpAlgorithm`.
      snap_max_jacobian_elements: accepted, unused (see ``memory_budget``).
      memory_budget: disttrace's bound: bytes the densely stored influence matrix may
        take (default 1 GiB); compiling a larger one raises ``ValueError``.
      **kwargs: ``trace_dtype``, ``chunked_trace``, ``control_flow``, ``config``,
        ``random_feedback_key`` as :class:`ParamDimVjpAlgorithm`.

    Raises:
      ValueError: on a bad ``n`` or ``memory_budget``.
      NotSupportedError: as :class:`ParamDimVjpAlgorithm`.
    """

    _spec_class = _snap.SnAp

    def __init__(
        self,
        model,
        n: int = 2,
        name: str | None = None,
        vjp_method: str = "single-step",
        fast_solve: bool = True,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
        memory_budget: int = _DEFAULT_BUDGET,
        **kwargs: Any,
    ):
        super().__init__(model, name=name, vjp_method=vjp_method, fast_solve=fast_solve,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self._rule_spec = _snap.SnAp(n, memory_budget)  # validates both

    @property
    def n(self) -> int:
        """Steps of the sparsity pattern."""
        return self._rule_spec.n

    def _spec(self):
        return self._rule_spec


class EProp(ParamDimVjpAlgorithm, metaclass=_SpecOrLearner):
    """e-prop: the learner object ``EProp(model, feedback, kappa_filter_decay, ...)``, or
    with no model the spec (:class:`disttrace.algorithms._eprop.EProp`).

    Args:
      model: the ``brainstate.nn.Module``.
      feedback: ``'symmetric'`` (the loss gradient) or ``'random'`` (a fixed random
        projection of it).
      kappa_filter_decay: the eligibility traces' low-pass filter ``κ`` in [0, 1) (0: none).
      random_feedback_key: int seed or ``jax.random`` key of the feedback matrices;
        required with ``feedback='random'``, not allowed otherwise.
      name, vjp_method, fast_solve: as :class:`ParamDimVjpAlgorithm`.
      **kwargs: ``trace_dtype``, ``chunked_trace``, ``control_flow``, ``config``,
        ``snap_max_jacobian_elements`` as :class:`ParamDimVjpAlgorithm`.

    Raises:
      ValueError: on a bad argument, or a missing or superfluous key.
      NotSupportedError: as :class:`ParamDimVjpAlgorithm`.
    """

    _spec_class = _eprop.EProp

    def __init__(
        self,
        model,
        feedback: str = "symmetric",
        kappa_filter_decay: float = 0.0,
        random_feedback_key=None,
        name: str | None = None,
        vjp_method: str = "single-step",
        fast_solve: bool = True,
        **kwargs: Any,
    ):
        # the key is e-prop's own argument here (its random feedback), not the base's refused one
        super().__init__(model, name=name, vjp_method=vjp_method, fast_solve=fast_solve, **kwargs)
        self._rule_spec = _eprop.EProp(feedback, kappa_filter_decay, random_feedback_key)

    @property
    def feedback(self) -> str:
        """``'symmetric'`` or ``'random'``."""
        return self._rule_spec.feedback

    @property
    def kappa_filter_decay(self) -> float:
        """The traces' filter ``κ``."""
        return self._rule_spec.kappa_filter_decay

    def _spec(self):
        return self._rule_spec


class OSTLRecurrent(ParamDimVjpAlgorithm, metaclass=_SpecOrLearner):
    """OSTL 'with H': the learner object ``OSTLRecurrent(model, ...)`` (arguments of
    :class:`ParamDimVjpAlgorithm`), or with no model the spec ``OSTLRecurrent()``
    (:class:`disttrace.algorithms._ostl.OSTLRecurrent`)."""

    _spec_class = _ostl.OSTLRecurrent

    def _spec(self):
        return _ostl.OSTLRecurrent()


class OSTLFeedforward(ES_D_RTRL):
    """OSTL 'without H': the learner object ``OSTLFeedforward(model, decay_or_rank=1e-6,
    ...)`` (further arguments of :class:`IODimVjpAlgorithm`; an ``ES_D_RTRL`` object, as
    braintrace's is a ``pp_prop``), or with no model the spec
    (:class:`disttrace.algorithms._ostl.OSTLFeedforward`).

    Raises:
      ValueError: on a bad ``decay_or_rank``.
      NotSupportedError: as :class:`IODimVjpAlgorithm`.
    """

    _spec_class = _ostl.OSTLFeedforward

    def __init__(self, model, decay_or_rank=1e-6, name: str | None = None, **kwargs: Any):
        super().__init__(model, decay_or_rank, name=name, **kwargs)
        self._es = _ostl.OSTLFeedforward(decay_or_rank)


class UORO(ETraceVjpAlgorithm, metaclass=_SpecOrLearner):
    """UORO: the learner object ``UORO(model, projection_key=42, ...)``, or with no model
    the spec (:class:`disttrace.algorithms._uoro.UORO`).

    Args:
      model: the ``brainstate.nn.Module``.
      name, control_flow: as :class:`ETraceVjpAlgorithm`.
      vjp_method: default ``'multi-step'`` as braintrace; ``etrace_grad`` then refuses
        ``chunk_size`` >= 2 (braintrace's window mode): give ``step_fn`` one step.
      fast_solve: accepted, unused.
      projection_key: int seed or ``jax.random`` key of the random signs (default 42).
      projection_eps: ``ε`` of the normalisers (>= 0, default 1e-12).
      random_feedback_key, config: must be None (see :class:`NotSupportedError`).
      snap_max_jacobian_elements: accepted, unused.
      memory_budget: disttrace's bound on the estimate's bytes (default 1 GiB).

    Raises:
      ValueError: on a bad argument.
      NotSupportedError: on ``config`` or ``random_feedback_key``.
    """

    _spec_class = _uoro.UORO

    def __init__(
        self,
        model,
        name: str | None = None,
        vjp_method: str = "multi-step",
        fast_solve: bool = True,
        control_flow: ControlFlowPolicy | None = None,
        projection_key: Any = 42,
        projection_eps: float = 1e-12,
        random_feedback_key=None,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
        config=None,
        memory_budget: int = _DEFAULT_BUDGET,
    ):
        super().__init__(model, name, vjp_method, control_flow, config, random_feedback_key, snap_max_jacobian_elements)
        boolean(type(self).__name__, "fast_solve", fast_solve)
        self._rule_spec = _uoro.UORO(projection_key, projection_eps, memory_budget)

    @property
    def projection_key(self) -> tuple[int, ...]:
        """The random signs' key, as raw key words."""
        return self._rule_spec.projection_key

    @property
    def projection_eps(self) -> float:
        """``ε`` of the normalisers."""
        return self._rule_spec.projection_eps

    def _spec(self):
        return self._rule_spec


RandomProjectionVjpAlgorithm = UORO
"""braintrace's name of the random-projection family; UORO is its only rule."""


class ThreeFactor(ParamDimVjpAlgorithm, metaclass=_SpecOrLearner):
    """Three-factor learning: the learner object ``ThreeFactor(model, modulator=...)``, or
    with no model the spec ``ThreeFactor(modulator)``
    (:class:`disttrace.algorithms._three_factor.ThreeFactor`).

    Args:
      model: the ``brainstate.nn.Module``.
      name, fast_solve, trace_dtype, chunked_trace, control_flow,
        snap_max_jacobian_elements: as :class:`ParamDimVjpAlgorithm`.
      vjp_method: must be ``'single-step'`` (as braintrace: the modulator replaces the
        learning signal of each step).
      modulator: a number, a (B,) array, or ``modulator(t, loss, out)`` (see
        :mod:`disttrace.algorithms._three_factor`). May be None here and assigned to
        ``algo.modulator`` before :meth:`compile_graph`.

    Raises:
      ValueError: on ``vjp_method='multi-step'`` or a bad modulator; at
        :meth:`compile_graph`, when no modulator was given.
      NotSupportedError: as :class:`ParamDimVjpAlgorithm`; on assigning the modulator
        after compiling or passing one per call (see the module docstring).
    """

    _spec_class = _three_factor.ThreeFactor

    def __init__(
        self,
        model,
        name: str | None = None,
        vjp_method: str = "single-step",
        modulator: Any = None,
        fast_solve: bool = True,
        trace_dtype=None,
        chunked_trace: bool = True,
        control_flow: ControlFlowPolicy | None = None,
        snap_max_jacobian_elements: int = _MAX_JACOBIAN_ELEMENTS,
    ):
        super().__init__(model, name, vjp_method, fast_solve, trace_dtype, chunked_trace, control_flow,
                         snap_max_jacobian_elements=snap_max_jacobian_elements)
        if self.vjp_method != "single-step":
            raise ValueError(
                f"ThreeFactor: argument 'vjp_method' must be 'single-step' (the modulator replaces each step's "
                f"learning signal, as in braintrace); got {vjp_method!r}"
            )
        self._rule_spec = None
        self.modulator = modulator

    @property
    def modulator(self):
        """The modulator (None until one is given)."""
        return None if self._rule_spec is None else self._rule_spec.modulator

    @modulator.setter
    def modulator(self, value) -> None:
        if self.is_compiled:
            raise NotSupportedError(
                "ThreeFactor: the modulator is fixed when the graph is compiled; assigning it afterwards is not "
                "supported (the compiled step would keep the old one). Give a callable modulator(t, loss, out) "
                "instead (a per-step reward sequence r: lambda t, loss, out: r[t])"
            )
        self._rule_spec = None if value is None else _three_factor.ThreeFactor(value)  # validates it

    def _spec(self):
        if self._rule_spec is None:
            raise ValueError(
                "ThreeFactor: no modulator: pass ThreeFactor(model, modulator=...) or assign algo.modulator "
                "before compile_graph (a number, a (B,) array or modulator(t, loss, out))"
            )
        return self._rule_spec

    def update(self, *args, modulator: Any = None):
        """One step, as :meth:`ETraceAlgorithm.update`.

        Raises:
          NotSupportedError: on a per-call ``modulator`` (see the module docstring).
        """
        if modulator is not None:
            raise NotSupportedError(
                "ThreeFactor: a per-call modulator (algo.update(x, modulator=m)) is not supported: the modulator "
                "is part of the compiled step. Give ThreeFactor(model, modulator=f) with f(t, loss, out) -> the "
                "modulator of step t (a per-step reward sequence r: lambda t, loss, out: r[t]; t counts the "
                "steps since the traces were reset)"
            )
        return super().update(*args)
