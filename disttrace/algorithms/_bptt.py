"""BPTT: the oracle. The same interface as the online learners, computed by unrolling
the step with ``lax.scan`` and differentiating the mean loss with ``jax.grad``.

Memory grows linearly with T; that is the cost the online algorithms remove.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from disttrace.algorithms._factors import loss_fn_loss_of, run_loss_of
from disttrace.algorithms._learner import Learner
from disttrace.compiler import run_step

__all__ = ["BPTT", "BPTTLearner", "BPTTState"]


@dataclasses.dataclass(frozen=True)
class BPTT:
    """Backpropagation through time: the exact oracle (memory grows with T)."""


class BPTTState(NamedTuple):
    """hidden: path -> (B, ...); aux: path -> value (with brainstate's random key under
    ``RNG_PATH`` when the model draws random numbers, threaded through the scan exactly
    as ``OnlineState.aux``); t: () int32 steps seen."""

    hidden: dict
    aux: dict
    t: jax.Array

    # see ``OnlineState.sharding_roles``
    sharding_roles = {"hidden": "hidden", "aux": "aux", "t": "count"}


class BPTTLearner(Learner):
    """Exact gradients by backpropagation through time (the reference)."""

    def init(self) -> BPTTState:
        """A fresh state: the model's current hidden/aux values."""
        _, hidden, aux = self.sync().values()
        return BPTTState(hidden, aux, jnp.zeros((), jnp.int32))

    def _current_state(self) -> BPTTState:
        return self.init()

    def _store_state(self, state: BPTTState) -> None:
        self.binding.write(hidden=state.hidden, aux=state.aux)

    def _step_loss(self, loss_of, theta, state: BPTTState, seq_t):
        hidden = [state.hidden[p] for p in self.graph.hidden_paths]
        aux_leaves = jax.tree.leaves(state.aux)
        loss, s = run_loss_of(self.graph, loss_of, seq_t, self._validate_args, theta, hidden, aux_leaves)
        new = BPTTState(
            dict(zip(self.graph.hidden_paths, s.hidden)),
            jax.tree.unflatten(self.graph.aux_tree, s.aux),
            state.t + 1,
        )
        return loss, new, jax.tree.unflatten(self.graph.out_tree, s.out)

    def _effective_chunk(self, chunk_size):
        return None  # accepted and ignored: BPTT unrolls the whole sequence

    def _sequence_fn(self, step_fn, chunk_size, t_len):
        def loss_of(call, *seq_t):
            return self._with_call(call, step_fn, *seq_t)

        def total(theta, state, seqs):
            def body(st, seq_t):
                loss, st, _ = self._step_loss(loss_of, theta, st, seq_t)
                return st, loss

            state, losses = jax.lax.scan(body, state, seqs)
            return losses.mean(), (state, losses)

        def run(theta, state, seqs):
            grads, (state, losses) = jax.grad(total, has_aux=True)(theta, state, seqs)
            return state, grads, losses

        return run

    def step(self, state: BPTTState, params: dict, x, y):
        """One step with a one-step horizon: the gradient holds the previous hidden state fixed.

        (Full BPTT needs the whole sequence: use :meth:`etrace_grad`.)
        """
        loss_of = loss_fn_loss_of(self.loss_fn)
        theta = self._param_leaves(params)

        def f(th):
            loss, new, out = self._step_loss(loss_of, th, state, (x, y))
            return loss, (new, out)

        grads, (new, out) = jax.grad(f, has_aux=True)(theta)
        return new, out, self._grads_tree(grads)

    def _eager_step(self, *args):
        state = self._current_state()
        leaves, tree = jax.tree.flatten(args)
        self._validate_args(leaves, tree)
        out, h_new, a_new, _ = run_step(
            self.graph, self._param_leaves(), [state.hidden[p] for p in self.graph.hidden_paths],
            jax.tree.leaves(state.aux), leaves,
        )
        self._store_state(
            BPTTState(dict(zip(self.graph.hidden_paths, h_new)), jax.tree.unflatten(self.graph.aux_tree, a_new), state.t + 1)
        )
        return jax.tree.unflatten(self.graph.out_tree, out)
