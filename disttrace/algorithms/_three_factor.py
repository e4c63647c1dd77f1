"""Three-factor learning: an eligibility trace times a modulator (the third factor).

The two local factors, presynaptic input and postsynaptic sensitivity, make
D-RTRL's eligibility trace; a global, user-supplied modulator ``m_t`` (a reward, a
reward-prediction error, a task cue) replaces the learning signal:

.. math::
    E_t = D_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t, \\qquad
    g_t(W) = \\sum_b \\sum_k m_t[b] \\, E_t[b,k]

summed over each weight's neurons by the op's contraction (``dr_contract``) — with
``m_t`` broadcast over states and neurons. As braintrace 0.2.8's ``ThreeFactor``,
the modulator *replaces* ``∂L/∂h`` (it does not multiply it): so with the modulator
equal to the learning signal the rule is e-prop's symmetric rule (``_eprop``), which
is D-RTRL where the hidden Jacobian is block-diagonal and the readout memoryless.
A scalar modulator is that learning signal wherever ``∂L_t/∂h_t`` is a constant
(a loss linear in the hidden values: ``tests/algorithms/test_three_factor.py``
checks the rule equals BPTT there).

Weights of trace ops that reach a hidden state learn only through ``m_t E_t``;
every other parameter (a memoryless readout) gets its exact same-step gradient of
the loss (braintrace gives it zero, F-33): the readout learns the task while the
modulator drives the hidden weights.

The modulator is, per step,

- a number or a (B,) array (one value per batch row): a standing modulator;
- a callable ``modulator(t, loss, out)`` of the steps seen ``t`` (() int32, counted
  since the traces started, across calls), this step's loss (()) and the model
  output, returning a number, a () or a (B,) array. A per-step sequence of rewards
  ``r`` (T,) or (T, B) is ``lambda t, loss, out: r[t]``. It runs inside the jitted
  step: use ``jax.numpy``.

Memory: D-RTRL's, O(B·K·|W|) per (op, group). Time: D-RTRL's (plus the
bypass signals ``_factors`` computes for "io" rules, which this rule ignores: the
modulator replaces them too). Chunked form: none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.algorithms._eprop import EPropRule
from disttrace.algorithms._online import OnlineLearner

__all__ = ["ThreeFactor", "ThreeFactorLearner"]


class ThreeFactorLearner(OnlineLearner):
    """The online learner of :class:`ThreeFactor`: each step's learning signals are the
    modulator (see the module docstring). Use ``disttrace.compile`` to make one.

    Raises:
      ValueError: if a standing modulator is neither a scalar nor a (B,) array.
    """

    def __init__(self, model, graph, binding, spec, loss_fn=None):
        super().__init__(model, graph, binding, spec, loss_fn)
        if not callable(spec.modulator):
            self._check(jnp.asarray(spec.modulator))

    def _check(self, m: jax.Array) -> jax.Array:
        b = self.graph.batch_size
        if m.ndim > 1 or (m.ndim == 1 and m.shape[0] != b) or not jnp.issubdtype(m.dtype, jnp.number):
            raise ValueError(
                f"ThreeFactor: the modulator must be a number or a (B,) = ({b},) array (one value per batch row), "
                f"or a callable returning one; got dtype {m.dtype} and shape {m.shape}"
            )
        return m

    def _factors(self, loss_of, theta, state, seq_t, y_grad_ops=frozenset()):
        f = super()._factors(loss_of, theta, state, seq_t, y_grad_ops)
        mod = self.spec.modulator
        m = self._check(jnp.asarray(mod(state.t, f.loss, f.out) if callable(mod) else mod))

        def spread(like):
            v = m.astype(like.dtype)
            v = v.reshape((-1,) + (1,) * (like.ndim - 1)) if v.ndim else v
            return jnp.broadcast_to(v, like.shape)

        signal = {g: spread(d) for g, d in f.delta_new.items()}
        return f._replace(delta_new=signal, delta_bypass={}, y_bypass={})


@dataclasses.dataclass(frozen=True, init=False, eq=False)  # eq/hash by identity: the modulator may be an array
class ThreeFactor:
    """Three-factor rule: D-RTRL's eligibility traces times a modulator (see the module docstring).

    Args:
      modulator: a number, a (B,) array, or ``modulator(t, loss, out)``; required.

    Raises:
      ValueError: if ``modulator`` is missing (there is no fallback to the loss
        gradient: use ``EProp`` for that).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> net = dt.nn.LIFLayer(3, 4)
      >>> spec = dt.ThreeFactor(modulator=lambda t, loss, out: -loss)   # reward = -loss
      >>> learner = dt.compile(net, spec, jnp.zeros((2, 3)), batch_size=2)
    """

    modulator: Callable | float | jax.Array

    def __init__(self, modulator=None):
        if modulator is None:
            raise ValueError(
                "ThreeFactor: argument 'modulator' is required: a number, a (B,) array or a callable "
                "modulator(t, loss, out); for the loss gradient as learning signal use disttrace.EProp"
            )
        if not callable(modulator):
            m = jnp.asarray(modulator)
            if m.ndim > 1 or not jnp.issubdtype(m.dtype, jnp.number):
                raise ValueError(
                    f"ThreeFactor: argument 'modulator' must be a number, a (B,) array or a callable; got dtype "
                    f"{m.dtype} and shape {m.shape}"
                )
        object.__setattr__(self, "modulator", modulator)

    def learner(self, model, graph, binding, loss_fn=None) -> ThreeFactorLearner:
        """The learner ``disttrace.compile`` returns for this spec."""
        return ThreeFactorLearner(model, graph, binding, self, loss_fn)

    def rules(self, graph) -> tuple:
        """An e-prop rule (symmetric, no filter) per op reaching a hidden state; the
        learner feeds it the modulator as its learning signal."""
        return tuple(EPropRule(op, graph) if op.groups else None for op in graph.ops)
