"""What every learner shares: the model binding, input checks and the stateful API.

A learner wraps a compiled model. Called as ``learner(x)`` it runs one model step
(inside :meth:`etrace_grad`'s ``step_fn`` that call is routed to the algorithm); its
gradients are dicts keyed like :attr:`param_states` (the model's ``ParamState``s by
path tuple), each value shaped like that state's value.

The stateful API keeps the learner state in the model's states; when the model draws
random numbers that includes brainstate's global key (``binding.threads_rng``), which
:meth:`etrace_grad` and ``learner(x)`` advance step by step, like any other state.

An *unbatched* learner (``disttrace.compile`` without ``batch_size``; its binding an
:class:`UnbatchedBinding`) is the batch-of-one learner seen without the batch axis: the
model's states, the inputs of ``learner(x)`` and the sequences of :meth:`etrace_grad`
have no batch axis, the compiled graph and the functional state (``init``/``step``)
have a batch of one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding

from disttrace.algorithms._chunk_tuning import AUTO, PROBE_STEPS, ChunkChoice, chunk_candidates, fastest_chunk
from disttrace.algorithms._fn_cache import JitCache, function_key
from disttrace.checks import boolean, one_of, positive_int
from disttrace.compiler import ETraceGraph, ModuleBinding, is_tracer, path_str, run_step
from disttrace.errors import NotSupportedError
from disttrace.units import UNITLESS, attach, grad_units, loss_mantissa, unit_of

__all__ = ["Learner", "NotSupportedError", "UnbatchedBinding"]

_REDUCTIONS = ("mean", "sum")
_LOSS_OUTPUTS = ("per_step", "masked", "scalar")


_AUTODIFF_MESSAGE = (
    "autodiff through learner(x) (jax.grad, brainstate.transform.grad, ...) is not supported: it would give "
    "the recurrent weights only their one-step gradient, not the online one, without any error. Take the online "
    "gradient with learner.etrace_grad(xs, ys, step_fn=lambda x, y: loss(learner(x), y)) (or the functional "
    "learner.step(state, params, x, y)); braintrace's custom-VJP route through learner(x) has no counterpart here"
)


@jax.custom_vjp
def _guard(x):
    return x


def _guard_fwd(x):
    return x, None


def _guard_bwd(_, g):
    raise NotSupportedError(_AUTODIFF_MESSAGE)


_guard.defvjp(_guard_fwd, _guard_bwd)


def _refuse_autodiff(out):
    """``out`` unchanged, except that differentiating through it raises
    :class:`NotSupportedError` (at the backward pass: a forward call costs nothing)."""
    return jax.tree.map(lambda a: _guard(a) if jnp.issubdtype(jnp.result_type(a), jnp.inexact) else a, out)


@dataclasses.dataclass(frozen=True)
class UnbatchedBinding(ModuleBinding):
    """The binding of a model whose states have no batch axis, read as a batch of one.

    :meth:`values` gives every hidden value a leading axis of 1 and :meth:`write` takes
    it off again, so the graph is compiled, and the learner runs, at batch one while the
    model's ``HiddenState``s keep their unbatched shapes (what braintrace users and the
    model's own ``reset_state`` expect). Parameters and other states are unchanged.
    """

    def values(self) -> tuple[dict, dict, dict]:
        params, hidden, aux = super().values()
        return params, {p: jax.tree.map(lambda v: v[None], h) for p, h in hidden.items()}, aux

    def write(self, hidden: dict | None = None, aux: dict | None = None, params: dict | None = None) -> None:
        if hidden is not None:
            hidden = {p: jax.tree.map(lambda v: v[0], h) for p, h in hidden.items()}
        super().write(hidden=hidden, aux=aux, params=params)


def _add_batch(tree, axis: int = 0):
    return jax.tree.map(lambda a: jnp.expand_dims(jnp.asarray(a), axis), tree)


def _drop_batch(tree, axis: int = 0):
    return jax.tree.map(lambda a: jnp.squeeze(a, axis), tree)


class _LossUnit:
    """The unit of a step function's loss, recorded when the step is traced."""

    def __init__(self):
        self.unit = UNITLESS


def _record_loss_unit(step_fn: Callable, box: _LossUnit, has_aux: bool) -> Callable:
    def unitless(*args):
        res = step_fn(*args)
        loss = res[0] if has_aux else res
        box.unit = unit_of(loss)
        return (loss_mantissa(loss), *res[1:]) if has_aux else loss_mantissa(loss)

    return unitless



def _auto_axes(seqs: tuple) -> tuple:
    """``seqs`` with every array laid out on a mesh of ``Explicit`` axes (what
    ``jax.make_mesh`` makes by default) moved onto the same devices and partition spec
    under ``Auto`` axes; other leaves (and tracers) unchanged.

    The learners let XLA's partitioner place their intermediates (``Auto`` axes); under
    ``Explicit`` axes every reshape of a sharded axis must name its output sharding, and
    the chunked contraction's pairwise batch sum (``ops/_matmul.py``) cannot. The shards
    stay where they are; only the mesh's axis types differ.
    """
    def auto(leaf):
        if is_tracer(leaf) or not isinstance(leaf, jax.Array):
            return leaf
        sharding = leaf.sharding
        if not isinstance(sharding, NamedSharding) or AxisType.Explicit not in tuple(sharding.mesh.axis_types):
            return leaf
        mesh = sharding.mesh
        auto_mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
        return jax.device_put(leaf, NamedSharding(auto_mesh, sharding.spec))

    return jax.tree.map(auto, seqs)


class Learner:
    """Base of :class:`OnlineLearner` and :class:`BPTTLearner`.

    Attributes:
      model: the wrapped brainstate module.
      graph: its compiled :class:`~disttrace.compiler.ETraceGraph`.
      binding: the (params, hidden, aux) partition of its states, always the model's
        current ``State`` objects (see :attr:`binding`).
      loss_fn: optional ``loss_fn(out, target) -> scalar`` used by :meth:`step`.
    """

    def __init__(self, model, graph: ETraceGraph, binding: ModuleBinding, loss_fn: Callable | None = None):
        self.model = model
        self.graph = graph
        self._binding = binding
        self.loss_fn = loss_fn
        self._active_call: Callable | None = None
        self._jitted = JitCache()
        self._loss_units = JitCache(max_size=64, warn_after=2**31)  # function_key -> _LossUnit
        self._chunk_choices: dict = {}  # (step_fn key, sequence shapes) -> ChunkChoice

    # ---- state access -----------------------------------------------------------
    @property
    def binding(self) -> ModuleBinding:
        """The (params, hidden, aux) partition of the model's states, as of the last
        :meth:`sync` (every public entry point syncs first). Reading it changes nothing."""
        return self._binding

    def sync(self) -> ModuleBinding:
        """Follows the model's current ``State`` objects; returns the binding.

        ``brainstate.nn.init_all_states`` (and so :meth:`reset_state`) gives a module
        new ``State`` objects; a binding kept from compile time would then read and
        write the old ones, and every "reset" would silently start from the last
        values. So every public entry point (:meth:`etrace_grad`, calling the learner,
        :meth:`predict`, :meth:`params`, :attr:`param_states`, ``init``,
        :meth:`reset_state`) calls this first; when the hidden states were
        re-initialised this way the eligibility traces, which belong to the old
        trajectory, are cleared too.

        Raises:
          ValueError: if the model's state paths changed since compilation (a state
            added, removed or turned into another kind): compile the model again.
        """
        b = self._binding
        current, bound = dict(self.model.states().items()), b.states()
        if len(current) == len(bound) and all(current.get(p) is st for p, st in bound.items()):
            return b
        new = type(b).of(self.model, rng=b.threads_rng)
        for kind in ("params", "hidden", "aux"):
            old_paths, new_paths = set(getattr(b, kind)), set(getattr(new, kind))
            if old_paths != new_paths:
                raise ValueError(
                    f"the model's {kind} states changed since it was compiled (added: "
                    f"{sorted(path_str(p) for p in new_paths - old_paths)}, removed: "
                    f"{sorted(path_str(p) for p in old_paths - new_paths)}); compile it again"
                )
        self._binding = new
        if any(new.hidden[p] is not st for p, st in b.hidden.items()):
            self._reset_traces()
        return new

    @property
    def unbatched(self) -> bool:
        """Whether the model was compiled without a batch axis (see the module docstring)."""
        return isinstance(self._binding, UnbatchedBinding)

    @property
    def param_states(self) -> dict:
        """The model's ``ParamState``s by path tuple."""
        return dict(self.sync().params)

    def params(self) -> dict:
        """Current parameter values by path (a pytree for the functional API)."""
        return self.sync().values()[0]

    def _param_leaves(self, params: dict | None = None) -> list:
        params = self.params() if params is None else params
        leaves, tree = jax.tree.flatten(params)
        if tree != self.graph.param_tree:
            raise ValueError(
                f"argument 'params' must have the structure of learner.params(); got keys "
                f"{sorted(path_str(p) for p in params) if isinstance(params, dict) else type(params).__name__}"
            )
        return leaves

    def _grads_tree(self, leaves: list) -> dict:
        return jax.tree.unflatten(self.graph.param_tree, leaves)

    # ---- input validation ---------------------------------------------------------
    def _validate_args(self, leaves: list, tree) -> None:
        if tree != self.graph.arg_tree:
            raise ValueError(
                f"argument 'x' must have the structure the model was compiled with ({self.graph.arg_tree}); "
                f"got {tree}"
            )
        for i, (leaf, (shape, dtype)) in enumerate(zip(leaves, self.graph.arg_shapes)):
            where = "" if len(leaves) == 1 else f" (leaf {i})"
            if tuple(jnp.shape(leaf)) != shape:
                raise ValueError(
                    f"argument 'x'{where} must have shape {shape} (batch {self.graph.batch_size}, as compiled); "
                    f"got {tuple(jnp.shape(leaf))}"
                )
            # A different dtype would either fail deep inside a trace op or silently compute
            # in another precision than the traces: name it here, at the boundary.
            got = jnp.result_type(leaf)
            if got != dtype:
                raise TypeError(
                    f"argument 'x'{where} must have dtype {jnp.dtype(dtype).name} (as compiled); got {jnp.dtype(got).name}. "
                    f"Cast it (x.astype({jnp.dtype(dtype).name})) or compile with an example of the dtype you feed"
                )

    @staticmethod
    def _check_sequences(seqs: tuple) -> int:
        if not seqs:
            raise ValueError("etrace_grad: give at least one sequence (time-major arrays)")
        lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(seqs)}
        if None in lengths or len(lengths) != 1:
            raise ValueError(
                f"etrace_grad: every sequence must have the same leading time axis; got lengths {sorted(map(str, lengths))}"
            )
        (t,) = lengths
        if t < 1:
            raise ValueError("etrace_grad: sequences must have at least one time step")
        return t

    def etrace_grad(
        self,
        *seqs,
        step_fn: Callable,
        return_value: bool = False,
        chunk_size: int | str | None = None,
        mask=None,
        weights: dict | None = None,
        reduction: str = "mean",
        loss_output: str = "per_step",
        has_aux: bool = False,
    ):
        """Gradient of the loss ``step_fn`` returns, reduced over time (online learners:
        memory independent of T; ``BPTT``: exact, by unrolling).

        Callable inside ``brainstate.transform.jit`` (the learner's states, traces included
        once :meth:`init_etrace_state` ran, are brainstate ``State``s); the options follow
        braintrace 0.2.8's ``etrace_grad``.

        Args:
          *seqs: time-major sequences (T, ...); ``step_fn`` gets one slice of each
            (unbatched learners: no batch axis). Arrays sharded on a mesh (e.g. the
            batch axis over ``data``) stay where they lie; on a mesh of ``Explicit``
            axes they run under ``Auto`` axes of the same devices and specs.
          step_fn: ``step_fn(*seq_t) -> scalar`` (or ``(scalar, aux)`` with ``has_aux``)
            that calls ``learner(x_t)`` exactly once.
          return_value: also return the losses, as ``loss_output`` says.
          chunk_size: ``"auto"``, or contract the traces once per chunk of this many
            steps instead of every step (the same gradient, to rounding): D-RTRL traces of
            matmul-family weights are read and written once per chunk, and every
            ES-D-RTRL weight gradient, and a chunked D-RTRL weight's same-step term,
            becomes one matrix product per chunk (ops whose rule is ``es_foldable``;
            the built-in ones are), and so does the weight gradient of a dense op
            that reaches no hidden state (a readout; ``TraceOpRule.defers_direct``).
            Memory grows with the chunk, not with T: the
            chunk's per-step factors, O(chunk · B · (op inputs + neurons)) per op, where
            a convolution's input is its patch matrix (window × channels per output
            position), so ES-D-RTRL on large convolutions wants small chunks.
            Accepted and ignored by ``BPTT``. (Not braintrace's window mode: ``step_fn``
            still gets one step.) ``"auto"``: the fastest of a few sizes, measured once per
            ``step_fn`` and sequence shapes by :meth:`tune_chunk_size` (a one-off cost of a
            compile and three calls per candidate) and reused; the choice can differ
            between machines, so pass an int for bitwise-reproducible runs.
          mask: (T,) per-step loss weights (any values, not only 0/1); ``None``: all
            ones. It weights the loss only: the model and the traces advance at every step.
          weights: the ``ParamState``s to return gradients for, a dict like (a subset of)
            :attr:`param_states`; the result is keyed by its keys. ``None``: all.
          reduction: ``"mean"`` divides the weighted sum over time by
            ``max(sum(mask), 1)`` (T without a mask); ``"sum"`` does not divide.
          loss_output: what ``return_value`` returns: ``"per_step"`` the losses (T,)
            before the mask, ``"masked"`` after it, ``"scalar"`` the reduced objective.
          has_aux: ``step_fn`` returns ``(loss, aux)``; ``aux`` is returned stacked over
            time. It is computed from the step's model output by calling ``step_fn``
            again on it (with ``learner(x)`` giving that output, not running the model):
            keep ``step_fn`` free of other effects.

        Returns:
          ``grads`` (dict keyed like :attr:`param_states`, or like ``weights``), then the
          losses if ``return_value``, then ``aux`` if ``has_aux``: ``grads``,
          ``(grads, losses)``, ``(grads, aux)`` or ``(grads, losses, aux)``. Hidden
          states and traces advance; they carry over to the next call.

        Raises:
          ValueError: on bad sequences, ``chunk_size``, ``mask``, ``weights``,
            ``reduction``, ``loss_output`` or ``step_fn`` behaviour.
          NotSupportedError: ``has_aux``, or ``mask`` with per-step losses returned, on
            a learner without access to each step's model output (not ``OnlineLearner``).
        """
        self.sync()
        seqs = _auto_axes(seqs)
        reduction = one_of("etrace_grad", "reduction", reduction, _REDUCTIONS)
        loss_output = one_of("etrace_grad", "loss_output", loss_output, _LOSS_OUTPUTS)
        has_aux = boolean("etrace_grad", "has_aux", has_aux)
        return_value = boolean("etrace_grad", "return_value", return_value)
        selected = self._selected_paths(weights)
        if callable(step_fn):
            step_fn, loss_unit = self._unitless_step_fn(step_fn, has_aux)
        chunk_size = self._resolve_chunk(seqs, step_fn, chunk_size)
        if mask is None and not has_aux and reduction == "mean":  # today's path, unchanged
            fn = self._etrace_fn(seqs, step_fn, chunk_size)
            state, grads, losses = fn(self._param_leaves(), self._current_state(), seqs)
            self._store_state(state)
            grads = self._select(self._unit_grads(self._grads_tree(grads), loss_unit.unit), selected)
            if not return_value:
                return grads
            return grads, attach(jnp.mean(losses) if loss_output == "scalar" else losses, loss_unit.unit)
        return self._etrace_grad_weighted(
            seqs, step_fn, loss_unit, selected, chunk_size, mask, reduction, loss_output, has_aux, return_value
        )

    def _etrace_grad_weighted(
        self, seqs, step_fn, loss_unit, selected, chunk_size, mask, reduction, loss_output, has_aux, return_value
    ):
        """:meth:`etrace_grad` with a mask, ``reduction='sum'`` or ``has_aux`` (arguments
        checked; ``step_fn`` already returns plain losses): the per-step losses weighted by
        the mask, summed over time by the learner, then reduced and returned as asked."""
        t_len = self._check_etrace_args(seqs, step_fn, chunk_size)
        w = jnp.ones((t_len,), jnp.float32) if mask is None else jnp.asarray(mask)
        if w.shape != (t_len,):
            raise ValueError(f"etrace_grad: argument 'mask' must have shape (T,) = ({t_len},); got {w.shape}")
        raw_needed = mask is not None and return_value and loss_output == "per_step"
        fn = self._etrace_ext_fn(step_fn, chunk_size, t_len, has_aux, raw_needed)
        state, sums, masked, extras = fn(self._param_leaves(), self._current_state(), (*seqs, w))
        self._store_state(state)
        if reduction == "mean":
            denom = jnp.maximum(jnp.sum(w), 1)
            sums = [g / denom.astype(g.dtype) for g in sums]
        grads = self._select(self._unit_grads(self._grads_tree(sums), loss_unit.unit), selected)
        out = (grads,)
        if return_value:
            if loss_output == "per_step":
                losses = extras[0] if raw_needed else masked
            elif loss_output == "masked":
                losses = masked
            else:
                total = jnp.sum(masked)
                losses = total / jnp.maximum(jnp.sum(w), 1).astype(total.dtype) if reduction == "mean" else total
            out += (attach(losses, loss_unit.unit),)
        if has_aux:
            out += (extras[1],)
        return out[0] if len(out) == 1 else out

    def _unitless_step_fn(self, step_fn: Callable, has_aux: bool) -> tuple[Callable, _LossUnit]:
        """``step_fn`` returning its loss's mantissa, and the box where tracing it records
        the loss's unit (one box per ``function_key``, so the wrapper keys the jit cache
        as ``step_fn`` itself does)."""
        box = self._loss_units.get(function_key(step_fn), _LossUnit)
        return _record_loss_unit(step_fn, box, has_aux), box

    def _unit_grads(self, grads: dict, loss_unit) -> dict:
        """Each parameter's gradient in ``loss unit / parameter unit`` (``disttrace.units``);
        unchanged for a model and loss without units."""
        units = self.binding.units()
        if loss_unit.is_unitless and not any(v is not None for p in grads for v in units[p]):
            return grads
        return {p: grad_units(g, units[p], loss_unit) for p, g in grads.items()}

    def _selected_paths(self, weights) -> list | None:
        """``weights`` -> [(its key, parameter path)], or ``None`` for all parameters."""
        if weights is None:
            return None
        if not isinstance(weights, dict) or not weights:
            raise ValueError(
                "etrace_grad: argument 'weights' must be a non-empty dict of the model's ParamStates (like "
                f"learner.param_states or a subset of it); got {type(weights).__name__}"
            )
        by_id = {id(st): p for p, st in self.binding.params.items()}
        selected = []
        for key, st in weights.items():
            if id(st) not in by_id:
                raise ValueError(
                    f"etrace_grad: weights[{key!r}] is not a ParamState of this model "
                    f"(its parameters: {sorted(path_str(p) for p in self.binding.params)})"
                )
            selected.append((key, by_id[id(st)]))
        return selected

    @staticmethod
    def _select(grads: dict, selected: list | None) -> dict:
        return grads if selected is None else {key: grads[p] for key, p in selected}

    def _etrace_ext_fn(self, step_fn, chunk_size, t_len: int, has_aux: bool, raw_needed: bool) -> Callable:
        """The jitted ``run(theta, state, (*seqs, w)) -> (state, summed grads, w·losses, extras)``
        for ``step_fn`` weighted per step by ``w``; ``extras`` is ``(raw losses, aux)`` when
        ``has_aux`` or ``raw_needed``, else ``None``."""
        chunk_size = self._effective_chunk(chunk_size)
        need_out = has_aux or raw_needed

        def weighted(*seq_w):
            *seq_t, w_t = seq_w
            res = step_fn(*seq_t)
            loss = jnp.asarray(res[0] if has_aux else res)
            return w_t.astype(loss.dtype) * loss

        def from_out(out, seq_w):
            # step_fn once more on this step's output: learner(x) returns ``out``
            res = self._with_call(lambda *a: out, step_fn, *seq_w[:-1])
            return (jnp.asarray(res[0]), res[1]) if has_aux else (jnp.asarray(res), None)

        key = ("etrace_grad_ext", function_key(step_fn), chunk_size, t_len, has_aux, raw_needed)
        return self._jitted.get(
            key,
            lambda: jax.jit(self._sum_sequence_fn(weighted, chunk_size, t_len, from_out if need_out else None)),
            lambda: "etrace_grad's step_fn",
        )

    def _sum_sequence_fn(self, step_fn: Callable, chunk_size, t_len: int, out_fn: Callable | None) -> Callable:
        """``run(theta, state, seqs) -> (state, grads summed over time, losses (T,), extras)``.

        ``out_fn(out, seq_t)``, when given, maps each step's model output to the per-step
        values returned stacked as ``extras``; only learners that see the output of each
        step (``OnlineLearner``) support it. This default builds on :meth:`_sequence_fn`.
        """
        if out_fn is not None:
            raise NotSupportedError(
                f"etrace_grad: has_aux, and the per-step losses before a mask, need each step's model output, "
                f"which {type(self).__name__} does not keep; use loss_output='masked' or 'scalar' and no aux"
            )
        run_mean = self._sequence_fn(step_fn, chunk_size, t_len)

        def run(theta, state, seqs):
            state, grads, losses = run_mean(theta, state, seqs)
            return state, [g * t_len for g in grads], losses, None

        return run

    def etrace_evolve(self, *seqs, step_fn: Callable | None = None, chunk_size: int | None = None,
                      return_outputs: bool = False):
        """Runs the model and advances its traces over a sequence, computing no gradient.

        Hidden states and traces advance exactly as in :meth:`etrace_grad` (a warm-up
        before a graded stretch, say). Callable inside ``brainstate.transform.jit``.

        Args:
          *seqs: time-major sequences (T, ...), sliced in step (sharded ones as in
            :meth:`etrace_grad`).
          step_fn: ``step_fn(*seq_t)`` that calls ``learner(...)`` once and returns what
            to stack; ``None``: the slices are the model's inputs.
          chunk_size: ``None`` or 1: outputs stacked (T, ...); k >= 2 (T a multiple of
            k, no ``step_fn``): stacked (T // k, k, ...), as braintrace stacks windows.
            The steps themselves run one by one either way.
          return_outputs: return the stacked outputs (else ``None``, stacking nothing).

        Raises:
          ValueError: on bad sequences or ``chunk_size``, or a ``step_fn`` that does not
            call the learner exactly once.
          NotSupportedError: ``step_fn`` with ``chunk_size`` >= 2 (braintrace's window mode).
        """
        self.sync()
        seqs = _auto_axes(seqs)
        t_len = self._check_sequences(seqs)
        return_outputs = boolean("etrace_evolve", "return_outputs", return_outputs)
        k = 1 if chunk_size is None else positive_int("etrace_evolve", "chunk_size", chunk_size)
        if k > 1 and step_fn is not None:
            raise NotSupportedError(
                "etrace_evolve: a step_fn with chunk_size >= 2 is braintrace's window mode (step_fn gets (k, ...) "
                "slices); disttrace runs one step per call: give step_fn one step (chunk_size=None)"
            )
        if t_len % k:
            raise ValueError(f"etrace_evolve: the sequence length {t_len} is not a multiple of chunk_size {k}")
        if step_fn is not None and not callable(step_fn):
            raise ValueError(f"etrace_evolve: argument 'step_fn' must be callable; got {type(step_fn).__name__}")
        outs = self._evolve(seqs, step_fn, return_outputs)
        if not return_outputs or k == 1:
            return outs
        return jax.tree.map(lambda a: a.reshape((t_len // k, k) + a.shape[1:]), outs)

    def _evolve(self, seqs: tuple, step_fn: Callable | None, return_outputs: bool):
        """Steps one by one through ``learner(x)`` (learners without a pure step of their own)."""
        outs = []
        for t in range(jax.tree.leaves(seqs)[0].shape[0]):
            seq_t = jax.tree.map(lambda a, t=t: a[t], seqs)
            outs.append(self(*seq_t) if step_fn is None else step_fn(*seq_t))
        return jax.tree.map(lambda *o: jnp.stack(o), *outs) if return_outputs else None

    def init_etrace_state(self) -> None:
        """Keeps the traces in a brainstate ``State`` from now on, so that
        :meth:`etrace_grad`, :meth:`etrace_evolve` and ``learner(x)`` can run inside
        ``brainstate.transform.jit`` (allocates them now). No-op for learners whose whole
        state lives in the model's states."""

    def _check_etrace_args(self, seqs: tuple, step_fn, chunk_size) -> int:
        t_len = self._check_sequences(seqs)
        if chunk_size is not None:
            positive_int("etrace_grad", "chunk_size", chunk_size)
        if not callable(step_fn):
            raise ValueError(f"etrace_grad: argument 'step_fn' must be callable; got {type(step_fn).__name__}")
        return t_len

    def _etrace_fn(self, seqs: tuple, step_fn: Callable, chunk_size: int | None) -> Callable:
        """The jitted sequence function for ``step_fn``, shared by every function that is
        the same computation (``_fn_cache.function_key``): a fresh ``lambda`` per call
        compiles once.

        ``fn(theta, state, seqs)`` donates the state's eligibility traces to the call
        when the learner holds them privately (its stateful API replaces them with the
        returned ones right after) and they are concrete arrays: the new traces are
        then written in place of the old ones instead of into fresh memory, and the
        jitted function does not first copy the traces it carries. Measured on CPU,
        chunked D-RTRL, (64, 1, 612, 512) float32 traces: 0.319 -> 0.299 s a call.
        Traces kept in a brainstate ``State`` (``init_etrace_state``), which others may
        hold, are not donated. ``fn.lower`` lowers the function without donation.
        """
        t_len = self._check_etrace_args(seqs, step_fn, chunk_size)
        chunk_size = self._effective_chunk(chunk_size)
        key = ("etrace_grad", function_key(step_fn), chunk_size, t_len)

        def make():
            run = self._sequence_fn(step_fn, chunk_size, t_len)
            plain = jax.jit(run)
            donating = jax.jit(
                lambda theta, rest, traces, seqs_: run(theta, rest._replace(traces=traces), seqs_),
                donate_argnums=(2,),
            )

            def fn(theta, state, seqs_):
                traces = getattr(state, "traces", None)
                leaves = jax.tree.leaves(traces)
                if (
                    leaves
                    and getattr(self, "_trace_state", None) is None
                    and all(isinstance(a, jax.Array) and not is_tracer(a) for a in leaves)
                    and len({id(a) for a in leaves}) == len(leaves)
                ):
                    return donating(theta, state._replace(traces=None), traces, seqs_)
                return plain(theta, state, seqs_)

            fn.lower = plain.lower
            return fn

        return self._jitted.get(key, make, lambda: "etrace_grad's step_fn")

    def _effective_chunk(self, chunk_size: int | None) -> int | None:
        return chunk_size

    def _has_chunked_form(self) -> bool:
        """Whether ``chunk_size`` changes what :meth:`etrace_grad` computes (else "auto" times nothing)."""
        return False

    def tune_chunk_size(self, *seqs, step_fn: Callable, candidates=None) -> ChunkChoice:
        """Measures which ``chunk_size`` makes :meth:`etrace_grad` fastest on these inputs.

        For each candidate the program ``etrace_grad`` would run is compiled and called
        three times (the first untimed) on the first ``min(T, 512)`` steps of ``seqs``,
        from the learner's current state, which is left unchanged: nothing is stored, no
        trace is donated. The choice is
        kept per ``step_fn`` (as the jit cache keys it) and sequence shapes; a later
        ``etrace_grad(..., chunk_size="auto")`` with the same ones uses it without timing.

        Args:
          *seqs, step_fn: as for :meth:`etrace_grad`.
          candidates: chunk sizes to try (positive ints); default
            ``disttrace.algorithms.chunk_candidates(T)``: 32, 64, 128, 256 below T, and T
            when T ≤ 256.

        Returns:
          ``ChunkChoice(chunk_size, seconds)``: the fastest candidate and each one's best
          wall time; ``ChunkChoice(None, {})`` for a learner without a chunked form
          (``BPTT``, RTRL, a rule without one), whose calls are the same for every size.

        Raises:
          ValueError: on bad sequences or ``candidates``, when the inputs or the
            parameters are traced (inside ``jax.jit`` nothing can be timed: tune outside
            once, or pass an int), or in a multi-process job (``jax.process_count() > 1``:
            the processes could choose differently; tune in a single process).
        """
        self.sync()
        if callable(step_fn):
            step_fn = self._unitless_step_fn(step_fn, False)[0]  # the function etrace_grad compiles
        return self._tuned_chunk(_auto_axes(seqs), step_fn, candidates, refresh=True)

    def _resolve_chunk(self, seqs: tuple, step_fn, chunk_size):
        """``chunk_size`` as an int or None: ``"auto"`` becomes the measured choice."""
        if not isinstance(chunk_size, str):
            return chunk_size
        if chunk_size != AUTO:
            raise ValueError(f"etrace_grad: argument 'chunk_size' must be a positive int, None or 'auto'; got {chunk_size!r}")
        return self._tuned_chunk(seqs, step_fn, None, refresh=False).chunk_size

    def _tuned_chunk(self, seqs: tuple, step_fn, candidates, refresh: bool) -> ChunkChoice:
        t_len = self._check_etrace_args(seqs, step_fn, None)
        if candidates is None:
            candidates = chunk_candidates(t_len)
        else:
            candidates = tuple(sorted({positive_int("tune_chunk_size", "candidates", u) for u in candidates}))
            if not candidates:
                raise ValueError("tune_chunk_size: argument 'candidates' must hold at least one chunk size; got none")
        if not self._has_chunked_form():
            return ChunkChoice(None, {})
        shapes = tuple((jnp.shape(a), jnp.result_type(a).name) for a in jax.tree.leaves(seqs))
        key = (function_key(step_fn), shapes, candidates)
        if not refresh and key in self._chunk_choices:
            return self._chunk_choices[key]
        if jax.process_count() > 1:
            raise ValueError(
                f"etrace_grad: chunk_size='auto' in a job of {jax.process_count()} processes: each would time its own "
                "calls and might choose another size, and the processes must run one program; measure with "
                "learner.tune_chunk_size(...) in a single-process run of the same sizes and pass its chunk_size"
            )
        theta, state = self._param_leaves(), self._current_state()
        if any(is_tracer(a) for a in jax.tree.leaves((seqs, theta, state))):
            raise ValueError(
                "etrace_grad: chunk_size='auto' times the candidate chunk sizes on the call's inputs, which are traced "
                "here (inside jax.jit or brainstate.transform.jit): pass an int, or call learner.tune_chunk_size(...) "
                "once outside the jit and pass its chunk_size"
            )

        # timed on a prefix: what a chunk costs does not depend on how many follow it
        probe_len = min(t_len, PROBE_STEPS)
        probe = seqs if probe_len == t_len else jax.tree.map(lambda a: a[:probe_len], seqs)

        def compile_call(u):
            # etrace_grad's program for chunk u, outside the jit cache: trial compiles must not
            # count towards (or evict from) the cache of the functions the learner runs
            run = jax.jit(self._sequence_fn(step_fn, self._effective_chunk(u), probe_len))
            compiled = run.lower(theta, state, probe).compile()
            return lambda: compiled(theta, state, probe)

        self._chunk_choices[key] = choice = fastest_chunk(candidates, compile_call)
        return choice

    def _sequence_fn(self, step_fn: Callable, chunk_size: int | None, t_len: int) -> Callable:
        """``run(theta, state, seqs) -> (state, grads (mean over time), losses (T,))``."""
        raise NotImplementedError

    def etrace_grad_compiled(self, *seqs, step_fn: Callable, chunk_size: int | str | None = None) -> jax.stages.Compiled:
        """The compiled program :meth:`etrace_grad` runs for these arguments, without running it.

        Compiles (or reuses) the same jitted sequence function, so its
        ``memory_analysis()``, ``cost_analysis()`` and optimised HLO (``as_text()``)
        describe what a call executes. Arguments are as for :meth:`etrace_grad`
        (``chunk_size="auto"`` is resolved as there: a first use measures, which runs calls).

        Raises:
          ValueError: as :meth:`etrace_grad` for bad arguments.
        """
        self.sync()
        if callable(step_fn):
            step_fn = self._unitless_step_fn(step_fn, False)[0]  # the function etrace_grad compiles
        seqs = _auto_axes(seqs)
        fn = self._etrace_fn(seqs, step_fn, self._resolve_chunk(seqs, step_fn, chunk_size))
        return fn.lower(self._param_leaves(), self._current_state(), seqs).compile()

    def etrace_grad_memory(self, *seqs, step_fn: Callable, chunk_size: int | str | None = None) -> dict:
        """XLA's memory analysis of the compiled :meth:`etrace_grad` for these arguments.

        Compiles (or reuses) the same jitted sequence function ``etrace_grad`` runs, without
        running it (:meth:`etrace_grad_compiled`), and returns its buffer sizes in bytes:
        ``temp`` (working memory), ``output`` (gradients and the carried state, i.e. the
        traces) and ``argument``. ``temp + output`` is the device-independent view of how
        memory scales with T.

        Raises:
          ValueError: as :meth:`etrace_grad` for bad arguments.
        """
        ma = self.etrace_grad_compiled(*seqs, step_fn=step_fn, chunk_size=chunk_size).memory_analysis()
        return {
            "temp": int(ma.temp_size_in_bytes),
            "output": int(ma.output_size_in_bytes),
            "argument": int(ma.argument_size_in_bytes),
        }

    def _current_state(self):
        raise NotImplementedError

    # ---- calling the model ----------------------------------------------------------
    def __call__(self, *args):
        """One model step. Inside ``etrace_grad``'s ``step_fn`` this is the traced step.

        An unbatched learner takes and returns values without the batch axis."""
        if self.unbatched:
            args = _add_batch(args)
        if self._active_call is not None:
            out = self._active_call(*args)
        else:
            self.sync()
            out = _refuse_autodiff(self._eager_step(*args))
        return _drop_batch(out) if self.unbatched else out

    def _eager_step(self, *args):
        raise NotImplementedError

    def predict(self, xs):
        """Model outputs over a time-major sequence ``xs`` (T, B, ...), without learning.

        Starts from the current hidden states and leaves them unchanged. A model that
        draws random numbers draws anew at every step, from the current global key,
        which is left unchanged too (so two calls draw the same values).
        """
        self._check_sequences((xs,))
        if self.unbatched:
            return _drop_batch(self._predict(_add_batch(xs, 1)), 1)
        return self._predict(xs)

    def _predict(self, xs):
        def run(theta, hidden, aux, xs):
            def body(carry, x):
                h, a = carry
                leaves, tree = jax.tree.flatten((x,))
                self._validate_args(leaves, tree)
                out, h, a, _ = run_step(self.graph, theta, h, a, leaves)
                return (h, a), jax.tree.unflatten(self.graph.out_tree, out)

            return jax.lax.scan(body, (hidden, aux), xs)[1]

        fn = self._jit(("predict",), lambda: jax.jit(run))
        _, hidden, aux = self.sync().values()
        return fn(self._param_leaves(), [hidden[p] for p in self.graph.hidden_paths], jax.tree.leaves(aux), xs)

    def _with_call(self, call: Callable, fn: Callable, *fn_args):
        prev = self._active_call
        self._active_call = call
        try:
            return fn(*fn_args)
        finally:
            self._active_call = prev

    def reset_state(self, batch_size: int | None = None, **kwargs) -> None:
        """Re-initialises the model's states (``init_all_states``) and clears traces.

        Raises:
          ValueError: if ``batch_size`` is not the compiled batch (an unbatched learner
            takes none).
        """
        if self.unbatched:
            if batch_size is not None:
                raise ValueError(f"reset_state: this learner was compiled unbatched; got batch_size={batch_size!r}")
            brainstate.nn.init_all_states(self.model, **kwargs)
            self.sync()
            self._reset_traces()
            return
        batch = self.graph.batch_size if batch_size is None else batch_size
        if batch != self.graph.batch_size:
            raise ValueError(
                f"reset_state: argument 'batch_size' must equal the compiled batch {self.graph.batch_size}; got {batch}"
            )
        brainstate.nn.init_all_states(self.model, batch_size=batch, **kwargs)
        self.sync()
        self._reset_traces()

    def _reset_traces(self) -> None:
        pass

    def _jit(self, key: Any, make: Callable) -> Callable:
        return self._jitted.get(key, make)
