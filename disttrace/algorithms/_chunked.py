"""Chunked D-RTRL: touch the big trace once per chunk of U steps, not once per step.

Within a chunk starting from the trace ``E_s`` with per-step factors ``x_u``,
``g_u = ∂h_u/∂y_u``, ``D_u`` and ``δ_u = ∂L_u/∂h_{u-1}`` (u = 1..U; all O(B·(I+O))),
and ``P_{t,u} = D_t ⋯ D_{u+1}`` (per-neuron K×K products):

.. math::
    \\sum_t δ_t E_{t-1} = \\underbrace{\\Big(\\sum_t δ_t P_{t-1,0}\\Big)}_{c} · E_s
        + \\sum_u x_u^\\top (a_u ⋅ g_u), \\qquad a_u = δ_{u+1} + a_{u+1} D_{u+1},\\ a_U = 0

    E_{s+U} = P_{U,0} E_s + \\sum_u (P_{U,u} g_u) ⊗ x_u

``c`` is an exclusive forward cumulative product, ``a`` a reverse recurrence (no
division by ``D``), and both sums over u are single batched matrix products. The
same-step term ``Σ_u x_u ⊗ ∂L_u/∂y_u`` is added to ``a_u ⋅ g_u`` before the input
contraction, so it costs no product of its own. This
is algebraically identical to the step-by-step update (DESIGN.md §2), so tests
demand equality for every U.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from disttrace.ops import apply_block

__all__ = ["chunk_update", "read_then_update"]


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

    def fwd(carry, inp):
        q, c = carry
        delta, d = inp
        return (_mat_mat(d, q), c + _row_times(delta, q)), None

    (q_end, c), _ = jax.lax.scan(fwd, (eye, jnp.zeros_like(deltas[0])), (deltas, jacs))

    def bwd(carry, inp):
        a, r = carry
        delta, d = inp
        # emit (a_u, R_u), then step to u-1 with this step's δ_u and D_u
        return (delta + _row_times(a, d), _mat_mat(r, d)), (a, r)

    _, (a_seq, r_seq) = jax.lax.scan(bwd, (jnp.zeros_like(deltas[0]), eye), (deltas, jacs), reverse=True)
    cs = jnp.sum(a_seq * gs, axis=2)  # (U, B, N...)
    if direct is not None:
        cs = cs + direct.astype(cs.dtype)
    bs = jax.vmap(_mat_vec)(r_seq, gs)  # (U, B, K, N...)

    # hidden-space arrays (…, N...) to the trace's neuron layout (a conv's (…, P, O))
    to_n = lambda a: rule.to_trace_neurons(a, operands)
    trace, contracted = read_then_update(trace, rule.dr_contract(to_n(c), trace))
    grad = tuple(x + y for x, y in zip(contracted, rule.input_vjp_sum(xs, to_n(cs), operands)))
    new_trace = tuple(x + y for x, y in zip(rule.dr_decay(to_n(q_end), trace), rule.outer_sum(to_n(bs), xs, operands)))
    return grad, new_trace


def read_then_update(trace, contracted):
    """``(trace, contracted)`` unchanged, but the trace's update is ordered after the read
    that made ``contracted``.

    A trace carried by a loop and read twice (the contraction, then the decay into
    the new trace) is otherwise copied whole at every iteration, because XLA cannot
    tell that the read finishes before the update overwrites the buffer in place. On
    CPU that copy was a fifth of a chunk's trace work: (64, 1, 612, 512) float32,
    two chunks, 0.25 -> 0.195 CPU s.
    """
    return jax.lax.optimization_barrier((trace, contracted))
