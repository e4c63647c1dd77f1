"""OSTL: online spatio-temporal learning (Bohnstingl et al. 2022, IEEE TNNLS, arXiv:2007.12723).

OSTL separates the gradient into a *spatial* learning signal (this step's
``∂L_t/∂h``) and a *temporal* eligibility trace carried forward in time. Like
braintrace 0.2.8, disttrace has its two regimes:

**OSTLRecurrent** ('with H'): D-RTRL's trace in the parameter dimension,
propagated with the *true* per-neuron Jacobian block of the step,

.. math::
    E_t = D^{true}_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t, \\qquad
    D^{true}_t[b,k,k',n] = ∂h_t[b,k,n] / ∂h_{t-1}[b,k',n]
    \\ \\text{(every path of the step, the recurrent weights' included)},

    g_t(W) = \\sum_b \\sum_k δ^{prev}_t[b,k] ∘ E_{t-1}[b,k] + ∂L_t/∂W|_{direct}.

D-RTRL's ``D_t`` cuts every trace op's input, so it misses the self-recurrent
term ``∂h_t[n]/∂h_{t-1}[n]`` through a recurrent weight's diagonal (braintrace's
``recurrence_scope='coupled'`` vs ``'diagonal'``). OSTLRecurrent is RTRL with the
influence matrix kept on each weight's own neurons (and their K states) — the same
rule as :class:`~disttrace.SnAp` with ``n=1`` where every hidden value a weight
reaches in its step belongs to its own group (one recurrent layer with a
memoryless readout, one-state neurons: ``tests/algorithms/test_ostl.py`` checks
equality there; SnAp-1 also keeps the entries of later layers a weight reaches in
the same step, OSTL does not). Where the hidden Jacobian is block-diagonal
(layers without recurrent weights) ``D^{true} = D`` and it is D-RTRL exactly.

How ``D^{true}`` is computed: one ``jax.linearize`` of the step in the previous
hidden values, and one JVP per (state, neuron) of each group with a one-hot
tangent (``vmap``), of which the diagonal is kept. So the extra cost per step is
O(K·N) JVPs of the step per group (O(B·N²·K²) values), besides D-RTRL's; memory is
D-RTRL's, O(B·K·|W|) per (op, group), plus that transient. The learner is the
:class:`~disttrace.algorithms.OnlineLearner` with D-RTRL rules and these blocks in
place of the cut ones, so chunking, checkpoints and the Trainer work unchanged.

**OSTLFeedforward** ('without H'): the hidden-to-hidden term dropped, the trace of
the current step only — braintrace's ``OSTLFeedforward`` is its ``pp_prop`` with a
negligible decay (``decay_or_rank=1e-6``). That is disttrace's ES-D-RTRL with that
decay, so :class:`OSTLFeedforward` *is* :class:`~disttrace.ES_D_RTRL` with
braintrace's default (``decay_or_rank=0.0`` is the exact 'without H' coordinate);
``tests/algorithms/test_ostl.py`` checks the equality. Memory O(B·(I+O)) per op.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from disttrace.algorithms._d_rtrl import D_RTRL
from disttrace.algorithms._es_d_rtrl import ES_D_RTRL, decay_pair
from disttrace.algorithms._online import OnlineLearner
from disttrace.compiler import run_step

__all__ = ["OSTLFeedforward", "OSTLRecurrent", "OSTLRecurrentLearner"]


class OSTLRecurrentLearner(OnlineLearner):
    """D-RTRL with the true per-neuron Jacobian blocks (see the module docstring).

    Use ``disttrace.compile(model, disttrace.OSTLRecurrent, ...)`` to make one.
    """

    def _factors(self, loss_of, theta, state, seq_t, y_grad_ops=frozenset()):
        box = {}

        def spy(call, *a):
            # the model's argument leaves this step, for the uncut Jacobian below; they
            # come from the sequences only, never from the differentiated values
            def call_and_keep(*args):
                box.setdefault("args", jax.tree.leaves(args))
                return call(*args)

            return loss_of(call_and_keep, *a)

        f = super()._factors(spy, theta, state, seq_t, y_grad_ops)
        return f._replace(jac=self._true_blocks(theta, state, box["args"]))

    def _true_blocks(self, theta, state, args) -> dict:
        """Group index -> ``D^{true}`` (B, K, K', N...): the diagonal blocks of the step's full hidden Jacobian."""
        graph = self.graph
        hidden = [state.hidden[p] for p in graph.hidden_paths]
        aux_leaves = jax.tree.leaves(state.aux)
        _, lin = jax.linearize(lambda h: run_step(graph, theta, h, aux_leaves, args)[1], hidden)
        b = graph.batch_size
        blocks = {}
        for grp in graph.groups:
            n = math.prod(grp.neuron_shape)
            cols = []
            for src in grp.members:

                def column(j, src=src, grp=grp, n=n):
                    tan = [jnp.zeros_like(h) for h in hidden]
                    tan[src] = jnp.broadcast_to(jax.nn.one_hot(j, n, dtype=hidden[src].dtype), (b, n)).reshape(hidden[src].shape)
                    out = lin(tan)
                    return jnp.stack([out[m].reshape(b, n)[:, j] for m in grp.members], axis=1)  # (B, K)

                cols.append(jnp.moveaxis(jax.vmap(column)(jnp.arange(n)), 0, -1))  # (B, K, N)
            jac = jnp.stack(cols, axis=2)  # (B, K, K', N)
            blocks[grp.index] = jac.reshape((b, grp.k, grp.k) + tuple(grp.neuron_shape))
        return blocks


@dataclasses.dataclass(frozen=True)
class OSTLRecurrent(D_RTRL):
    """OSTL 'with H': D-RTRL's traces propagated with the true per-neuron Jacobian blocks."""

    def learner(self, model, graph, binding, loss_fn=None) -> OSTLRecurrentLearner:
        """The learner ``disttrace.compile`` returns for this spec."""
        return OSTLRecurrentLearner(model, graph, binding, self, loss_fn)


@dataclasses.dataclass(frozen=True, init=False)
class OSTLFeedforward(ES_D_RTRL):
    """OSTL 'without H': ES-D-RTRL with braintrace's negligible default decay.

    Args:
      decay_or_rank: as for :class:`~disttrace.ES_D_RTRL` (default ``1e-6``, as
        braintrace; ``0.0`` drops the temporal term exactly).
      decay: disttrace's spelling of the same argument.

    Raises:
      ValueError: as :class:`~disttrace.ES_D_RTRL`.
    """

    def __init__(self, decay_or_rank=None, *, decay=None):
        if decay_or_rank is None and decay is None:
            decay_or_rank = 1e-6
        x, f = decay_pair(decay, decay_or_rank, "OSTLFeedforward")
        object.__setattr__(self, "x_decay", x)
        object.__setattr__(self, "f_decay", f)
