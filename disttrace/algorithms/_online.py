"""Online learners: D-RTRL, ES-D-RTRL (pp-prop) and their per-weight hybrid.

Each trace op has a mode (see ``_specs``). Per step, with the factors of
``_factors.step_factors``:

*Parameter dimension* (D-RTRL, previous-hidden form, exact where ``J_t`` is diagonal):

.. math::
    g_t(W) = δ^{prev}_t · E_{t-1} + ∂L_t/∂W|_{direct}, \\qquad
    E_t = D_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t

*IO dimension* (ES-D-RTRL / pp-prop; normalisation and bias correction as in
braintrace 0.2.8's ``pp_prop``, Nat. Commun. 2026):

.. math::
    ε^x_t = α_x ε^x_{t-1} + x_t, \\qquad ε^f_t = α_f (D_t ε^f_{t-1}) + (1-α_f)\\, ∂h_t/∂y_t,

    g_t(W) = \\sum_b ε^x_t[b] ⊗ \\Big(\\sum_k δ^{new}_t[b,k] ε^f_t[b,k]\\Big) / c_t,
    \\qquad c_t = 1 - α_f^{n_t+1}

where ``n_t`` counts *time steps* seen (braintrace counts calls, so its chunked runs
are biased: F-30); like braintrace, ``c_t = 1`` once ``n_t >= 1000``, and like braintrace
the input trace has no ``(1-α_x)`` factor (DESIGN.md §2 writes one; the bias correction
of ``ε^f`` absorbs the scale). ``δ^{new}`` holds a group's other new values fixed
(``_factors``). Where the compiler finds bypass paths (``compiler.bypass_groups`` /
``bypass_ops``), two exact terms are added:

.. math::
    \\sum_b ε^x_{t-1}[b] ⊗ \\Big(\\sum_k δ^{bypass}_t[b,k] ε^f_{t-1}[b,k]\\Big) / c_{t-1}
    \\;+\\; \\sum_b x_t[b] ⊗ ∂L_t/∂y_t[b]\\big|_{\\text{skipping the op's groups}}

Trace-space gradients are summed over time and mapped to the parameters once per
call, through the VJP of the parameter-only computation of each op's weights.

With ``chunk_size`` the per-step contractions move out of the step loop: each
ES-D-RTRL term above is the product of two per-step factors (``ε^x_t`` or ``x_t``, and
a signal), so a chunk stores them and contracts them in one matrix product with time
folded into the batch; D-RTRL matmul-family traces use the chunked form of ``_chunked``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._chunked import chunk_update
from disttrace.algorithms._factors import StepFactors, step_factors
from disttrace.algorithms._learner import Learner
from disttrace.algorithms._specs import ES_D_RTRL, Hybrid, assign_modes
from disttrace.compiler import bypass_groups, bypass_ops, op_function, op_operands, op_weights
from disttrace.ops import apply_block

__all__ = ["OnlineLearner", "OnlineState"]

# braintrace's pp_prop stops correcting the bias after this many steps.
_BIAS_CORRECTION_STEPS = 1000


class OnlineState(NamedTuple):
    """Everything an online learner carries from one step to the next.

    Attributes:
      hidden: path -> hidden value (B, ...).
      aux: path -> value of the model's other (non-learned, untraced) states.
      traces: ``"op{j}/g{g}"`` -> tuple of arrays: the D-RTRL trace of op j for
        group g (rule layout, e.g. (B, K, I, O)), or its ES-D-RTRL output trace
        ``ε^f`` (B, K, N...).
      x_traces: ``"op{j}"`` -> ES-D-RTRL input trace ``ε^x`` (B, I...).
      t: () int32, time steps seen (for the bias correction).
    """

    hidden: dict
    aux: dict
    traces: dict
    x_traces: dict
    t: jax.Array


def _key(j: int, g: int | None = None) -> str:
    return f"op{j}" if g is None else f"op{j}/g{g}"


def _tree_add(a, b):
    return tuple(x + y for x, y in zip(a, b))


def _block_vec(d, v):
    return apply_block(d, v)


class OnlineLearner(Learner):
    """Eligibility-trace learner (D-RTRL, ES-D-RTRL or Hybrid) for a compiled model.

    Use :func:`disttrace.compile` to make one.
    """

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        super().__init__(model, graph, binding, loss_fn)
        self.spec = spec
        self.modes = assign_modes(graph, spec)
        self.io_ops = frozenset(j for j, m in enumerate(self.modes) if m == "io")
        # IO ops whose contraction can wait for the end of a chunk (``_io_chunk_grads``)
        self._foldable_io = frozenset(j for j in self.io_ops if self.graph.ops[j].rule.es_foldable)
        self._bypass_groups = bypass_groups(self.graph)
        self._bypass_ops = bypass_ops(self.graph)
        if isinstance(spec, ES_D_RTRL | Hybrid):
            self.x_decay, self.f_decay = spec.x_decay, spec.f_decay
        else:
            self.x_decay = self.f_decay = None
        self._traces: tuple[dict, dict, jax.Array] | None = None

    # ---- state ----------------------------------------------------------------------
    def _zero_traces(self) -> tuple[dict, dict]:
        traces, x_traces = {}, {}
        for op, mode in zip(self.graph.ops, self.modes):
            for g in op.groups:
                grp = self.graph.groups[g]
                if mode == "param":
                    shapes = jax.eval_shape(
                        lambda ops, grp=grp, op=op: op.rule.dr_zeros(ops, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype),
                        op.operands,
                    )
                    traces[_key(op.index, g)] = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
                elif mode == "io":
                    traces[_key(op.index, g)] = (jnp.zeros((grp.shape[0], grp.k, *grp.neuron_shape), grp.dtype),)
            if mode == "io":
                s = jax.eval_shape(op.rule.es_input, op.operands)
                x_traces[_key(op.index)] = jnp.zeros(s.shape, s.dtype)
        return traces, x_traces

    def init(self) -> OnlineState:
        """A fresh state: the model's current hidden/aux values and zero traces."""
        _, hidden, aux = self.binding.values()
        traces, x_traces = self._zero_traces()
        return OnlineState(hidden, aux, traces, x_traces, jnp.zeros((), jnp.int32))

    def _current_state(self) -> OnlineState:
        _, hidden, aux = self.binding.values()
        if self._traces is None:
            traces, x_traces = self._zero_traces()
            t = jnp.zeros((), jnp.int32)
        else:
            traces, x_traces, t = self._traces
        return OnlineState(hidden, aux, traces, x_traces, t)

    def _store_state(self, state: OnlineState) -> None:
        self.binding.write(hidden=state.hidden, aux=state.aux)
        self._traces = (state.traces, state.x_traces, state.t)

    def _reset_traces(self) -> None:
        self._traces = None

    # ---- one step ----------------------------------------------------------------------
    def _factors(self, loss_of, theta, state: OnlineState, seq_t, y_grad_ops=frozenset()) -> StepFactors:
        hidden = [state.hidden[p] for p in self.graph.hidden_paths]
        aux_leaves = jax.tree.leaves(state.aux)
        return step_factors(
            self.graph, self.io_ops, theta, hidden, aux_leaves, loss_of, seq_t, self._validate_args,
            self._bypass_groups, self._bypass_ops, y_grad_ops,
        )

    def _apply(self, f: StepFactors, state: OnlineState, deferred: frozenset = frozenset(), defer_io: bool = False):
        """Per-step trace updates for every op not in ``deferred``.

        With ``defer_io`` the IO-dimension contractions are not done here: each is
        returned as its two factors, to be contracted once per chunk (``_io_chunk_grads``).

        Returns:
          (traces, x_traces, trace-space gradients of this step by op index, and with
          ``defer_io`` the factor pairs by IO op index, else ``{}``).
        """
        traces, x_traces, tgrads, pairs = dict(state.traces), dict(state.x_traces), {}, {}
        for op, mode in zip(self.graph.ops, self.modes):
            if mode == "none" or op.index in deferred:
                continue
            rule, operands = op.rule, f.operands[op.index]
            to_n = functools.partial(rule.to_trace_neurons, operands=operands)
            if mode == "param":
                for g in op.groups:
                    key = _key(op.index, g)
                    e = traces[key]
                    grad = rule.dr_contract(to_n(f.delta_prev[g]), e)
                    tgrads[op.index] = grad if op.index not in tgrads else _tree_add(tgrads[op.index], grad)
                    traces[key] = _tree_add(rule.dr_decay(to_n(f.jac[g]), e), rule.dr_outer(f.g[(op.index, g)], operands))
            else:
                xk = _key(op.index)
                x_prev = x_traces[xk]
                x_traces[xk] = self.x_decay * x_prev + rule.es_input(operands).astype(x_prev.dtype)
                now, before = None, None
                for g in op.groups:
                    key = _key(op.index, g)
                    (ef_prev,) = traces[key]
                    ef = self.f_decay * _block_vec(f.jac[g], ef_prev) + (1.0 - self.f_decay) * f.g[(op.index, g)]
                    traces[key] = (ef,)
                    s_now = jnp.sum(f.delta_new[g] * ef, axis=1)
                    now = s_now if now is None else now + s_now
                    if g in f.delta_bypass:
                        s_before = jnp.sum(f.delta_bypass[g] * ef_prev, axis=1)
                        before = s_before if before is None else before + s_before
                # δ^new meets the traces that include step t; the part of the signal that
                # bypasses h_t meets the previous traces (corrected with the previous count).
                terms = [(x_traces[xk], now / self._bias_correction(state.t, now.dtype))]
                if before is not None:
                    terms.append((x_prev, before / self._bias_correction(state.t - 1, now.dtype)))
                if op.index in f.y_bypass:  # same-step paths that skip the op's groups: exact
                    terms.append((rule.es_input(operands), f.y_bypass[op.index]))
                if defer_io and rule.es_foldable:
                    pairs[op.index] = terms
                else:
                    grads = [rule.es_grad(a, b, operands) for a, b in terms]
                    tgrads[op.index] = functools.reduce(_tree_add, grads)
        return traces, x_traces, tgrads, pairs

    def _io_chunk_grads(self, pairs: dict, operands: dict) -> dict:
        """Contracts a chunk's stacked IO factor pairs, (U, B, ...) each, in one product per pair.

        ``es_grad`` sums over its leading axis, so time is folded into the batch;
        ``operands`` (op index -> tuple, from ``op_operands``) supply the weights and
        constant index arrays the rule reads.
        """
        out = {}
        for j, terms in pairs.items():
            rule = self.graph.ops[j].rule
            fold = lambda a: a.reshape((-1,) + a.shape[2:])
            grads = [rule.es_grad(fold(a), fold(b), operands[j]) for a, b in terms]
            out[j] = functools.reduce(_tree_add, grads)
        return out

    def _bias_correction(self, t, dtype):
        """``1 - α_f^(n+1)`` for ``n = t`` steps seen (1 after 1000 steps, as braintrace)."""
        n = jnp.maximum(t, 0).astype(dtype)
        corr = jnp.where(t < _BIAS_CORRECTION_STEPS, 1.0 - self.f_decay ** (n + 1.0), 1.0)
        return jnp.maximum(corr, 1e-8)

    def _advance(self, f: StepFactors, state: OnlineState, traces, x_traces) -> OnlineState:
        hidden = dict(zip(self.graph.hidden_paths, f.hidden))
        aux = jax.tree.unflatten(self.graph.aux_tree, f.aux)
        return OnlineState(hidden, aux, traces, x_traces, state.t + 1)

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

    # ---- sequences -------------------------------------------------------------------------
    def _run_steps(self, loss_of, theta, state, seqs, deferred=frozenset(), collect=(), defer_io=False):
        """Scans steps; returns (state, direct sum, tgrad sum, losses, collected factors).

        ``deferred`` ops get no per-step update and no direct term (their ``collect``
        factors are kept, with ``∂L_t/∂y_t`` as ``kept["y"]``); with ``defer_io`` the IO ops' factor pairs are kept (``kept["io"]``) instead of
        contracted, and their gradients are absent from the tgrad sum.
        """

        def body(carry, seq_t):
            st, dsum, tsum = carry
            f = self._factors(loss_of, theta, st, seq_t, deferred)
            traces, x_traces, tg, pairs = self._apply(f, st, deferred, defer_io)
            dsum = [a + b for a, b in zip(dsum, f.direct)]
            tsum = {j: _tree_add(tsum[j], tg[j]) if j in tg else tsum[j] for j in tsum}
            kept = {
                "x": {j: self.graph.ops[j].rule.chunk_input(f.operands[j]) for j in collect},
                "g": {f"{j}/{g}": f.g[(j, g)] for j in collect for g in self.graph.ops[j].groups},
                "jac": {g: f.jac[g] for g in self._groups_of(collect)},
                "delta": {g: f.delta_prev[g] for g in self._groups_of(collect)},
                "y": {j: f.y_grad[j] for j in collect},
                "io": pairs,
            }
            return (self._advance(f, st, traces, x_traces), dsum, tsum), (f.loss, kept)

        dsum0 = [jnp.zeros_like(p) for p in theta]
        tsum0 = self._zero_tgrads(deferred | self._foldable_io if defer_io else deferred)
        (state, dsum, tsum), (losses, kept) = jax.lax.scan(body, (state, dsum0, tsum0), seqs)
        return state, dsum, tsum, losses, kept

    def _groups_of(self, ops) -> list[int]:
        return sorted({g for j in ops for g in self.graph.ops[j].groups})

    def _zero_tgrads(self, exclude=frozenset()) -> dict:
        out = {}
        for op, mode in zip(self.graph.ops, self.modes):
            if mode == "none" or op.index in exclude:
                continue
            shapes = jax.eval_shape(lambda ops, op=op: self._probe_tgrad(op, ops), op.operands)
            out[op.index] = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
        return out

    def _probe_tgrad(self, op, operands):
        grp = self.graph.groups[op.groups[0]]
        delta = jnp.zeros((grp.shape[0], grp.k, *grp.neuron_shape), grp.dtype)
        if self.modes[op.index] == "param":
            e = op.rule.dr_zeros(operands, grp.shape[0], grp.k, grp.neuron_shape, grp.dtype)
            return op.rule.dr_contract(op.rule.to_trace_neurons(delta, operands), e)
        return op.rule.es_grad(op.rule.es_input(operands), delta.sum(1), operands)

    def _sequence(self, loss_of, chunk, theta, state: OnlineState, seqs):
        """Runs a whole sequence; returns (state, summed param grads, per-step losses)."""
        t_len = jax.tree.leaves(seqs)[0].shape[0]
        chunked = frozenset(
            op.index for op, m in zip(self.graph.ops, self.modes) if m == "param" and op.rule.chunkable
        )
        if chunk is None or chunk <= 1 or not (chunked or self._foldable_io):
            state, dsum, tsum, losses, _ = self._run_steps(loss_of, theta, state, seqs)
            return state, [a + b for a, b in zip(dsum, self._to_params(theta, state, tsum))], losses

        def run_chunk(carry, seq_c):
            st, dsum, tsum = carry
            e_start = st.traces
            st, d_c, t_c, losses, kept = self._run_steps(
                loss_of, theta, st, seq_c, chunked, tuple(sorted(chunked)), defer_io=True
            )
            if kept["io"]:
                t_c.update(self._io_chunk_grads(kept["io"], self._param_operands(theta, st)))
            traces = dict(st.traces)
            for j in sorted(chunked):
                op = self.graph.ops[j]
                operands = op.operands
                for g in op.groups:
                    grad, traces[_key(j, g)] = chunk_update(
                        op.rule, operands, e_start[_key(j, g)], kept["x"][j], kept["g"][f"{j}/{g}"],
                        kept["jac"][g], kept["delta"][g], kept["y"][j] if g == op.groups[0] else None,
                    )
                    t_c[j] = grad if j not in t_c else _tree_add(t_c[j], grad)
            st = st._replace(traces=traces)
            dsum = [a + b for a, b in zip(dsum, d_c)]
            tsum = {j: _tree_add(tsum[j], t_c[j]) for j in tsum}
            return (st, dsum, tsum), losses

        n_full, rem = divmod(t_len, chunk)
        dsum = [jnp.zeros_like(p) for p in theta]
        tsum = self._zero_tgrads()
        loss_parts = []
        carry = (state, dsum, tsum)
        if n_full:
            body = jax.tree.map(lambda a: a[: n_full * chunk].reshape((n_full, chunk) + a.shape[1:]), seqs)
            carry, losses = jax.lax.scan(run_chunk, carry, body)
            loss_parts.append(losses.reshape(-1))
        if rem:
            tail = jax.tree.map(lambda a: a[n_full * chunk :], seqs)
            carry, losses = run_chunk(carry, tail)
            loss_parts.append(losses)
        state, dsum, tsum = carry
        grads = [a + b for a, b in zip(dsum, self._to_params(theta, state, tsum))]
        return state, grads, jnp.concatenate(loss_parts)

    # ---- public API ----------------------------------------------------------------------------
    def _etrace_fn(self, seqs, step_fn, chunk_size):
        t_len = self._check_etrace_args(seqs, step_fn, chunk_size)

        def loss_of(call, *seq_t):
            return self._with_call(call, step_fn, *seq_t)

        def run(theta, state, seqs):
            state, grads, losses = self._sequence(loss_of, chunk_size, theta, state, seqs)
            return state, [g / t_len for g in grads], losses

        return self._jit(("etrace", step_fn, chunk_size, t_len), lambda: jax.jit(run))

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
        if self.loss_fn is None:
            raise ValueError("step: this learner has no loss_fn; pass loss_fn=... to disttrace.compile")
        theta = self._param_leaves(params)
        loss_of = lambda call, x_, y_: self.loss_fn(call(x_), y_)
        f = self._factors(loss_of, theta, state, (x, y))
        traces, x_traces, tgrads, _ = self._apply(f, state)
        new_state = self._advance(f, state, traces, x_traces)
        grads = [a + b for a, b in zip(f.direct, self._to_params(theta, new_state, tgrads))]
        return new_state, f.out, self._grads_tree(grads)

    def _eager_step(self, *args):
        def zero_loss(call, *a):
            out = call(*a)
            return 0.0 * sum(jnp.sum(o).astype(jnp.float32) for o in jax.tree.leaves(out))

        def run(theta, state, args):
            f = self._factors(zero_loss, theta, state, args)
            traces, x_traces, _, _ = self._apply(f, state)
            return self._advance(f, state, traces, x_traces), f.out

        fn = self._jit(("eager",), lambda: jax.jit(run))
        state, out = fn(self._param_leaves(), self._current_state(), args)
        self._store_state(state)
        return out
