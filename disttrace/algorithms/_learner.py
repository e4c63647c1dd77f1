"""What every learner shares: the model binding, input checks and the stateful API.

A learner wraps a compiled model. Called as ``learner(x)`` it runs one model step
(inside :meth:`etrace_grad`'s ``step_fn`` that call is routed to the algorithm); its
gradients are dicts keyed like :attr:`param_states` (the model's ``ParamState``s by
path tuple), each value shaped like that state's value.

The stateful API keeps the learner state in the model's states; when the model draws
random numbers that includes brainstate's global key (``binding.threads_rng``), which
:meth:`etrace_grad` and ``learner(x)`` advance step by step, like any other state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import brainstate
import jax
import jax.numpy as jnp

from disttrace.algorithms._fn_cache import JitCache, function_key
from disttrace.checks import positive_int
from disttrace.compiler import ETraceGraph, ModuleBinding, path_str, run_step

__all__ = ["Learner"]


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
        new = ModuleBinding.of(self.model, rng=b.threads_rng)
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

    def etrace_grad(self, *seqs, step_fn: Callable, return_value: bool = False, chunk_size: int | None = None):
        """Gradient of the mean over time of ``step_fn`` (online learners: memory
        independent of T; ``BPTT``: exact, by unrolling).

        Args:
          *seqs: time-major sequences (T, ...); ``step_fn`` gets one slice of each.
          step_fn: ``step_fn(*seq_t) -> scalar`` that calls ``learner(x_t)`` exactly once.
          return_value: also return the per-step losses (T,).
          chunk_size: contract the traces once per chunk of this many steps instead
            of every step (the same gradient, to rounding): D-RTRL traces of
            matmul-family weights are read and written once per chunk, and every
            ES-D-RTRL weight gradient, and a chunked D-RTRL weight's same-step term,
            becomes one matrix product per chunk (ops whose rule is ``es_foldable``;
            the built-in ones are). Memory grows with the chunk, not with T: the
            chunk's per-step factors, O(chunk · B · (op inputs + neurons)) per op, where
            a convolution's input is its patch matrix (window × channels per output
            position), so ES-D-RTRL on large convolutions wants small chunks.
            Accepted and ignored by ``BPTT``.

        Returns:
          ``grads`` (dict keyed like :attr:`param_states`), or ``(grads, losses)``.
          Hidden states and traces advance; they carry over to the next call.

        Raises:
          ValueError: on bad sequences, ``chunk_size`` or ``step_fn`` behaviour.
        """
        self.sync()
        fn = self._etrace_fn(seqs, step_fn, chunk_size)
        state, grads, losses = fn(self._param_leaves(), self._current_state(), seqs)
        self._store_state(state)
        grads = self._grads_tree(grads)
        return (grads, losses) if return_value else grads

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
        compiles once."""
        t_len = self._check_etrace_args(seqs, step_fn, chunk_size)
        chunk_size = self._effective_chunk(chunk_size)
        key = ("etrace_grad", function_key(step_fn), chunk_size, t_len)
        return self._jitted.get(
            key,
            lambda: jax.jit(self._sequence_fn(step_fn, chunk_size, t_len)),
            lambda: "etrace_grad's step_fn",
        )

    def _effective_chunk(self, chunk_size: int | None) -> int | None:
        return chunk_size

    def _sequence_fn(self, step_fn: Callable, chunk_size: int | None, t_len: int) -> Callable:
        """``run(theta, state, seqs) -> (state, grads (mean over time), losses (T,))``."""
        raise NotImplementedError

    def etrace_grad_memory(self, *seqs, step_fn: Callable, chunk_size: int | None = None) -> dict:
        """XLA's memory analysis of the compiled :meth:`etrace_grad` for these arguments.

        Compiles (or reuses) the same jitted sequence function ``etrace_grad`` runs, without
        running it, and returns its buffer sizes in bytes: ``temp`` (working memory),
        ``output`` (gradients and the carried state, i.e. the traces) and ``argument``.
        ``temp + output`` is the device-independent view of how memory scales with T.

        Raises:
          ValueError: as :meth:`etrace_grad` for bad arguments.
        """
        self.sync()
        fn = self._etrace_fn(seqs, step_fn, chunk_size)
        ma = fn.lower(self._param_leaves(), self._current_state(), seqs).compile().memory_analysis()
        return {
            "temp": int(ma.temp_size_in_bytes),
            "output": int(ma.output_size_in_bytes),
            "argument": int(ma.argument_size_in_bytes),
        }

    def _current_state(self):
        raise NotImplementedError

    # ---- calling the model ----------------------------------------------------------
    def __call__(self, *args):
        """One model step. Inside ``etrace_grad``'s ``step_fn`` this is the traced step."""
        if self._active_call is not None:
            return self._active_call(*args)
        self.sync()
        return self._eager_step(*args)

    def _eager_step(self, *args):
        raise NotImplementedError

    def predict(self, xs):
        """Model outputs over a time-major sequence ``xs`` (T, B, ...), without learning.

        Starts from the current hidden states and leaves them unchanged. A model that
        draws random numbers draws anew at every step, from the current global key,
        which is left unchanged too (so two calls draw the same values).
        """
        self._check_sequences((xs,))

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
        """Re-initialises the model's states (``init_all_states``) and clears traces."""
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
