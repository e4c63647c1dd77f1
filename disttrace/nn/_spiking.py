"""Spiking neurons and a current-based synapse without weights of their own, with
brainpy/braintrace-style constructors: they take an input current from a preceding
layer (``Linear``, ``Conv2d``, ...), whose weights then learn online.

Time constants are in simulation steps (``dt = 1``) or ``brainunit`` time quantities
(converted with ``brainstate.environ.get_dt()``); the decay is ``α = exp(-1/τ)`` and
the input is integrated with the exponential Euler rule. The membrane potential is
stored *before* the reset: the previous spike is recomputed from it and the reset
applied at the start of the next step, so a spike read at step t still carries its
surrogate gradient. Spikes are ``spk_fun((V - θ) / (V_th - V_reset))`` with ``θ = V_th``
(ALIF: ``θ_t = V_th + β a_t``).

Per-neuron parameters named in ``learnable`` (``'tau'``, ``'V_th'``, ``'tau_a'``,
``'beta'``, ...) are ``ParamState``s of the neuron shape, applied through
``ops.element_wise``, so they learn online with an exact trace.

.. math::
    \\text{IF:}\\quad V_t = V'_{t-1} + R x_t \\qquad
    \\text{LIF:}\\quad V_t = V_{rest} + α (V'_{t-1} - V_{rest}) + (1-α) R x_t

    \\text{ALIF:}\\quad a_t = ρ a_{t-1} + s_{t-1},\\ θ_t = V_{th} + β a_t,\\
    V_t = V_{rest} + α (V'_{t-1} - V_{rest}) + (1-α) R x_t

    \\text{Expon:}\\quad g_t = α g_{t-1} + x_t

with ``V' = V - (θ - V_reset) s`` (soft reset) or ``V' = V - (V - V_reset) s`` (hard
reset, the spike's gradient stopped as in brainpy).
"""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._surrogate import SURROGATES, spike
from disttrace.ops import element_wise

__all__ = ["ALIF", "IF", "LIF", "Expon"]


def _spike_fn(who, spk_fun) -> Callable:
    if callable(spk_fun):
        return spk_fun
    if spk_fun in SURROGATES:
        return lambda x: spike(x, spk_fun)
    raise ValueError(f"{who}: argument 'spk_fun' must be one of {SURROGATES} or a callable; got {spk_fun!r}")


class _PerNeuron(brainstate.nn.Module):
    """Holds per-neuron constants, some of them learnable through ``element_wise``."""

    def __init__(self, in_size, learnable, constants: dict, name):
        super().__init__(name=name)
        who = type(self).__name__
        self.in_size = check.size(who, "in_size", in_size)
        self.out_size = self.in_size
        learnable = (learnable,) if isinstance(learnable, str) else tuple(learnable)
        unknown = sorted(set(learnable) - set(constants))
        if unknown:
            raise ValueError(f"{who}: argument 'learnable' names {unknown}; allowed: {sorted(constants)}")
        self.learnable = learnable
        self._constants = {}
        for key, value in constants.items():
            if key in learnable:
                setattr(self, key, brainstate.ParamState(jnp.full(self.in_size, value)))
            else:
                self._constants[key] = value

    def _get(self, key, fn=None):
        """The (possibly learnable) constant ``key``, transformed by ``fn``."""
        fn = (lambda v: v) if fn is None else fn
        if key in self.learnable:
            return element_wise(getattr(self, key).value, fn)
        return fn(jnp.asarray(self._constants[key]))

    def _shape(self, batch_size):
        return self.in_size if batch_size is None else (batch_size, *self.in_size)

    def _check(self, x):
        check.trailing(type(self).__name__, x, self.in_size)


def _decay(tau):
    return jnp.exp(-1.0 / tau)


class _Neuron(_PerNeuron):
    def __init__(self, in_size, R, V_th, V_reset, V_rest, spk_fun, spk_reset, learnable, extra, name):
        who = type(self).__name__
        if spk_reset not in ("soft", "hard"):
            raise ValueError(f"{who}: argument 'spk_reset' must be 'soft' or 'hard'; got {spk_reset!r}")
        if not V_th > V_reset:
            raise ValueError(f"{who}: argument 'V_th' must exceed 'V_reset' ({V_reset!r}); got {V_th!r}")
        consts = {"R": float(R), "V_th": float(V_th), "V_reset": float(V_reset), **extra}
        if V_rest is not None:  # IF has no resting potential
            consts["V_rest"] = float(V_rest)
        super().__init__(in_size, learnable, consts, name)
        self.spk_reset = spk_reset
        self.spk_fun = _spike_fn(who, spk_fun)

    def _v0(self, batch_size):
        v_rest = self.V_rest.value if "V_rest" in self.learnable else self._constants.get("V_rest", 0.0)
        return jnp.broadcast_to(jnp.asarray(v_rest), self._shape(batch_size)) * 1.0

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(self._v0(batch_size))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``V`` back to ``V_rest`` in the existing state (``brainstate.nn.reset_all_states``,
        also inside ``brainstate.transform.jit``)."""
        self.V.value = self._v0(batch_size)

    def _fire(self, v, threshold):
        return self.spk_fun((v - threshold) / (self._get("V_th") - self._get("V_reset")))

    def _reset(self, v, s, threshold):
        v_reset = self._get("V_reset")
        if self.spk_reset == "soft":
            return v - (threshold - v_reset) * s
        return v - (v - v_reset) * jax.lax.stop_gradient(s)

    def get_spike(self):
        """The spikes of the last step, from the stored potential."""
        return self._fire(self.V.value, self._get("V_th"))


class IF(_Neuron):
    """Integrate-and-fire neurons: ``V_t = V'_{t-1} + R x_t`` (no leak).

    Args:
      in_size: neuron shape N (int or tuple).
      R: input resistance.
      V_th, V_reset: threshold and reset potential.
      spk_fun: surrogate name (``nn.SURROGATES``) or a callable ``x -> spikes``.
      spk_reset: ``'soft'`` (subtract) or ``'hard'`` (to ``V_reset``).
      learnable: names among ``('R', 'V_th', 'V_reset')`` to learn per neuron.
      name: module name.

    State: ``V`` (B, *N) (or (*N) unbatched). Input current (B, *N) -> spikes (B, *N).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> n = dt.nn.IF(4)
      >>> brainstate.nn.init_all_states(n, batch_size=2)
      IF(...)
      >>> n(jnp.ones((2, 4))).shape
      (2, 4)
    """

    def __init__(self, in_size, R=1.0, V_th=1.0, V_reset=0.0, spk_fun="fast_sigmoid", spk_reset="soft",
                 learnable=(), name=None):
        super().__init__(in_size, R, V_th, V_reset, None, spk_fun, spk_reset, learnable, {}, name)

    def update(self, x):
        self._check(x)
        v = self.V.value
        v = self._reset(v, self._fire(v, self._get("V_th")), self._get("V_th"))
        self.V.value = v + self._get("R") * x
        return self.get_spike()


class LIF(_Neuron):
    """Leaky integrate-and-fire neurons (exponential Euler; see the module docstring).

    Args:
      in_size: neuron shape N.
      R: input resistance.
      tau: membrane time constant (steps or a time quantity).
      V_th, V_reset, V_rest: threshold, reset and resting potentials.
      spk_fun, spk_reset: as :class:`IF`.
      learnable: names among ``('R', 'tau', 'V_th', 'V_reset', 'V_rest')``.
      name: module name.

    State: ``V`` (B, *N). Input current (B, *N) -> spikes (B, *N).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> n = dt.nn.LIF(4, tau=10.0, learnable=("tau",))
      >>> brainstate.nn.init_all_states(n, batch_size=2)
      LIF(...)
      >>> n(jnp.ones((2, 4))).shape
      (2, 4)
    """

    def __init__(self, in_size, R=1.0, tau=5.0, V_th=1.0, V_reset=0.0, V_rest=0.0, spk_fun="fast_sigmoid",
                 spk_reset="soft", learnable=(), name=None):
        tau = check.steps(type(self).__name__, "tau", tau)
        super().__init__(in_size, R, V_th, V_reset, V_rest, spk_fun, spk_reset, learnable, {"tau": tau}, name)

    def _integrate(self, v, x):
        alpha = self._get("tau", _decay)
        v_rest = self._get("V_rest")
        return v_rest + alpha * (v - v_rest) + (1.0 - alpha) * self._get("R") * x

    def update(self, x):
        self._check(x)
        v = self.V.value
        th = self._get("V_th")
        v = self._reset(v, self._fire(v, th), th)
        self.V.value = self._integrate(v, x)
        return self.get_spike()


class ALIF(LIF):
    """Adaptive LIF: the threshold rises by ``beta`` per spike and decays with ``tau_a``.

    Args: as :class:`LIF`, plus ``tau_a`` (adaptation time constant) and ``beta``
      (adaptation strength); both may be ``learnable``.

    State: ``V`` and ``a`` (B, *N), one 2-state hidden group (D-RTRL keeps 2×2
    per-neuron Jacobian blocks, exactly).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> n = dt.nn.ALIF(4, tau=10.0, tau_a=50.0)
      >>> brainstate.nn.init_all_states(n, batch_size=2)
      ALIF(...)
      >>> n(jnp.ones((2, 4))).shape
      (2, 4)
    """

    def __init__(self, in_size, R=1.0, tau=5.0, tau_a=50.0, V_th=1.0, V_reset=0.0, V_rest=0.0, beta=0.5,
                 spk_fun="fast_sigmoid", spk_reset="soft", learnable=(), name=None):
        who = type(self).__name__
        extra = {"tau": check.steps(who, "tau", tau), "tau_a": check.steps(who, "tau_a", tau_a), "beta": float(beta)}
        _Neuron.__init__(self, in_size, R, V_th, V_reset, V_rest, spk_fun, spk_reset, learnable, extra, name)

    def init_state(self, batch_size=None, **kwargs):
        super().init_state(batch_size)
        self.a = brainstate.HiddenState(jnp.zeros(self._shape(batch_size)))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets ``V`` back to ``V_rest`` and the adaptation ``a`` to zero."""
        super().reset_state(batch_size)
        self.a.value = jnp.zeros(self._shape(batch_size))

    def _threshold(self, a):
        return self._get("V_th") + self._get("beta") * a

    def get_spike(self):
        return self._fire(self.V.value, self._threshold(self.a.value))

    def update(self, x):
        self._check(x)
        v, a = self.V.value, self.a.value
        th = self._threshold(a)
        s = self._fire(v, th)
        self.a.value = self._get("tau_a", _decay) * a + s
        self.V.value = self._integrate(self._reset(v, s, th), x)
        return self.get_spike()


class Expon(_PerNeuron):
    """Current-based exponential synapse: ``g_t = exp(-1/τ) g_{t-1} + x_t``.

    Args:
      in_size: shape N of the conductance (one per post-synaptic neuron).
      tau: decay time constant (steps or a time quantity).
      learnable: ``('tau',)`` to learn it per neuron.
      name: module name.

    State: ``g`` (B, *N). Input (B, *N) -> ``g_t`` (B, *N).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> syn = dt.nn.Expon(4, tau=8.0)
      >>> brainstate.nn.init_all_states(syn, batch_size=2)
      Expon(...)
      >>> syn(jnp.ones((2, 4))).shape
      (2, 4)
    """

    def __init__(self, in_size, tau=8.0, learnable=(), name=None):
        super().__init__(in_size, learnable, {"tau": check.steps("Expon", "tau", tau)}, name)

    def init_state(self, batch_size=None, **kwargs):
        self.g = brainstate.HiddenState(jnp.zeros(self._shape(batch_size)))

    def reset_state(self, batch_size=None, **kwargs):
        """Sets the conductance ``g`` back to zero."""
        self.g.value = jnp.zeros(self._shape(batch_size))

    def update(self, x):
        self._check(x)
        self.g.value = self._get("tau", _decay) * self.g.value + x
        return self.g.value


