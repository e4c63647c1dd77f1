"""SnAp-n: the sparse n-step approximation of RTRL (Menick et al. 2021, arXiv:2006.07232).

RTRL's influence matrix ``M_t = J_t M_{t-1} + I_t`` (``I_t = ∂h_t/∂θ``, see ``_rtrl``)
restricted to a fixed sparsity pattern ``S_n``: the entries of ``M`` that can be
nonzero ``n`` steps after a parameter is perturbed,

.. math::
    S_1 = \\mathrm{pat}(I), \\qquad S_{k+1} = \\mathrm{pat}(J)\\,S_k \\cup S_1,
    \\qquad M_t = 1_{S_n} ∘ (J_t M_{t-1} + I_t),

with boolean matrix products. ``S_k ⊆ S_{k+1}``; once ``S_{k+1} = S_k`` (the coupling
*depth*, :attr:`SnApLearner.depth`) the pattern holds every entry RTRL can make
nonzero, so SnAp-n for ``n >= depth`` equals RTRL. SnAp-1 keeps only the immediate
entries: a weight into neuron k keeps ``dh/dW`` for the hidden values its own step
writes (neuron k's K states, and any later layer's values it reaches in the same
step), so it uses the diagonal of ``J`` — including the self-recurrent term that
D-RTRL's cut Jacobian blocks leave out — and equals D-RTRL where ``J`` is
block-diagonal (single layers without recurrent weights and a memoryless readout).
The gradient is RTRL's previous-hidden form with the masked ``M``.

The pattern is computed once, when the learner is built: ``pat(J)`` and ``pat(I)``
are the nonzero entries of the Jacobians of the compiled step evaluated at
``_N_PROBES`` random points (hidden values, inputs and perturbed parameters drawn
from normals of several scales, from a fixed key; brainstate's global key is not
touched), united over probes and batch rows. A surrogate derivative with compact
support (``"triangle"``) or a ``relu`` is zero on part of its domain, so an entry is
missed only if every probe lands there; a missed entry makes SnAp more
approximate, never wrong in shape. Integer inputs (token ids) are drawn in {0, 1}
only, so an embedding table's pattern covers two rows: use RTRL there.

Known limitation of this first version: the masked entries are still stored
densely, so memory is RTRL's O(B·H·|θ|) (and the same ``memory_budget`` refusal
applies); only the values, not the storage, follow the sparsity. Time is RTRL's
plus one ``where`` per step.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from disttrace.algorithms._rtrl import RTRL, RTRLLearner
from disttrace.checks import non_negative_int, positive_int
from disttrace.compiler import run_step

__all__ = ["SnAp", "SnApLearner"]

# Probes of the Jacobian pattern (each with every batch row): scales of the normals the
# hidden values and inputs are drawn from, and of the parameter perturbation.
_H_SCALES = (0.5, 1.0, 2.0, 4.0)
_THETA_SCALES = (0.1, 1.0)
_N_PROBES = len(_H_SCALES) * len(_THETA_SCALES)


class SnApLearner(RTRLLearner):
    """RTRL with the influence matrix masked to the SnAp-n pattern (see the module docstring).

    Attributes:
      n: the number of steps of the pattern.
      depth: the coupling depth, the first k with ``S_{k+1} = S_k`` (SnAp-n is RTRL for
        n >= depth), or ``None`` when the pattern still grows after n steps.
      kept: fraction of the influence entries the pattern keeps.

    Raises:
      ValueError: as :class:`~disttrace.algorithms._rtrl.RTRLLearner`.
    """

    who = "SnAp"

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        super().__init__(model, graph, binding, spec, loss_fn)
        self.n = spec.n
        self._masks: dict = {}
        jac, imm = self._patterns()
        pattern, self.depth = imm, None
        for k in range(1, self.n + 1):  # pattern is S_k; one more product tells whether it is the fixed point
            grown = ((jac.astype(np.float32) @ pattern.astype(np.float32)) > 0) | imm
            if np.array_equal(grown, pattern):
                self.depth = k
                break
            if k < self.n:
                pattern = grown
        self.kept = float(pattern.mean()) if pattern.size else 1.0
        rows = np.cumsum((0,) + self._hidden_sizes)
        col = 0
        for _, name in self.leaves:
            size = int(np.prod(self._leaf_shapes[name], dtype=np.int64))
            for i in range(len(self._hidden_sizes)):
                block = pattern[rows[i] : rows[i + 1], col : col + size]
                self._masks[(name, i)] = None if block.all() else block
            col += size

    def _mask(self, name: str, i: int):
        return self._masks.get((name, i))

    def _patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pat(J) (H, H), pat(I) (H, |θ|))`` as boolean arrays, over every probe and row."""
        params, hidden, aux = self.binding.values()
        theta = jax.tree.leaves(params)
        hidden = [hidden[p] for p in self.graph.hidden_paths]
        aux_leaves = jax.tree.leaves(aux)
        probe = jax.jit(functools.partial(self._probe, aux_leaves=aux_leaves))
        jac, imm = None, None
        key = jax.random.PRNGKey(0)
        for hs in _H_SCALES:
            for ts in _THETA_SCALES:
                key, sub = jax.random.split(key)
                j, i = probe(sub, theta, hidden, jnp.asarray(hs), jnp.asarray(ts))
                j, i = np.asarray(j), np.asarray(i)
                jac, imm = (j, i) if jac is None else (jac | j, imm | i)
        return jac, imm

    def _probe(self, key, theta, hidden, h_scale, theta_scale, aux_leaves):
        """The nonzero patterns of ``J`` and ``I`` at one random point (any over the batch)."""
        k_th, k_h, k_x = jax.random.split(key, 3)
        theta = list(theta)
        for n, (j, _) in enumerate(self.leaves):
            noise = jax.random.normal(jax.random.fold_in(k_th, n), jnp.shape(theta[j]), jnp.result_type(theta[j]))
            theta[j] = theta[j] + theta_scale.astype(noise.dtype) * noise
        hidden = [
            h_scale.astype(h.dtype) * jax.random.normal(jax.random.fold_in(k_h, n), h.shape, h.dtype)
            for n, h in enumerate(hidden)
        ]
        args = []
        for n, (shape, dtype) in enumerate(self.graph.arg_shapes):
            k = jax.random.fold_in(k_x, n)
            if jnp.issubdtype(dtype, jnp.inexact):
                args.append(h_scale.astype(dtype) * jax.random.normal(k, shape, dtype))
            else:
                args.append(jax.random.bernoulli(k, 0.5, shape).astype(dtype))
        b = self.graph.batch_size
        # J: one JVP per hidden value (the same unit in every row)
        h_total = sum(self._hidden_sizes)
        step = lambda h: run_step(self.graph, theta, h, aux_leaves, args)[1]
        _, lin = jax.linearize(step, hidden)
        offsets = np.cumsum((0,) + self._hidden_sizes)

        def column(c):
            tan = [
                jnp.broadcast_to(jax.nn.one_hot(c - offsets[i], n, dtype=h.dtype), (b, n)).reshape(h.shape)
                for i, (n, h) in enumerate(zip(self._hidden_sizes, hidden))
            ]
            return jnp.concatenate([o.reshape(b, -1) for o in lin(tan)], axis=1)

        jcols = jax.vmap(column, out_axes=2)(jnp.arange(h_total))  # (B, H, H): [b, row, column]
        jac = jnp.any(jcols != 0, axis=0)
        # I: RTRL's propagation from M = 0, unmasked
        zero = self._zero_m()
        m = self._propagate(theta, hidden, aux_leaves, args, zero)  # unmasked: no mask is set yet
        blocks = [jnp.concatenate([c for c in m[name]], axis=1) for _, name in self.leaves]
        imm = jnp.concatenate(blocks, axis=2) if blocks else jnp.zeros((b, h_total, 0), bool)
        return jac, jnp.any(imm != 0, axis=0)


@dataclasses.dataclass(frozen=True, init=False)
class SnAp:
    """SnAp-n: RTRL's influence matrix kept on its n-step sparsity pattern.

    Args:
      n: steps of the pattern (>= 1): 1 keeps the immediate entries, ``n >=`` the
        model's coupling depth is RTRL.
      memory_budget: bytes the (densely stored) influence matrix may take, as for
        :class:`~disttrace.algorithms._rtrl.RTRL`.

    Raises:
      ValueError: on a bad ``n`` or ``memory_budget``.
    """

    n: int
    memory_budget: int

    def __init__(self, n: int = 2, memory_budget: int = 2**30):
        object.__setattr__(self, "n", positive_int("SnAp", "n", n))
        object.__setattr__(self, "memory_budget", non_negative_int("SnAp", "memory_budget", memory_budget))

    def learner(self, model, graph, binding, loss_fn=None) -> SnApLearner:
        """The learner ``disttrace.compile`` returns for this spec."""
        return SnApLearner(model, graph, binding, self, loss_fn)

    rules = RTRL.rules
