"""``LRUCell``: the linear recurrent unit (Orvieto et al. 2023) with online-learned
parameters, in real arithmetic (see the class docstring).

Its recurrence is element-wise (a 2×2 rotation-and-decay block per complex unit), so
D-RTRL is exact for every parameter.
"""

from __future__ import annotations

import math

import brainstate
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._linear import Linear
from disttrace.nn._rnn import _check_size
from disttrace.ops import element_wise

__all__ = ["LRUCell"]

_init = brainstate.nn.init


def _lru_modulus(nu_log):
    return jnp.exp(-jnp.exp(nu_log))


class LRUCell(brainstate.nn.Module):
    """Linear recurrent unit (Orvieto et al. 2023, arXiv:2303.06349) in real arithmetic.

    .. math::
        λ = \\exp(-e^{ν} + i\\,e^{θ}),\\quad
        s_t = λ ∘ s_{t-1} + e^{γ} ∘ (x_t B),\\quad
        y_t = \\mathrm{Re}[s_t C] + D ∘ x_t

    with complex ``s = s_re + i s_im``, ``B = B_re + i B_im`` (H, N) and
    ``C = C_re + i C_im`` (N, H). The two real states form one 2-state hidden group
    with the per-neuron block ``|λ| [[cos φ, -sin φ], [sin φ, cos φ]]``, ``φ = e^θ``;
    ``ν``, ``θ``, ``γ`` (N,) and ``D`` (H,) go through ``ops.element_wise``, ``B`` and
    ``C`` through ``ops.matmul``. The recurrence is element-wise, so D-RTRL is exact.

    Initialisation as the paper: ``|λ|`` uniform on the ring ``[r_min, r_max]``, phase
    uniform on ``[0, max_phase]``, ``γ = log sqrt(1 - |λ|^2)``, ``B ~ N(0, 1/(2H))``,
    ``C ~ N(0, 1/N)`` (per real part), ``D ~ N(0, 1)``.

    Args:
      d_model: input and output size H (braintrace's name and order).
      d_hidden: number of complex hidden units N.
      r_min, r_max: range of ``|λ|``, ``0 <= r_min < r_max <= 1``.
      max_phase: largest initial phase, > 0.
      name: module name.

    Attributes: ``d_model``, ``d_hidden``, ``r_min``, ``r_max``, ``max_phase`` (as given).

    States: ``h_re``, ``h_im`` (B, N) or (N,). Input (B, H) or (H,); output ``y_t`` (B, H) or (H,).
    Parameters: ``nu_log``, ``theta_log``, ``gamma_log`` (N,); ``B_re``, ``B_im``
    ``{'weight': (H, N)}``; ``C_re``, ``C_im`` ``{'weight': (N, H)}``; ``D`` (H,).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> lru = dt.nn.LRUCell(3, 8)
      >>> brainstate.nn.init_all_states(lru, batch_size=2)
      LRUCell(...)
      >>> lru(jnp.ones((2, 3))).shape
      (2, 3)
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 6.28,
        name: str | None = None,
    ):
        super().__init__(name=name)
        h, n = _check_size("LRUCell", "d_model", d_model), _check_size("LRUCell", "d_hidden", d_hidden)
        r_min, r_max = check.number("LRUCell", "r_min", r_min), check.number("LRUCell", "r_max", r_max)
        max_phase = check.number("LRUCell", "max_phase", max_phase, low=0.0, low_open=True)
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(
                f"LRUCell: arguments 'r_min', 'r_max' must satisfy 0 <= r_min < r_max <= 1; got {r_min!r}, {r_max!r}"
            )
        self.d_model, self.d_hidden = h, n
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase  # as braintrace stores them
        self.in_size, self.out_size = (h,), (h,)
        rand = brainstate.random
        nu_log = jnp.log(-0.5 * jnp.log(rand.uniform(size=(n,)) * (r_max**2 - r_min**2) + r_min**2))
        self.nu_log = brainstate.ParamState(nu_log)
        self.theta_log = brainstate.ParamState(jnp.log(max_phase * rand.uniform(size=(n,))))
        self.gamma_log = brainstate.ParamState(0.5 * jnp.log(1.0 - _lru_modulus(nu_log) ** 2))
        b_init, c_init = _init.Normal(scale=1.0 / math.sqrt(2 * h)), _init.Normal(scale=1.0 / math.sqrt(n))
        self.B_re = Linear(h, n, w_init=b_init, b_init=None)
        self.B_im = Linear(h, n, w_init=b_init, b_init=None)
        self.C_re = Linear(n, h, w_init=c_init, b_init=None)
        self.C_im = Linear(n, h, w_init=c_init, b_init=None)
        self.D = brainstate.ParamState(rand.normal(size=(h,)))

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Creates ``h_re``, ``h_im`` at zero, shape (batch_size, N) or (N,)."""
        lead = () if batch_size is None else (batch_size,)
        self.h_re = brainstate.HiddenState(jnp.zeros((*lead, self.d_hidden)))
        self.h_im = brainstate.HiddenState(jnp.zeros((*lead, self.d_hidden)))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        lead = () if batch_size is None else (batch_size,)
        self.h_re.value = jnp.zeros((*lead, self.d_hidden))
        self.h_im.value = jnp.zeros((*lead, self.d_hidden))

    def update(self, x):
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.d_model:
            raise ValueError(
                f"LRUCell: argument 'x' must have shape (B, {self.d_model}) or ({self.d_model},); got {x.shape}"
            )
        modulus = element_wise(self.nu_log.value, _lru_modulus)
        phase = element_wise(self.theta_log.value, jnp.exp)
        gamma = element_wise(self.gamma_log.value, jnp.exp)
        a, b = modulus * jnp.cos(phase), modulus * jnp.sin(phase)
        s_re, s_im = self.h_re.value, self.h_im.value
        self.h_re.value = a * s_re - b * s_im + gamma * self.B_re(x)
        self.h_im.value = b * s_re + a * s_im + gamma * self.B_im(x)
        return self.C_re(self.h_re.value) - self.C_im(self.h_im.value) + element_wise(self.D.value) * x
