"""Chunked D-RTRL: touch the big trace once per chunk of U steps, not once per step.

Within a chunk starting from the trace ``E_s`` with per-step factors ``x_u``,
``g_u = ∂h_u/∂y_u``, ``D_u`` and ``δ_u = ∂L_u/∂h_{u-1}`` (u = 1..U; all O(B·(I+O))),
and ``P_{t,u} = D_t ⋯ D_{u+1}`` (per-neuron K×K products):

.. math::
    \\sum_t δ_t E_{t-1} = \\underbrace{\\Big(\\sum_t δ_t P_{t-1,0}\\Big)}_{c} · E_s
        + \\sum_u x_u^\\top (a_u ⋅ g_u), \\qquad a_u = δ_{u+1} + a_{u+1} D_{u+1},\\ a_U = 0

    E_{s+U} = P_{U,0} E_s + \\sum_u (P_{U,u} g_u) ⊗ x_u

``a`` is a reverse recurrence (no division by ``D``) that ends at ``a_0 = c`` (with
``P_{U,u}`` carried beside it, ending at ``P_{U,0}``), so one reverse scan gives every
factor, and both sums over u are single batched matrix products. The
same-step term ``Σ_u x_u ⊗ ∂L_u/∂y_u`` is added to ``a_u ⋅ g_u`` before the input
contraction, so it costs no product of its own. This
is algebraically identical to the step-by-step update (DESIGN.md §2), so tests
demand equality for every U.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from disttrace.ops import apply_block

__all__ = ["chunk_update", "contract_then_decay", "read_then_update"]


def _eye_like(d0):
    """Per-neuron identity blocks shaped like one (B, K, K, N...) Jacobian."""
    k = d0.shape[1]
    eye = jnp.eye(k, dtype=d0.dtype).reshape((1, k, k) + (1,) * (d0.ndim - 3))
    return jnp.broadcast_to(eye, d0.shape)


def _row_times(a, d):
    """Row vector times block: (a D)[k'] = Σ_k a[k] D[k, k'] with a (B,K,N...), D (B,K,K,N...)."""
    return jnp.einsum("bk...,bkj...->bj...", a, d)


def _mat_mat(p, q):
    return jnp.einsum("bkj...,bjm...->bkm...", p, q)


def _mat_vec(p, v):
    return apply_block(p, v)


def chunk_update(rule, operands, trace, xs, gs, jacs, deltas, direct=None):
    """One chunk of the exact D-RTRL update for a matmul-family op.

    Args:
      rule: the op's rule (``chunkable``).
      operands: one step's operands (for weight shapes only).
      trace: ``E_s``, the rule's trace tuple.
      xs: (U, B, I) stacked op inputs.
      gs: (U, B, K, N...) ``∂h_u/∂y_u``.
      jacs: (U, B, K, K, N...) Jacobian blocks.
      deltas: (U, B, K, N...) learning signals ``∂L_u/∂h_{u-1}``.
      direct: optional (U, B, N...) ``∂L_u/∂y_u``: the same-step gradient
        ``Σ_u x_u ⊗ ∂L_u/∂y_u`` is added, sharing the one input contraction.

    Returns:
      ``(trace_space_grad, new_trace)``: the chunk's summed trace-space gradient and
      ``E_{s+U}``.
    """
    eye = _eye_like(jacs[0])

    def bwd(carry, inp):
        a, r = carry
        delta, d, g, y = inp
        # emit (a_u ⋅ g_u (+ ∂L_u/∂y_u), R_u g_u), then step to u-1 with this step's δ_u and D_u;
        # emitting the products, not a_u and R_u, keeps two (U, B, K(, K), N...) arrays out of memory
        c_u = jnp.sum(a * g, axis=1)
        if y is not None:
            c_u = c_u + y.astype(c_u.dtype)
        return (delta + _row_times(a, d), _mat_mat(r, d)), (c_u, _mat_vec(r, g))

    init = (jnp.zeros_like(deltas[0]), eye)
    # the reverse recurrence ends at (a_0, R_0) = (c, P_{U,0}): the exclusive forward products
    # need no scan of their own
    (c, q_end), (cs, bs) = jax.lax.scan(bwd, init, (deltas, jacs, gs, direct), reverse=True)  # (U, B, N...), (U, B, K, N...)

    # hidden-space arrays (…, N...) to the trace's neuron layout (a conv's (…, P, O))
    to_n = lambda a: rule.to_trace_neurons(a, operands)
    contracted, decayed = contract_then_decay(rule, to_n(c), to_n(q_end), trace)
    grad = tuple(x + y for x, y in zip(contracted, rule.input_vjp_sum(xs, to_n(cs), operands)))
    new_trace = tuple(x + y for x, y in zip(decayed, rule.outer_sum(to_n(bs), xs, operands)))
    return grad, new_trace


def contract_then_decay(rule, delta, d, trace) -> tuple:
    """``(rule.dr_contract(delta, trace), rule.dr_decay(d, trace))`` for a loop-carried trace,
    the decay ordered after the contraction's read so that XLA can overwrite the trace in
    place instead of copying it whole at every update.

    Rules with a ``dr_contract_decay`` (the matmul family) order the two themselves
    (without a collective under a batch sharding); for the others the two are separated
    by an ``optimization_barrier`` (:func:`read_then_update`).
    """
    own = getattr(rule, "dr_contract_decay", None)
    if own is not None:
        return own(delta, d, trace)
    trace, contracted = read_then_update(trace, rule.dr_contract(delta, trace))
    return contracted, rule.dr_decay(d, trace)


def read_then_update(trace, contracted):
    """``(trace, contracted)`` unchanged, but the trace's update is ordered after the read
    that made ``contracted`` (an ``optimization_barrier``).

    On CPU (jax 0.10) XLA removes the barrier before it inserts its copies, so a trace
    read twice in a loop is still copied there; the matmul family avoids the copy with
    ``dr_contract_decay``.
    """
    return jax.lax.optimization_barrier((trace, contracted))
