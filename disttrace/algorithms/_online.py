"""The online learner: one façade over any assignment of learning rules to trace ops.

Per step it computes the step's factors once (``_factors.step_factors``: learning
signals, Jacobian blocks, ``∂h/∂y``, operands, the exact same-step *direct* term),
hands each (op, rule) pair its :class:`~disttrace.algorithms._rule.OpFactors`, and
sums the rules' trace-space gradients over time. They are mapped to the parameters
once per call, through the VJP of the parameter-only computation of each op's weights
(``TraceOpRule.to_weights``); for ``"param"`` rules the direct term is added.

With ``chunk_size`` the rules that have a chunked form (``LearningRule.chunked``) keep
per-step factors inside a chunk and contract them once per chunk (``chunk_end``).

The rules themselves live in one module each (``_d_rtrl``, ``_es_d_rtrl``; BPTT, the
oracle, is its own learner in ``_bptt``); ``Hybrid`` is only an assignment of them.
"""

from __future__ import annotations

from typing import NamedTuple

import brainstate
import jax
import jax.numpy as jnp

from disttrace.algorithms._factors import StepFactors, loss_fn_loss_of, step_factors
from disttrace.algorithms._fn_cache import function_key
from disttrace.algorithms._learner import Learner
from disttrace.algorithms._rule import LearningRule, OpFactors, tree_add
from disttrace.compiler import bypass_groups, bypass_ops, op_function, op_operands, op_weights

__all__ = ["OnlineLearner", "OnlineState"]

_T_MAX = 2**31 - 1  # the step counter saturates here instead of wrapping negative


class OnlineState(NamedTuple):
    """Everything an online learner carries from one step to the next.

    Attributes:
      hidden: path -> hidden value (B, ...).
      aux: path -> value of the model's other (non-learned, untraced) states; when the
        model draws random numbers also brainstate's key under
        :data:`~disttrace.compiler.RNG_PATH` (raw key data, e.g. (2,) uint32), split
        at every step, so a checkpoint of this state continues the same draws.
      traces: op name (:attr:`TraceOpNode.key`, e.g. ``"layers.0.weight"``) -> that
        op's learning-rule state, a NamedTuple whose fields document their shapes
        (``DRTRLTrace(e={"layers.0.weight->layers.0.V": ((B, K, I, O),)})``,
        ``ESTrace(x=(B, I), f={TraceKey: (B, K, N...)})``). Keys are stable names, not
        positions: adding an unrelated layer leaves them unchanged.
      t: () int32, time steps seen (for ES-D-RTRL's bias correction); saturates at
        ``2**31 - 1`` (the correction is exactly 1 long before), so it never wraps.
    """

    hidden: dict
    aux: dict
    traces: dict
    t: jax.Array

    # How each field lays out on a device mesh (read by ``disttrace.distributed``'s
    # partition rules, which never match field names themselves): ``hidden``/``trace``
    # are batch-leading with neurons last, ``aux``/``count`` replicated. The rule states
    # under ``traces`` declare their own fields' roles the same way.
    sharding_roles = {"hidden": "hidden", "aux": "aux", "traces": "trace", "t": "count"}


def _path_name(path) -> str:
    """A key path as ``"f/layers.0.w->layers.0.V/0"`` whether the nodes are NamedTuple
    fields, dict keys or sequence indices (a checkpoint restored without a target
    gives dicts where the state had NamedTuples)."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))))
    return "/".join(parts)


def _named_leaves(tree):
    return [(_path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _checked_rules(spec, graph) -> tuple:
    rules = tuple(spec.rules(graph))
    if len(rules) != len(graph.ops):
        raise ValueError(f"{type(spec).__name__}.rules(graph) must give one entry per trace op ({len(graph.ops)}); got {len(rules)}")
    for op, rule in zip(graph.ops, rules):
        if rule is None:
            continue
        if not op.groups:
            raise ValueError(f"{type(spec).__name__}: op {op.key or op.index!r} reaches no hidden state; give it None")
        if not isinstance(rule, LearningRule) or rule.dimension not in ("param", "io"):
            raise ValueError(
                f"{type(spec).__name__}: the rule for op {op.key!r} must implement LearningRule (name, dimension in "
                f"'param'/'io', chunked, chunk_direct, chunk_reads_weights, init, zero_grad, update); got {rule!r}"
            )
    return rules


class OnlineLearner(Learner):
    """Eligibility-trace learner for a compiled model and an algorithm spec.

    Use :func:`disttrace.compile` to make one.

    Attributes:
      spec: the algorithm (anything with ``rules(graph)``).
      rules: one :class:`LearningRule` or ``None`` per ``graph.ops``.
      modes: per op its rule's ``dimension`` (``"param"``, ``"io"``) or ``"none"``.
    """

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        super().__init__(model, graph, binding, loss_fn)
        self.spec = spec
        self.rules = _checked_rules(spec, graph)
        self._pairs = tuple((op, r) for op, r in zip(graph.ops, self.rules) if r is not None)
        self.modes = tuple("none" if r is None else r.dimension for r in self.rules)
        self.io_ops = frozenset(op.index for op, r in self._pairs if r.dimension == "io")
        self._bypass_groups = bypass_groups(self.graph)
        self._bypass_ops = bypass_ops(self.graph)
        self._traces: tuple[dict, jax.Array] | None = None
        # set by ``init_etrace_state``: the traces then live in a brainstate State (jit-safe)
        self._trace_state: brainstate.ShortTermState | None = None

    # ---- state ----------------------------------------------------------------------
    def _zero_traces(self) -> dict:
        return {op.key: rule.init() for op, rule in self._pairs}

    def init(self) -> OnlineState:
        """A fresh state: the model's current hidden/aux values and zero traces."""
        _, hidden, aux = self.sync().values()
        return OnlineState(hidden, aux, self._zero_traces(), jnp.zeros((), jnp.int32))

    def restore_traces(self, state: OnlineState, saved: dict) -> tuple[OnlineState, tuple[str, ...]]:
        """Takes every trace of ``saved`` whose name and shapes match one of ``state``'s.

        Trace names are stable (:class:`~disttrace.compiler.TraceKey`), so the traces
        of a checkpoint written by a smaller model (a layer added since, another op
        order) restore by name into this model's state; the others stay as they are.

        Args:
          state: this learner's state (e.g. :meth:`init`).
          saved: a ``traces`` dict: op name -> rule state, as NamedTuples or as the
            plain nested dicts a checkpoint restored without a target gives.

        Returns:
          ``(state with the matching traces replaced, names of the ops taken)``.

        Raises:
          ValueError: if an op of both has the same name but another trace layout
            (fields, keys or shapes): the message names the op and the leaf.
        """
        traces, taken = dict(state.traces), []
        for name, current in state.traces.items():
            if name not in saved:
                continue
            leaves = dict(_named_leaves(saved[name]))
            flat, tree = jax.tree_util.tree_flatten_with_path(current)
            new = []
            for path, leaf in flat:
                key = _path_name(path)
                got = leaves.get(key)
                if got is None or jnp.shape(got) != leaf.shape:
                    raise ValueError(
                        f"restore_traces: op {name!r} has trace leaf {key!r} of shape {leaf.shape} here but "
                        f"{'none' if got is None else jnp.shape(got)} in the saved traces (saved leaves: {sorted(leaves)})"
                    )
                new.append(jnp.asarray(got, leaf.dtype))
            traces[name] = jax.tree.unflatten(tree, new)
            taken.append(name)
        return state._replace(traces=traces), tuple(taken)

    def _current_state(self) -> OnlineState:
        _, hidden, aux = self.binding.values()
        if self._trace_state is not None:
            traces, t = self._trace_state.value
        elif self._traces is None:
            traces, t = self._zero_traces(), jnp.zeros((), jnp.int32)
        else:
            traces, t = self._traces
        return OnlineState(hidden, aux, traces, t)

    def _store_state(self, state: OnlineState) -> None:
        self.binding.write(hidden=state.hidden, aux=state.aux)
        if self._trace_state is not None:
            self._trace_state.value = (state.traces, state.t)
        else:
            self._traces = (state.traces, state.t)

    def _reset_traces(self) -> None:
        if self._trace_state is not None:
            self._trace_state.value = (self._zero_traces(), jnp.zeros((), jnp.int32))
        else:
            self._traces = None

    def init_etrace_state(self) -> None:
        """Keeps the traces (and the step count) in a ``brainstate.ShortTermState`` from now
        on, allocated now with their current values (zeros on a fresh learner), so the
        stateful API runs inside ``brainstate.transform.jit``. Call it outside any
        transformation. Without it the traces are allocated at the first call (and the
        functional API, ``init``/``step``, never allocates them here)."""
        if self._trace_state is None:
            traces, t = (self._zero_traces(), jnp.zeros((), jnp.int32)) if self._traces is None else self._traces
            self._trace_state = brainstate.ShortTermState((traces, t))
            self._traces = None

    # ---- one step ----------------------------------------------------------------------
    def _factors(self, loss_of, theta, state: OnlineState, seq_t, y_grad_ops=frozenset()) -> StepFactors:
        hidden = [state.hidden[p] for p in self.graph.hidden_paths]
        aux_leaves = jax.tree.leaves(state.aux)
        return step_factors(
            self.graph, self.io_ops, theta, hidden, aux_leaves, loss_of, seq_t, self._validate_args,
            self._bypass_groups, self._bypass_ops, y_grad_ops,
        )

    @staticmethod
    def _op_factors(op, f: StepFactors, t) -> OpFactors:
        return OpFactors(
            operands=f.operands[op.index],
            g=tuple(f.g[(op.index, g)] for g in op.groups),
            jac=tuple(f.jac[g] for g in op.groups),
            delta_prev=tuple(f.delta_prev[g] for g in op.groups),
            delta_new=tuple(f.delta_new[g] for g in op.groups),
            delta_bypass=tuple(f.delta_bypass.get(g) for g in op.groups),
            y_bypass=f.y_bypass.get(op.index),
            y_grad=f.y_grad.get(op.index),
            t=t,
        )

    def _apply(self, f: StepFactors, state: OnlineState, chunk: bool = False):
        """Every rule's step: ``(traces, trace-space gradients by op index, kept)``.

        With ``chunk`` the rules with a chunked form run ``chunk_step`` instead and
        their per-step factors are returned in ``kept`` (by op name).
        """
        traces, tgrads, kept = dict(state.traces), {}, {}
        for op, rule in self._pairs:
            of = self._op_factors(op, f, state.t)
            if chunk and rule.chunked:
                traces[op.key], kept[op.key] = rule.chunk_step(traces[op.key], of)
            else:
                tgrads[op.index], traces[op.key] = rule.update(traces[op.key], of)
        return traces, tgrads, kept

    def _advance(self, f: StepFactors, state: OnlineState, traces) -> OnlineState:
        hidden = dict(zip(self.graph.hidden_paths, f.hidden))
        aux = jax.tree.unflatten(self.graph.aux_tree, f.aux)
        t = state.t + (state.t < _T_MAX).astype(state.t.dtype)
        return OnlineState(hidden, aux, traces, t)

    def _zero_inputs(self, state: OnlineState) -> tuple[list, list, list]:
        """(hidden, aux leaves, zero args): inputs of a step run only for its parameter-only values."""
        hidden = [state.hidden[p] for p in self.graph.hidden_paths]
        args = [jnp.zeros(s, d) for s, d in self.graph.arg_shapes]
        return hidden, jax.tree.leaves(state.aux), args

    def _param_operands(self, theta, state: OnlineState) -> dict:
        """Every op's operands where only the parameter-only ones are meaningful."""
        return op_operands(self.graph, theta, *self._zero_inputs(state))

    def _to_params(self, theta, state: OnlineState, tgrads: dict) -> list:
        """Maps trace-space gradients (op index -> tuple) to parameter-leaf gradients."""
        if not tgrads:
            return [jnp.zeros_like(p) for p in theta]
        inputs = self._zero_inputs(state)
        weights, vjp = jax.vjp(lambda th: op_weights(self.graph, th, *inputs), theta)
        cot = {j: tuple(jnp.zeros_like(w) for w in ws) for j, ws in weights.items()}
        for j, tg in tgrads.items():
            op = self.graph.ops[j]
            operands = [None] * len(op.operands)
            for i, w in zip(op.rule.weight_argnums, weights[j]):
                operands[i] = w
            wg = op.rule.to_weights(tg, tuple(operands), op_function(op))
            cot[j] = tuple(a + b.astype(a.dtype) for a, b in zip(cot[j], wg))
        (grads,) = vjp(cot)
        return grads

    def _zero_tgrads(self, exclude=frozenset()) -> dict:
        return {op.index: rule.zero_grad() for op, rule in self._pairs if op.index not in exclude}

    # ---- sequences -------------------------------------------------------------------------
    def _run_steps(self, loss_of, theta, state, seqs, chunk: bool = False, out_fn=None):
        """Scans steps; returns (state, direct sum, tgrad sum, losses, kept factors by op name, extras).

        With ``chunk`` the chunked rules keep their per-step factors (stacked over
        time in ``kept``) and are absent from the tgrad sum; their weights' same-step
        term is theirs to fold where ``chunk_direct``. ``extras`` stacks
        ``out_fn(model output, seq_t)`` over time (``None`` without ``out_fn``).
        """
        chunked = self._chunked_ops() if chunk else frozenset()
        deferred = self._deferred_ops() if chunk else ()
        y_grad_ops = frozenset(op.index for op, r in self._pairs if op.index in chunked and r.chunk_direct)
        y_grad_ops |= frozenset(op.index for op in deferred)

        def body(carry, seq_t):
            st, dsum, tsum = carry
            f = self._factors(loss_of, theta, st, seq_t, y_grad_ops)
            traces, tg, kept = self._apply(f, st, chunk)
            for op in deferred:
                kept[op.key] = (op.rule.chunk_input(f.operands[op.index]), f.y_grad[op.index])
            dsum = [a + b for a, b in zip(dsum, f.direct)]
            tsum = {j: tree_add(tsum[j], tg[j]) for j in tsum}
            extra = None if out_fn is None else out_fn(f.out, seq_t)
            return (self._advance(f, st, traces), dsum, tsum), (f.loss, kept, extra)

        dsum0 = [jnp.zeros_like(p) for p in theta]
        carry0 = (state, dsum0, self._zero_tgrads(chunked))
        (state, dsum, tsum), (losses, kept, extras) = jax.lax.scan(body, carry0, seqs)
        return state, dsum, tsum, losses, kept, extras

    def _chunked_ops(self) -> frozenset:
        return frozenset(op.index for op, r in self._pairs if r.chunked)

    def _has_chunked_form(self) -> bool:
        return bool(self._chunked_ops())

    def _deferred_ops(self) -> tuple:
        """Ops whose same-step weight gradient a chunked sequence contracts once per chunk:
        those that reach no hidden group (a readout), have weights from parameters and a
        rule with ``defers_direct``. Per step their weights are held in the direct VJP and
        their input and ``∂L/∂y`` are kept; at the chunk's end one ``input_vjp_sum`` over
        (U, B) replaces U small products (a (B, I)ᵀ(B, O) product per step is slow on CPU)."""
        return tuple(
            op for op in self.graph.ops
            if not op.groups and op.key and op.weight_params and op.rule.chunkable and op.rule.defers_direct
        )

    @staticmethod
    def _deferred_grad(op, kept) -> tuple:
        """A deferred op's trace-space gradient of one chunk from its kept (inputs, ∂L/∂y)."""
        xs, ys = kept
        return op.rule.input_vjp_sum(xs, op.rule.to_trace_neurons(ys, op.operands), op.operands)

    def _deferred_zeros(self) -> dict:
        def probe(op, operands):
            y = jnp.zeros((1,) + op.out.shape, op.out.dtype)
            return self._deferred_grad(op, (op.rule.chunk_input(operands)[None], y))

        return {
            op.index: tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(lambda o, op=op: probe(op, o), op.operands))
            for op in self._deferred_ops()
        }

    def _sequence(self, loss_of, chunk, theta, state: OnlineState, seqs, out_fn=None):
        """Runs a whole sequence; returns (state, summed param grads, per-step losses), and
        with ``out_fn`` also the extras stacked over time (see :meth:`_run_steps`)."""
        t_len = jax.tree.leaves(seqs)[0].shape[0]
        chunked = self._chunked_ops()
        if chunk is None or chunk <= 1 or not chunked:
            state, dsum, tsum, losses, _, extras = self._run_steps(loss_of, theta, state, seqs, out_fn=out_fn)
            grads = [a + b for a, b in zip(dsum, self._to_params(theta, state, tsum))]
            return (state, grads, losses) if out_fn is None else (state, grads, losses, extras)
        reads_weights = any(r.chunk_reads_weights for op, r in self._pairs if op.index in chunked)

        def run_chunk(carry, seq_c):
            st, dsum, tsum = carry
            start = st.traces
            st, d_c, t_c, losses, kept, extras = self._run_steps(loss_of, theta, st, seq_c, chunk=True, out_fn=out_fn)
            operands = self._param_operands(theta, st) if reads_weights else {}
            traces = dict(st.traces)
            for op, rule in self._pairs:
                if op.index in chunked:
                    t_c[op.index], traces[op.key] = rule.chunk_end(
                        start[op.key], traces[op.key], kept[op.key], operands.get(op.index)
                    )
            for op in self._deferred_ops():
                t_c[op.index] = self._deferred_grad(op, kept[op.key])
            st = st._replace(traces=traces)
            dsum = [a + b for a, b in zip(dsum, d_c)]
            tsum = {j: tree_add(tsum[j], t_c[j]) for j in tsum}
            return (st, dsum, tsum), (losses, extras)

        n_full, rem = divmod(t_len, chunk)
        carry = (state, [jnp.zeros_like(p) for p in theta], {**self._zero_tgrads(), **self._deferred_zeros()})
        parts = []
        if n_full:
            body = jax.tree.map(lambda a: a[: n_full * chunk].reshape((n_full, chunk) + a.shape[1:]), seqs)
            carry, stacked = jax.lax.scan(run_chunk, carry, body)
            parts.append(jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), stacked))
        if rem:
            tail = jax.tree.map(lambda a: a[n_full * chunk :], seqs)
            carry, stacked = run_chunk(carry, tail)
            parts.append(stacked)
        state, dsum, tsum = carry
        grads = [a + b for a, b in zip(dsum, self._to_params(theta, state, tsum))]
        losses, extras = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
        return (state, grads, losses) if out_fn is None else (state, grads, losses, extras)

    # ---- public API ----------------------------------------------------------------------------
    def step(self, state: OnlineState, params: dict, x, y):
        """One pure online step: ``(state, out, grads)`` for the loss ``loss_fn(out, y)``.

        Args:
          state: from :meth:`init` or a previous step.
          params: parameter values by path (as :meth:`params` returns).
          x: one step's model input (B, ...).
          y: one step's target, passed to ``loss_fn``.

        Returns:
          New state, the model output, and this step's gradient (dict by path).

        Raises:
          ValueError: if the learner has no ``loss_fn`` or the inputs do not match.
        """
        loss_of = loss_fn_loss_of(self.loss_fn)
        theta = self._param_leaves(params)
        f = self._factors(loss_of, theta, state, (x, y))
        traces, tgrads, _ = self._apply(f, state)
        new_state = self._advance(f, state, traces)
        grads = [a + b for a, b in zip(f.direct, self._to_params(theta, new_state, tgrads))]
        return new_state, f.out, self._grads_tree(grads)

    def _pure_step(self, theta, state: OnlineState, args):
        """One step without a loss: ``(state, model output)``; traces advance."""

        def zero_loss(call, *a):
            out = call(*a)
            return 0.0 * sum(jnp.sum(o).astype(jnp.float32) for o in jax.tree.leaves(out))

        f = self._factors(zero_loss, theta, state, args)
        traces, _, _ = self._apply(f, state)
        return self._advance(f, state, traces), f.out

    def _eager_step(self, *args):
        fn = self._jit(("eager",), lambda: jax.jit(self._pure_step))
        state, out = fn(self._param_leaves(), self._current_state(), args)
        self._store_state(state)
        return out

    def _evolve(self, seqs: tuple, step_fn, return_outputs: bool):
        """``etrace_evolve`` as one jitted scan of :meth:`_pure_step`."""

        def run(theta, state, seqs):
            def body(st, seq_t):
                box = {}

                def call(*args):
                    if "state" in box:
                        raise ValueError("etrace_evolve: step_fn must call the learner exactly once per step; it called it twice")
                    box["state"], out = self._pure_step(theta, st, args)
                    return out

                res = self._with_call(call, self if step_fn is None else step_fn, *seq_t)
                if "state" not in box:
                    raise ValueError("etrace_evolve: step_fn must call the learner exactly once per step; it did not call it")
                return box["state"], (res if return_outputs else None)

            return jax.lax.scan(body, state, seqs)

        key = ("evolve", None if step_fn is None else function_key(step_fn), return_outputs)
        fn = self._jitted.get(key, lambda: jax.jit(run), lambda: "etrace_evolve's step_fn")
        state, outs = fn(self._param_leaves(), self._current_state(), seqs)
        self._store_state(state)
        return outs

    def _sum_sequence_fn(self, step_fn, chunk_size, t_len, out_fn):
        def loss_of(call, *seq_t):
            return self._with_call(call, step_fn, *seq_t)

        def run(theta, state, seqs):
            if out_fn is None:
                state, grads, losses = self._sequence(loss_of, chunk_size, theta, state, seqs)
                return state, grads, losses, None
            return self._sequence(loss_of, chunk_size, theta, state, seqs, out_fn)

        return run

    def _sequence_fn(self, step_fn, chunk_size, t_len):
        def loss_of(call, *seq_t):
            return self._with_call(call, step_fn, *seq_t)

        def run(theta, state, seqs):
            state, grads, losses = self._sequence(loss_of, chunk_size, theta, state, seqs)
            return state, [g / t_len for g in grads], losses

        return run
