"""RTRL: real-time recurrent learning with the full influence matrix (Williams & Zipser 1989).

One step of the model is ``h_t = f(h_{t-1}, x_t; θ)`` with every hidden value of the
model (all layers, all groups) flattened per batch row into ``h_t`` (H values). The
influence matrix ``M_t = dh_t/dθ`` (per row: H × |θ|) follows

.. math::
    M_t = J_t M_{t-1} + ∂h_t/∂θ, \\qquad J_t = ∂h_t/∂h_{t-1},\\ M_0 = 0,

with ``J_t`` the *full* hidden-to-hidden Jacobian: the cross-neuron and cross-layer
terms that D-RTRL drops are all in it. The gradient of step t is taken in the
previous-hidden form (DESIGN.md §2),

.. math::
    dL_t/dθ = (∂L_t/∂h_{t-1}) M_{t-1} + ∂L_t/∂θ|_{h_{t-1}},

so it is exact for any recurrent model whose batch rows do not interact, whatever
the output is read from: one VJP of the step's loss with respect to ``(θ, h_{t-1})``
gives both factors. ``etrace_grad`` returns the mean over time, like ``BPTT``.

Why a learner and not a :class:`~disttrace.algorithms._rule.LearningRule`: a rule is
bound to one trace op and sees that op's factors only (its operands, the per-neuron
Jacobian blocks of the groups it reaches). ``J_t M_{t-1}`` couples every parameter
with every hidden value through every op, which no per-op factor carries. So
:class:`RTRL` is a spec whose ``learner(...)`` builds an :class:`RTRLLearner` (as
``BPTT`` builds its own), computing ``J_t M_{t-1} + ∂h_t/∂θ`` directly on the
compiled step (``compiler.run_step``): ``jax.linearize`` of the new hidden values in
``(θ, h_{t-1})`` at the step's point, then one JVP per column of ``M`` (``vmap`` over
the columns; the tangent of a column is ``(e_p, M_{t-1}[:, :, p])``). Batch rows are
independent, so one JVP serves every row at once.

Only parameters that reach a hidden state get columns (the compiler's ``"trace"``
parameters and the weights it reports as reaching hidden states only through
another trace op); the others (a memoryless readout) have a zero column forever and
get their exact same-step gradient from the VJP.

Cost, with B the batch, H the hidden values per row, |θ| the parameters that reach a
hidden state: memory O(B·H·|θ|) for ``M`` (refused above ``memory_budget``, before
anything is allocated), plus working memory of the same order per step (the new
``M`` and the batched tangents) and the |θ_j|² one-hot basis of the largest
parameter leaf; time O(|θ|) JVPs of the step per step, i.e. O(B·H·(H + I)·|θ|) for
dense layers with I inputs (for a layer with W of H×H, O(B·H⁴)). ``chunk_size`` is
accepted and ignored.

Examples:
  >>> import brainstate, jax.numpy as jnp, disttrace as dt
  >>> net = dt.nn.LIFLayer(3, 4, recurrent=True)
  >>> learner = dt.compile(net, dt.RTRL, jnp.zeros((2, 3)), batch_size=2)
  >>> learner.influence_bytes()  # B=2 × H=4 × |θ|=(3+4)·4 × 4 bytes
  896
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._factors import loss_fn_loss_of, run_loss_of
from disttrace.algorithms._learner import Learner
from disttrace.checks import non_negative_int, path_str
from disttrace.compiler import DiagnosticKind, run_step

__all__ = ["RTRL", "RTRLLearner", "RTRLState", "influence_leaves"]

_T_MAX = 2**31 - 1  # the step counter saturates here instead of wrapping negative


class RTRLState(NamedTuple):
    """Everything the RTRL learner carries from one step to the next.

    Attributes:
      hidden: path -> hidden value (B, ...).
      aux: path -> value of the model's other states (and brainstate's key under
        ``RNG_PATH`` when the model draws random numbers), as in ``OnlineState``.
      m: parameter leaf name (its state path, ``"layers.0.weight"``, with ``/k`` for
        the k-th leaf of a pytree-valued parameter) -> one array per hidden state
        (graph order), (B, N_i, P_j): ``dh_i/dθ_j`` with hidden state i flattened to
        N_i values per row and the leaf to P_j values.
      t: () int32, time steps seen (saturating).
    """

    hidden: dict
    aux: dict
    m: dict
    t: jax.Array

    # batch-leading, the rest replicated: the last axis is parameters, not neurons
    sharding_roles = {"hidden": "hidden", "aux": "aux", "m": "x_trace", "t": "count"}


def _bytes_str(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def influence_leaves(graph, params: dict) -> tuple[tuple[int, str], ...]:
    """``(leaf index, leaf name)`` of every parameter leaf that reaches a hidden state.

    Those are the weights of trace ops that reach a hidden group (kind ``"trace"``)
    and the weights the compiler reports as reaching hidden states only through
    another trace op (``DiagnosticKind.SAME_STEP_ONLY``); the compiler refuses any
    other path from a parameter to a hidden state.

    Args:
      graph: the compiled ``ETraceGraph``.
      params: parameter values by path (``learner.params()``).
    """
    same_step = {r.path for r in graph.records if r.kind is DiagnosticKind.SAME_STEP_ONLY}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    counts: dict = {}
    for key_path, _ in flat:
        counts[key_path[0].key] = counts.get(key_path[0].key, 0) + 1
    out, seen = [], {}
    for j, (key_path, leaf) in enumerate(flat):
        owner = key_path[0].key
        k = seen[owner] = seen.get(owner, -1) + 1
        name = path_str(owner) if counts[owner] == 1 else f"{path_str(owner)}/{k}"
        reaches = graph.param_kinds.get(owner) == "trace" or path_str(owner) in same_step
        if reaches and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            out.append((j, name))
    return tuple(out)


class RTRLLearner(Learner):
    """Exact online gradients with the full influence matrix (see the module docstring).

    Use ``disttrace.compile(model, disttrace.RTRL, ...)`` to make one.

    Attributes:
      spec: the :class:`RTRL` spec (or a subclass's).
      leaves: ``(leaf index, leaf name)`` of the parameters with influence columns.

    Raises:
      ValueError: if the influence matrix would need more than ``spec.memory_budget``
        bytes (checked before anything is allocated), or a hidden state is not a
        floating-point array.
    """

    who = "RTRL"

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        super().__init__(model, graph, binding, loss_fn)
        self.spec = spec
        params, hidden, _ = binding.values()
        for p in graph.hidden_paths:
            if not jnp.issubdtype(jnp.result_type(hidden[p]), jnp.inexact):
                raise ValueError(
                    f"{self.who}: hidden state {path_str(p)} has dtype {jnp.result_type(hidden[p])}; the influence "
                    "matrix needs floating-point hidden states"
                )
        self.leaves = influence_leaves(graph, params)
        theta = jax.tree.leaves(params)
        self._leaf_shapes = {name: tuple(jnp.shape(theta[j])) for j, name in self.leaves}
        self._hidden_dtypes = tuple(jnp.result_type(hidden[p]) for p in graph.hidden_paths)
        self._hidden_sizes = tuple(math.prod(s[1:]) for s in graph.hidden_shapes)
        need, budget = self.influence_bytes(), spec.memory_budget
        if need > budget:
            n_theta = sum(math.prod(s) for s in self._leaf_shapes.values())
            raise ValueError(
                f"{self.who}: the influence matrix needs {_bytes_str(need)} ({need} bytes: batch {graph.batch_size} × "
                f"{sum(self._hidden_sizes)} hidden values × {n_theta} parameters reaching them × dtype size), over "
                f"memory_budget={budget} bytes ({_bytes_str(budget)}). Use disttrace.D_RTRL or ES_D_RTRL (memory "
                f"O(B·|W|) / O(B·(I+O))), a smaller model or batch, or raise memory_budget"
            )
        self._m: tuple[dict, jax.Array] | None = None

    def influence_bytes(self) -> int:
        """Bytes of the influence matrix ``M`` (all leaves, all hidden states)."""
        total = 0
        for shape in self._leaf_shapes.values():
            for n, dt in zip(self._hidden_sizes, self._hidden_dtypes):
                total += self.graph.batch_size * n * math.prod(shape) * jnp.dtype(dt).itemsize
        return total

    # ---- state ------------------------------------------------------------------------
    def _zero_m(self) -> dict:
        b = self.graph.batch_size
        return {
            name: tuple(jnp.zeros((b, n, math.prod(shape)), dt) for n, dt in zip(self._hidden_sizes, self._hidden_dtypes))
            for name, shape in self._leaf_shapes.items()
        }

    def init(self) -> RTRLState:
        """A fresh state: the model's current hidden/aux values and a zero influence matrix."""
        _, hidden, aux = self.sync().values()
        return RTRLState(hidden, aux, self._zero_m(), jnp.zeros((), jnp.int32))

    def _current_state(self) -> RTRLState:
        _, hidden, aux = self.binding.values()
        m, t = (self._zero_m(), jnp.zeros((), jnp.int32)) if self._m is None else self._m
        return RTRLState(hidden, aux, m, t)

    def _store_state(self, state: RTRLState) -> None:
        self.binding.write(hidden=state.hidden, aux=state.aux)
        self._m = (state.m, state.t)

    def _reset_traces(self) -> None:
        self._m = None

    # ---- one step ----------------------------------------------------------------------
    def _mask(self, name: str, i: int):
        """Entries of ``M`` kept for (leaf, hidden state i): ``None`` keeps all (SnAp masks)."""
        return None

    def _propagate(self, theta, hidden, aux_leaves, args, m: dict) -> dict:
        """``J_t M_{t-1} + ∂h_t/∂θ`` for every influence leaf (masked by :meth:`_mask`)."""
        idx = [j for j, _ in self.leaves]

        def h_map(th_sub, h):
            th = list(theta)
            for k, j in enumerate(idx):
                th[j] = th_sub[k]
            return run_step(self.graph, th, h, aux_leaves, args)[1]

        _, lin = jax.linearize(h_map, [theta[j] for j in idx], list(hidden))
        new = {}
        for k, (j, name) in enumerate(self.leaves):
            shape, dtype = self._leaf_shapes[name], jnp.result_type(theta[j])
            size = math.prod(shape)

            def column(p, cols, k=k, shape=shape, dtype=dtype, size=size):
                th_t = [jnp.zeros_like(theta[jj]) for jj in idx]
                th_t[k] = jax.nn.one_hot(p, size, dtype=dtype).reshape(shape)
                h_t = [c.reshape(h.shape) for c, h in zip(cols, hidden)]
                return tuple(o.reshape(o.shape[0], -1) for o in lin(th_t, h_t))

            cols = jax.vmap(column, in_axes=(0, 2), out_axes=2)(jnp.arange(size), m[name])
            masks = [self._mask(name, i) for i in range(len(cols))]
            new[name] = tuple(c if mk is None else jnp.where(mk, c, jnp.zeros((), c.dtype)) for c, mk in zip(cols, masks))
        return new

    def _contract(self, theta, delta: list, m: dict) -> list:
        """Per parameter leaf ``Σ_b Σ_i δ[b, i] · M[b, i, :]`` (zeros for leaves without columns)."""
        grads = [jnp.zeros_like(p) for p in theta]
        b = self.graph.batch_size
        for j, name in self.leaves:
            g = sum(jnp.einsum("bn,bnp->p", d.reshape(b, -1), mi) for d, mi in zip(delta, m[name]))
            grads[j] = g.reshape(theta[j].shape).astype(theta[j].dtype)
        return grads

    def _one_step(self, loss_of, theta, state: RTRLState, seq_t, with_grad: bool = True):
        """One step: ``(new state, loss, model output, this step's gradient or None)``."""
        hidden = [state.hidden[p] for p in self.graph.hidden_paths]
        aux_leaves = jax.tree.leaves(state.aux)

        def f(th, h):
            loss, s = run_loss_of(self.graph, loss_of, seq_t, self._validate_args, th, h, aux_leaves)
            return loss, (s.hidden, s.aux, s.out, s.args)

        if with_grad:
            loss, vjp, (h_new, a_new, out, args) = jax.vjp(f, list(theta), hidden, has_aux=True)
            direct, delta = vjp(jnp.ones_like(loss))
            grads = [a + b for a, b in zip(direct, self._contract(theta, delta, state.m))]
        else:
            loss, (h_new, a_new, out, args) = f(list(theta), hidden)
            grads = None
        m = self._propagate(theta, hidden, aux_leaves, args, state.m)
        new = RTRLState(
            dict(zip(self.graph.hidden_paths, h_new)),
            jax.tree.unflatten(self.graph.aux_tree, a_new),
            m,
            state.t + (state.t < _T_MAX).astype(state.t.dtype),
        )
        return new, loss, jax.tree.unflatten(self.graph.out_tree, out), grads

    # ---- sequences and the public API ------------------------------------------------
    def _effective_chunk(self, chunk_size):
        return None  # accepted and ignored: the influence matrix is updated step by step

    def _sequence_fn(self, step_fn, chunk_size, t_len):
        def loss_of(call, *seq_t):
            return self._with_call(call, step_fn, *seq_t)

        def run(theta, state, seqs):
            def body(carry, seq_t):
                st, gsum = carry
                st, loss, _, grads = self._one_step(loss_of, theta, st, seq_t)
                return (st, [a + b for a, b in zip(gsum, grads)]), loss

            (state, gsum), losses = jax.lax.scan(body, (state, [jnp.zeros_like(p) for p in theta]), seqs)
            return state, [g / t_len for g in gsum], losses

        return run

    def step(self, state: RTRLState, params: dict, x, y):
        """One pure online step: ``(state, out, grads)`` for the loss ``loss_fn(out, y)``.

        The gradient is this step's exact ``dL_t/dθ`` through the whole past.

        Raises:
          ValueError: if the learner has no ``loss_fn`` or the inputs do not match.
        """
        loss_of = loss_fn_loss_of(self.loss_fn)
        theta = self._param_leaves(params)
        new, _, out, grads = self._one_step(loss_of, theta, state, (x, y))
        return new, out, self._grads_tree(grads)

    def _eager_step(self, *args):
        def loss_of(call, *a):
            call(*a)
            return jnp.zeros(())

        def run(theta, state, args):
            new, _, out, _ = self._one_step(loss_of, theta, state, args, with_grad=False)
            return new, out

        fn = self._jit(("eager",), lambda: jax.jit(run))
        state, out = fn(self._param_leaves(), self._current_state(), args)
        self._store_state(state)
        return out


@dataclasses.dataclass(frozen=True, init=False)
class RTRL:
    """Real-time recurrent learning: the full influence matrix, exact for any recurrent model.

    Args:
      memory_budget: bytes the influence matrix may take (default 1 GiB); compiling a
        model whose matrix needs more raises ``ValueError`` (with both numbers)
        before anything is allocated.

    Raises:
      ValueError: on a negative or non-int ``memory_budget``.
    """

    memory_budget: int

    def __init__(self, memory_budget: int = 2**30):
        object.__setattr__(self, "memory_budget", non_negative_int("RTRL", "memory_budget", memory_budget))

    def learner(self, model, graph, binding, loss_fn=None) -> RTRLLearner:
        """The learner ``disttrace.compile`` returns for this spec."""
        return RTRLLearner(model, graph, binding, self, loss_fn)

    def rules(self, graph) -> tuple:
        """RTRL has no per-op rules (see the module docstring): always raises.

        Raises:
          ValueError: always; compile the model with ``disttrace.compile`` instead.
        """
        raise ValueError(
            f"{type(self).__name__} is a whole-model algorithm with its own learner, not per-op learning rules; "
            "use disttrace.compile(model, spec, ...)"
        )
