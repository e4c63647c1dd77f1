"""Recurrent cells whose weights learn online: every weight goes through a trace op.

Dense weights are applied with ``ops.matmul`` (through :class:`~disttrace.nn.Linear`),
per-neuron vectors (URLSTM's forget bias, LRU's ν, θ, γ, D) with ``ops.element_wise``.
Constructors, parameter layouts and formulas follow ``brainstate.nn`` where brainstate
has the cell (``ValinaRNNCell``, ``GRUCell``, ``MGUCell``, ``LSTMCell``, ``URLSTMCell``)
and the cited paper otherwise.

**Fused gate weights.** brainstate keeps one matrix for several gates (GRU: ``Wrz``
(I+N, 2N); LSTM/URLSTM: ``W`` (I+N, 4N)) and splits the *output* of one matmul.
A slice of an op output is not element-wise from the op's point of view (its output
(B, kN) no longer matches the hidden shape (B, N)), so the compiler would reject it.
These cells therefore slice the *weight*: gate ``k`` is ``matmul([x, h], W[:, kN:(k+1)N],
b[kN:(k+1)N])``. The parameters are brainstate's, the output is the same, and every
gate is its own trace op whose output has the hidden shape; the gradient of each
weight slice is mapped back to the fused parameter by the learner's weight VJP.
(braintrace 0.2.8 keeps one ``Linear`` per gate instead — GRU ``Wz, Wr, Wh``, LSTM
``Wi, Wg, Wf, Wo``, URLSTM ``Wf, Wr, Wu, Wo`` — so its parameters load here by
concatenating the gate columns.) braintrace's per-gate names exist here too, as
read/write views of the fused parameter's columns (*gate views*): ``cell.Wz.weight.value``
reads gate z's ``{'weight': (I+N, N), 'bias': (N,)}``, assigning it writes those columns,
and ``cell.Wz(xh)`` applies the gate alone. They are properties, not attributes, so the
compiler, ``brainstate.graph`` and checkpoints see only the fused parameters.

**Which weights get traces.** A gate that reaches a hidden state element-wise keeps a
trace. The GRU's reset gate ``r`` reaches ``h`` only through ``Wh``'s op (``r ∘ h`` is
its input), so the ``r`` columns of ``Wrz`` get their exact same-step gradient and the
compiler warns ("same-step"); braintrace 0.2.8 gives them exactly zero.
D-RTRL drops every path from one neuron to another through a trace op (the diagonal
approximation), so it is exact for MiniGRU, MiniLSTM and LRUCell, whose recurrence is
element-wise (their matmuls read ``x_t`` only), and approximate for the other cells.
For those three the true Jacobian ``J_t = ∂h_t/∂h_{t-1}`` is per neuron — ``diag(1 - z_t)``
(MiniGRU), ``diag(f_t / (f_t + i_t))`` (MiniLSTM), the 2×2 block ``|λ| R(φ)`` (LRU) — so the
trace's ``D_t`` is ``J_t`` and ``E_t = D_t ∘ E_{t-1} + (∂h_t/∂y_t) ⊗ x_t`` is the RTRL
sensitivity itself.

=================  =================  ======================================  =======
cell               states (group)     parameters                              D-RTRL
=================  =================  ======================================  =======
ValinaRNNCell      h                  W                                       approx.
GRUCell            h                  Wrz (r: same-step only), Wh             approx.
MGUCell            h                  Wf, Wh                                  approx.
LSTMCell           c, h (one group)   W (i, g, f, o)                          approx.
URLSTMCell         c, h (one group)   W (f, r, u, o), bias                    approx.
MinimalRNNCell     h                  phi, W_u                                approx.
CFNCell            h                  Wf, Wi, Wh                              approx.
MiniGRU            h                  W_z, W_x                                exact
MiniLSTM           h                  W_f, W_i, W_x                           exact
LRUCell            h_re, h_im (one)   nu_log, theta_log, gamma_log, B_*,      exact
                                      C_*, D
=================  =================  ======================================  =======
"""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._linear import Linear, _apply_2d
from disttrace.ops import element_wise, matmul

__all__ = [
    "CFNCell",
    "GRUCell",
    "LSTMCell",
    "MGUCell",
    "MiniGRU",
    "MiniLSTM",
    "MinimalRNNCell",
    "URLSTMCell",
    "ValinaRNNCell",
]

_init = brainstate.nn.init
# Shared default initializers (stateless: they draw from brainstate.random when called).
_ZERO, _ORTHOGONAL, _XAVIER = _init.ZeroInit(), _init.Orthogonal(), _init.XavierNormal()

# Element-wise activations by name (resolved on brainstate.nn, as brainstate's cells do).
# Softmax-like functions mix neurons and would break the diagonal structure.
_ACTIVATIONS = frozenset(
    """tanh relu sigmoid silu swish softplus soft_sign elu leaky_relu gelu hard_tanh celu selu relu6
    hard_sigmoid hard_silu hard_swish log_sigmoid mish squareplus tanh_shrink""".split()
)


def _check_size(who: str, arg: str, v) -> int:
    """An int, or brainstate's size tuple whose last entry counts the features."""
    return check.size(who, arg, v)[-1]


def _check_init(who: str, arg: str, v, allow_none: bool = False) -> None:
    if (v is None and allow_none) or callable(v) or hasattr(v, "shape"):
        return
    what = "an initializer (e.g. brainstate.nn.init.Orthogonal()) or an array" + (", or None" if allow_none else "")
    raise ValueError(f"{who}: argument {arg!r} must be {what}; got {v!r}")


def _activation(who: str, activation) -> Callable:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"{who}: argument 'activation' must be a callable or one of {sorted(_ACTIVATIONS)}; got {activation!r}"
            )
        return getattr(brainstate.nn, activation)
    if callable(activation):
        return activation
    raise ValueError(f"{who}: argument 'activation' must be a string or a callable; got {activation!r}")


def _blocks(layer: Linear, x, n: int, k: int) -> list:
    """``[x W_0 + b_0, ..., x W_{k-1} + b_{k-1}]`` for the k column blocks of ``layer``,
    one trace op each (see the module docstring on fused gate weights)."""
    w = layer.weight.value
    weight, bias = w["weight"], w.get("bias")
    cols = lambda a, i: None if a is None else a[..., i * n : (i + 1) * n]
    return [matmul(x, cols(weight, i), cols(bias, i)) for i in range(k)]


class _GateParam:
    """The ``.weight`` of a :class:`_GateView`: ``value`` reads and writes the gate's
    columns of the fused ``ParamState``."""

    def __init__(self, view: _GateView):
        self._view = view

    @property
    def value(self) -> dict:
        v = self._view
        return {key: a[..., v.columns] for key, a in v.fused.weight.value.items()}

    @value.setter
    def value(self, new) -> None:
        v = self._view
        fused = v.fused.weight.value
        if not isinstance(new, dict) or set(new) != set(fused):
            raise ValueError(
                f"{v.name}: the gate's weight value must be a dict with keys {sorted(fused)}; got "
                f"{sorted(new) if isinstance(new, dict) else type(new).__name__}"
            )
        out = {}
        for key, a in fused.items():
            b = jnp.asarray(new[key])
            want = a[..., v.columns].shape
            if b.shape != want:
                raise ValueError(f"{v.name}: the gate's {key!r} must have shape {want}; got {b.shape}")
            out[key] = a.at[..., v.columns].set(b.astype(a.dtype))
        v.fused.weight.value = out


class _GateView:
    """One gate of a fused-gate cell under braintrace 0.2.8's per-gate ``Linear`` name.

    A view, not a layer: it owns no state; ``weight.value`` reads (and, assigned, writes)
    columns ``k·N:(k+1)·N`` of the fused :class:`~disttrace.nn.Linear`, and calling it
    applies that gate alone (one ``ops.matmul``, as the cell does).

    Attributes:
      fused: the cell's fused ``Linear`` (``Wrz`` or ``W``).
      columns: the gate's column slice of it.
      name: ``'<Cell>.<gate name>'``, for messages.
      in_size, out_size: (I+N,), (N,).
    """

    def __init__(self, fused: Linear, k: int, n: int, name: str):
        self.fused, self.columns, self.name = fused, slice(k * n, (k + 1) * n), name
        self.in_size, self.out_size = fused.in_size, (n,)
        self.weight = _GateParam(self)

    def __call__(self, x):
        x = jnp.asarray(x)
        check.features(self.name, x, self.in_size[-1])
        value = self.weight.value
        return _apply_2d(lambda v: matmul(v, value["weight"], value.get("bias")), x, self.in_size[-1])

    def __repr__(self):
        return f"GateView({self.name}, columns {self.columns.start}:{self.columns.stop})"


def _gate(fused: str, k: int, gate: str) -> property:
    """A read-only property: braintrace's per-gate ``Linear`` ``gate`` as a :class:`_GateView`
    of block ``k`` of the fused ``Linear`` attribute ``fused``."""

    def get(self) -> _GateView:
        return _GateView(getattr(self, fused), k, self.num_out, f"{type(self).__name__}.{gate}")

    return property(get, doc=f"braintrace's ``{gate}``: a view of gate block {k} of ``{fused}`` (see the module docstring).")


class _Cell(brainstate.nn.Module):
    """Sizes, hidden states of shape (N,) per sample, input checks."""

    _state_names: tuple[str, ...] = ("h",)

    def __init__(self, in_size, out_size, state_init, name):
        super().__init__(name=name)
        who = type(self).__name__
        self.num_in = _check_size(who, "in_size", in_size)
        self.num_out = _check_size(who, "out_size", out_size)
        _check_init(who, "state_init", state_init)
        self.in_size, self.out_size = (self.num_in,), (self.num_out,)
        self._state_initializer = state_init

    def _linear(self, n_in, n_out, w_init, b_init):
        who = type(self).__name__
        _check_init(who, "w_init", w_init)
        _check_init(who, "b_init", b_init, allow_none=True)
        return Linear(n_in, n_out, w_init=w_init, b_init=b_init)

    def _state_value(self, batch_size):
        return _init.param(self._state_initializer, (self.num_out,), batch_size)

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Creates the hidden states, shape (batch_size, N), or (N,) without a batch."""
        for s in self._state_names:
            setattr(self, s, brainstate.HiddenState(self._state_value(batch_size)))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        for s in self._state_names:
            getattr(self, s).value = self._state_value(batch_size)

    def _check_x(self, x):
        n = self.num_in
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != n:
            raise ValueError(f"{type(self).__name__}: argument 'x' must have shape (B, {n}) or ({n},); got {x.shape}")
        return x

    def _xh(self, x):
        return jnp.concatenate([self._check_x(x), self.h.value], axis=-1)


class ValinaRNNCell(_Cell):
    """Vanilla RNN cell (brainstate's ``ValinaRNNCell``, spelling included).

    .. math::
        h_t = φ([x_t, h_{t-1}] W + b)

    Args:
      in_size: input size I.
      out_size: hidden size N.
      state_init: initializer of ``h`` (default zeros).
      w_init: initializer of ``W`` (I+N, N) (default Xavier normal).
      b_init: initializer of ``b`` (N,) (default zeros); ``None`` for no bias.
      activation: φ, a name (``'relu'``, ``'tanh'``, ...) or an element-wise callable
        (default ``'relu'``, as brainstate).
      name: module name.

    State: ``h`` (B, N) or (N,). Input ``x`` (B, I) or (I,); output ``h_t``.
    Parameters: ``W.weight = {'weight': (I+N, N), 'bias': (N,)}``.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.ValinaRNNCell(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      ValinaRNNCell(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        state_init=_ZERO,
        w_init=_XAVIER,
        b_init=_ZERO,
        activation: str | Callable = "relu",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.activation = _activation("ValinaRNNCell", activation)
        self.W = self._linear(self.num_in + self.num_out, self.num_out, w_init, b_init)

    def update(self, x):
        self.h.value = self.activation(self.W(self._xh(x)))
        return self.h.value


class _GRUStyle(_Cell):
    """The update shared by GRUCell and MGUCell (MGU is a GRU whose reset and update gates
    are one gate, Zhou et al. 2016):

    .. math::
        \\tilde h = φ([x_t, r ∘ h_{t-1}] W_h + b_h),\\quad h_t = (1 - z) ∘ h_{t-1} + z ∘ \\tilde h

    A subclass builds ``Wh`` (I+N, N) and ``activation`` and defines ``_gates([x_t, h_{t-1}])
    -> (r, z)``, each (B, N) or (N,).
    """

    def _gates(self, xh) -> tuple:
        raise NotImplementedError

    def update(self, x):
        x, h = self._check_x(x), self.h.value
        r, z = self._gates(jnp.concatenate([x, h], axis=-1))
        cand = self.activation(self.Wh(jnp.concatenate([x, r * h], axis=-1)))
        self.h.value = (1.0 - z) * h + z * cand
        return self.h.value


class GRUCell(_GRUStyle):
    """Gated recurrent unit (Cho et al. 2014, arXiv:1406.1078) as brainstate's ``GRUCell``.

    .. math::
        [r, z] = σ([x_t, h_{t-1}] W_{rz} + b_{rz}),\\quad
        \\tilde h = φ([x_t, r ∘ h_{t-1}] W_h + b_h),\\quad
        h_t = (1 - z) ∘ h_{t-1} + z ∘ \\tilde h

    The ``r`` columns of ``W_rz`` reach ``h`` only through ``W_h``'s op: they get their
    exact same-step gradient and compiling warns "same-step" (see the module docstring).

    Args:
      in_size: input size I.
      out_size: hidden size N.
      w_init: initializer of ``Wrz`` (I+N, 2N) and ``Wh`` (I+N, N) (default orthogonal).
      b_init: initializer of the biases (default zeros); ``None`` for no bias.
      state_init: initializer of ``h`` (default zeros).
      activation: φ (default ``'tanh'``).
      name: module name.

    State: ``h`` (B, N) or (N,). Input (B, I) or (I,); output ``h_t``.
    Parameters: ``Wrz.weight = {'weight': (I+N, 2N), 'bias': (2N,)}`` (``r`` first),
    ``Wh.weight = {'weight': (I+N, N), 'bias': (N,)}``. braintrace's ``Wr``, ``Wz`` are
    gate views of ``Wrz``'s two blocks.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> gru = dt.nn.GRUCell(3, 4)
      >>> brainstate.nn.init_all_states(gru, batch_size=2)
      GRUCell(...)
      >>> gru(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_ORTHOGONAL,
        b_init=_ZERO,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.activation = _activation("GRUCell", activation)
        n_xh = self.num_in + self.num_out
        self.Wrz = self._linear(n_xh, 2 * self.num_out, w_init, b_init)
        self.Wh = self._linear(n_xh, self.num_out, w_init, b_init)

    Wr = _gate("Wrz", 0, "Wr")
    Wz = _gate("Wrz", 1, "Wz")

    def _gates(self, xh) -> tuple:
        r, z = (jax.nn.sigmoid(a) for a in _blocks(self.Wrz, xh, self.num_out, 2))
        return r, z


class MGUCell(_GRUStyle):
    """Minimal gated unit (Zhou et al. 2016, arXiv:1603.09420) as brainstate's ``MGUCell``.

    .. math::
        f = σ([x_t, h_{t-1}] W_f + b_f),\\quad
        \\tilde h = φ([x_t, f ∘ h_{t-1}] W_h + b_h),\\quad
        h_t = (1 - f) ∘ h_{t-1} + f ∘ \\tilde h

    Args: as :class:`GRUCell`. Parameters: ``Wf``, ``Wh``, each
    ``{'weight': (I+N, N), 'bias': (N,)}``. State: ``h`` (B, N) or (N,).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.MGUCell(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      MGUCell(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_ORTHOGONAL,
        b_init=_ZERO,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.activation = _activation("MGUCell", activation)
        n_xh = self.num_in + self.num_out
        self.Wf = self._linear(n_xh, self.num_out, w_init, b_init)
        self.Wh = self._linear(n_xh, self.num_out, w_init, b_init)

    def _gates(self, xh) -> tuple:
        f = jax.nn.sigmoid(self.Wf(xh))
        return f, f


class _LSTMStyle(_Cell):
    """What LSTMCell and URLSTMCell share: states ``c``, ``h`` (one 2-state hidden group), a
    fused ``W`` (I+N, 4N) applied as four gate ops (the last one the output gate ``o``), and

    .. math::
        h_t = σ(o) ∘ φ(c_t).

    A subclass defines ``_memory(a, b, d) -> c_t`` (B, N) or (N,) from the first three gate
    pre-activations, reading ``c_{t-1}`` from ``self.c``.
    """

    _state_names = ("c", "h")

    def __init__(self, in_size, out_size, w_init, b_init, state_init, activation, name):
        super().__init__(in_size, out_size, state_init, name)
        self.activation = _activation(type(self).__name__, activation)
        self.W = self._linear(self.num_in + self.num_out, 4 * self.num_out, w_init, b_init)

    def _memory(self, a, b, d):
        raise NotImplementedError

    def update(self, x):
        a, b, d, o = _blocks(self.W, self._xh(x), self.num_out, 4)
        c = self._memory(a, b, d)
        self.c.value = c
        self.h.value = jax.nn.sigmoid(o) * self.activation(c)
        return self.h.value


class LSTMCell(_LSTMStyle):
    """Long short-term memory (Zaremba et al. 2014) as brainstate's ``LSTMCell``.

    .. math::
        [i, g, f, o] = [x_t, h_{t-1}] W + b,\\quad
        c_t = σ(f + 1) ∘ c_{t-1} + σ(i) ∘ φ(g),\\quad h_t = σ(o) ∘ φ(c_t)

    (the +1 on the forget gate follows Jozefowicz et al. 2015, as brainstate). ``c`` and
    ``h`` form one 2-state hidden group.

    Args:
      in_size: input size I.
      out_size: hidden size N.
      w_init: initializer of ``W`` (I+N, 4N) (default Xavier normal).
      b_init: initializer of the bias (4N,) (default zeros); ``None`` for no bias.
      state_init: initializer of ``c`` and ``h`` (default zeros).
      activation: φ (default ``'tanh'``).
      name: module name.

    States: ``c``, ``h`` (B, N) or (N,). Input (B, I) or (I,); output ``h_t``.
    Parameters: ``W.weight = {'weight': (I+N, 4N), 'bias': (4N,)}``, gate order i, g, f, o;
    braintrace's ``Wi``, ``Wg``, ``Wf``, ``Wo`` are gate views of its blocks.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> lstm = dt.nn.LSTMCell(3, 4)
      >>> brainstate.nn.init_all_states(lstm, batch_size=2)
      LSTMCell(...)
      >>> lstm(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_XAVIER,
        b_init=_ZERO,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, w_init, b_init, state_init, activation, name)

    Wi = _gate("W", 0, "Wi")
    Wg = _gate("W", 1, "Wg")
    Wf = _gate("W", 2, "Wf")
    Wo = _gate("W", 3, "Wo")

    def _memory(self, i, g, f):
        return jax.nn.sigmoid(f + 1.0) * self.c.value + jax.nn.sigmoid(i) * self.activation(g)


def _logit_uniform(n: int):
    """``logit(U(1/N, 1 - 1/N))`` as brainstate; the range is kept non-empty for N = 1."""
    lo = min(1.0 / n, 0.5)
    u = brainstate.random.uniform(lo, 1.0 - lo, (n,))
    return -jnp.log(1.0 / u - 1.0)


class URLSTMCell(_LSTMStyle):
    """LSTM with uniform-initialised, untied forget/retention gates (Gu et al. 2020,
    "Improving the Gating Mechanism of Recurrent Neural Networks") as brainstate's
    ``URLSTMCell``.

    .. math::
        [f, r, u, o] = [x_t, h_{t-1}] W,\\quad
        \\hat f = σ(f + b),\\quad \\hat r = σ(r - b),\\quad
        g = 2 \\hat r ∘ \\hat f + (1 - 2 \\hat r) ∘ \\hat f^2,

        c_t = g ∘ c_{t-1} + (1 - g) ∘ φ(u),\\quad h_t = σ(o) ∘ φ(c_t)

    ``b`` (N,) is initialised to ``logit(U(1/N, 1 - 1/N))`` and learned through
    ``ops.element_wise``.

    Args:
      in_size: input size I.
      out_size: hidden size N.
      w_init: initializer of ``W`` (I+N, 4N) (default Xavier normal; ``W`` has no bias).
      state_init: initializer of ``c`` and ``h`` (default zeros).
      activation: φ (default ``'tanh'``).
      name: module name.

    States: ``c``, ``h`` (B, N) or (N,). Parameters: ``W.weight = {'weight': (I+N, 4N)}``
    (gate order f, r, u, o), ``bias`` (N,); braintrace's ``Wf``, ``Wr``, ``Wu``, ``Wo``
    are gate views of ``W``'s blocks.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.URLSTMCell(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      URLSTMCell(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_XAVIER,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, w_init, None, state_init, activation, name)
        self.bias = brainstate.ParamState(_logit_uniform(self.num_out))

    Wf = _gate("W", 0, "Wf")
    Wr = _gate("W", 1, "Wr")
    Wu = _gate("W", 2, "Wu")
    Wo = _gate("W", 3, "Wo")

    def _memory(self, f, r, u):
        b = element_wise(self.bias.value)
        f_gate, r_gate = jax.nn.sigmoid(f + b), jax.nn.sigmoid(r - b)
        g = 2.0 * r_gate * f_gate + (1.0 - 2.0 * r_gate) * f_gate**2
        return g * self.c.value + (1.0 - g) * self.activation(u)


class MinimalRNNCell(_Cell):
    """MinimalRNN (Chen 2017, arXiv:1711.06788).

    .. math::
        z_t = Φ(x_t),\\quad
        u_t = σ([z_t, h_{t-1}] W_u + b_u),\\quad
        h_t = u_t ∘ h_{t-1} + (1 - u_t) ∘ z_t

    with ``Φ(x) = activation(x W_x + b_x)`` by default (``activation`` defaults to
    ``'tanh'``, the paper's Φ), or ``Φ = phi`` when given.

    Args:
      in_size, out_size, w_init, b_init, state_init, name: as :class:`GRUCell`.
      activation: the activation of the default Φ.
      phi: braintrace's argument: a callable (a function or a module) mapping the input
        (B, I) or (I,) to the latent ``z`` (B, N) or (N,), used as Φ in place of the
        default (braintrace's default is a plain ``Linear``, without activation:
        ``phi=dt.nn.Linear(I, N)`` reproduces it). Weights inside ``phi`` learn online
        only if applied with disttrace ops (e.g. a :class:`~disttrace.nn.Linear`).

    Parameters: ``phi.weight = {'weight': (I, N), 'bias': (N,)}`` (the default Φ; a given
    ``phi`` keeps its own), ``W_u.weight = {'weight': (2N, N), 'bias': (N,)}``.
    State: ``h`` (B, N) or (N,).

    Raises:
      ValueError: on a bad argument; on a ``phi`` that is not callable, or given together
        with an ``activation`` other than the default (put it inside ``phi``); at the
        first step, if ``phi``'s output is not of the hidden state's shape.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.MinimalRNNCell(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      MinimalRNNCell(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_ORTHOGONAL,
        b_init=_ZERO,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        phi: Callable | None = None,
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, name)
        if phi is None:
            self.activation = _activation("MinimalRNNCell", activation)
            self.phi = self._linear(self.num_in, self.num_out, w_init, b_init)
        else:
            if not callable(phi):
                raise ValueError(f"MinimalRNNCell: argument 'phi' must be a callable (a function or a module); got {phi!r}")
            if not (isinstance(activation, str) and activation == "tanh"):
                raise ValueError(
                    f"MinimalRNNCell: argument 'activation' ({activation!r}) applies to the default phi only; with "
                    "phi given, z = phi(x): put the activation inside phi"
                )
            self.activation = None
            self.phi = phi
        self._default_phi = phi is None
        self.W_u = self._linear(2 * self.num_out, self.num_out, w_init, b_init)

    def update(self, x):
        h = self.h.value
        x = self._check_x(x)
        z = self.activation(self.phi(x)) if self._default_phi else self.phi(x)
        if jnp.shape(z) != jnp.shape(h):
            raise ValueError(
                f"MinimalRNNCell: phi must map the input {jnp.shape(x)} to the hidden state's shape {jnp.shape(h)}; "
                f"got {jnp.shape(z)}"
            )
        u = jax.nn.sigmoid(self.W_u(jnp.concatenate([z, h], axis=-1)))
        self.h.value = u * h + (1.0 - u) * z
        return self.h.value


class CFNCell(_Cell):
    """Chaos-free network (Laurent & von Brecht 2017, arXiv:1612.06212).

    .. math::
        θ_t = σ([x_t, h_{t-1}] W_f + b_f),\\quad η_t = σ([x_t, h_{t-1}] W_i + b_i),

        h_t = θ_t ∘ φ(h_{t-1}) + η_t ∘ φ(x_t W_h + b_h)

    Args: as :class:`GRUCell`. Parameters: ``Wf``, ``Wi`` ``{'weight': (I+N, N),
    'bias': (N,)}``, ``Wh`` ``{'weight': (I, N), 'bias': (N,)}``. State: ``h``.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.CFNCell(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      CFNCell(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init=_ORTHOGONAL,
        b_init=_ZERO,
        state_init=_ZERO,
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.activation = _activation("CFNCell", activation)
        n_xh = self.num_in + self.num_out
        self.Wf = self._linear(n_xh, self.num_out, w_init, b_init)
        self.Wi = self._linear(n_xh, self.num_out, w_init, b_init)
        self.Wh = self._linear(self.num_in, self.num_out, w_init, b_init)

    def update(self, x):
        x, h = self._check_x(x), self.h.value
        xh = jnp.concatenate([x, h], axis=-1)
        theta, eta = jax.nn.sigmoid(self.Wf(xh)), jax.nn.sigmoid(self.Wi(xh))
        self.h.value = theta * self.activation(h) + eta * self.activation(self.Wh(x))
        return self.h.value


class MiniGRU(_Cell):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

    .. math::
        z_t = σ(x_t W_z + b_z),\\quad \\tilde h_t = x_t W_x + b_x,\\quad
        h_t = (1 - z_t) ∘ h_{t-1} + z_t ∘ \\tilde h_t

    The gate reads the input only (the paper's point: the recurrence is element-wise
    and parallelisable), so D-RTRL is exact. braintrace 0.2.8's ``MiniGRU`` feeds
    ``[x, h]`` to the gate instead.

    Args:
      in_size: input size I.
      out_size: hidden size N.
      w_init: initializer of ``W_z``, ``W_x`` (I, N) (default orthogonal).
      b_init: initializer of the biases (default zeros); ``None`` for no bias.
      state_init: initializer of ``h`` (default zeros).
      name: module name.

    State: ``h`` (B, N) or (N,). Parameters: ``W_z``, ``W_x`` ``{'weight': (I, N), 'bias': (N,)}``.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.MiniGRU(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      MiniGRU(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self, in_size: int, out_size: int, w_init=_ORTHOGONAL, b_init=_ZERO, state_init=_ZERO, name: str | None = None
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.W_z = self._linear(self.num_in, self.num_out, w_init, b_init)
        self.W_x = self._linear(self.num_in, self.num_out, w_init, b_init)

    def update(self, x):
        x = self._check_x(x)
        z = jax.nn.sigmoid(self.W_z(x))
        self.h.value = (1.0 - z) * self.h.value + z * self.W_x(x)
        return self.h.value


class MiniLSTM(_Cell):
    """minLSTM (Feng et al. 2024, arXiv:2410.01201), with normalised gates.

    .. math::
        f_t = σ(x_t W_f + b_f),\\quad i_t = σ(x_t W_i + b_i),\\quad
        \\tilde h_t = x_t W_x + b_x,

        h_t = \\frac{f_t}{f_t + i_t} ∘ h_{t-1} + \\frac{i_t}{f_t + i_t} ∘ \\tilde h_t

    Gates read the input only, so D-RTRL is exact (braintrace 0.2.8's ``MiniLSTM``
    feeds ``[x, h]`` to the gates and does not normalise them).

    Args: as :class:`MiniGRU`. Parameters: ``W_f``, ``W_i``, ``W_x``
    ``{'weight': (I, N), 'bias': (N,)}``. State: ``h`` (B, N) or (N,).

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> cell = dt.nn.MiniLSTM(3, 4)
      >>> brainstate.nn.init_all_states(cell, batch_size=2)
      MiniLSTM(...)
      >>> cell(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(
        self, in_size: int, out_size: int, w_init=_ORTHOGONAL, b_init=_ZERO, state_init=_ZERO, name: str | None = None
    ):
        super().__init__(in_size, out_size, state_init, name)
        self.W_f = self._linear(self.num_in, self.num_out, w_init, b_init)
        self.W_i = self._linear(self.num_in, self.num_out, w_init, b_init)
        self.W_x = self._linear(self.num_in, self.num_out, w_init, b_init)

    def update(self, x):
        x = self._check_x(x)
        f, i = jax.nn.sigmoid(self.W_f(x)), jax.nn.sigmoid(self.W_i(x))
        self.h.value = (f * self.h.value + i * self.W_x(x)) / (f + i)
        return self.h.value
