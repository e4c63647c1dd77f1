"""The linear family: dense, sign-constrained, weight-standardised, sparse and grouped
layers whose weights learn online.

Each layer keeps brainstate's/braintrace's constructor and parameter layout
(``weight.value`` is a dict) and routes its weight through a trace op. A weight that
is a function of the parameters (``|W| ∘ sign``, a standardised ``W``, a masked ``W``)
is formed first and then passed to the op: the trace is kept for the formed weight
and mapped back to the parameters by the op's VJP, so every parameter learns.

Inputs may have any leading axes ``(..., I)``; they are folded into one batch axis
for the op and unfolded after.
"""

from __future__ import annotations

import math
import sys

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

from disttrace.nn import _validation as check
from disttrace.ops import element_wise, grouped_matmul, matmul, sparse_matmul
from disttrace.units import as_array

__all__ = ["GroupedLinear", "Linear", "ScaledWSLinear", "SignedWLinear", "SparseLinear", "weight_standardization"]


def _init():
    return brainstate.nn.init


_KAIMING = brainstate.nn.init.KaimingNormal()
_ZERO = brainstate.nn.init.ZeroInit()


def _apply_2d(fn, x, n_in):
    """Folds the leading axes of ``x`` (..., I) into one for a (B, I) op."""
    lead = x.shape[:-1]
    if len(lead) == 1:
        return fn(x)
    y = fn(x.reshape((math.prod(lead), n_in)) if lead else x)
    return y.reshape((*lead, y.shape[-1]))


def weight_standardization(w: jax.Array, eps: float = 1e-4, gain: jax.Array | None = None) -> jax.Array:
    """Scaled weight standardisation (Qiao et al. 2019) over every axis but the last.

    ``ŵ = (w - mean) / sqrt(max(var · fan_in, eps)) · gain`` with mean and variance over
    the fan-in axes; shapes: ``w`` (..., O), ``gain`` broadcastable to (1, ..., O).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.weight_standardization(jnp.arange(6.0).reshape(3, 2)).shape
      (3, 2)
    """
    axes = tuple(range(w.ndim - 1))
    fan_in = math.prod(w.shape[:-1])
    mean = jnp.mean(w, axis=axes, keepdims=True)
    var = jnp.var(w, axis=axes, keepdims=True)
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps))
    if gain is not None:
        scale = gain * scale
    return w * scale - mean * scale


class Linear(brainstate.nn.Module):
    """``y = x @ (W ∘ mask) + b``; ``weight.value == {'weight': (I, O), 'bias': (O,)}``.

    Args:
      in_size: input features I (an int or a tuple whose last entry is I).
      out_size: output features O.
      w_init: initializer or array for W (default Kaiming normal).
      b_init: initializer or array for b (default zeros); ``None`` for no bias.
      w_mask: optional fixed (I, O) mask multiplied into W (structural sparsity).
      name: module name.
      param_type: the state class holding the weights (``brainstate.ParamState``);
        a non-parameter state class makes the layer frozen.

    Shapes: input (..., I) -> output (..., O). Owns no hidden state.

    Raises:
      ValueError: on bad sizes or masks, or an input whose last axis is not I.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.Linear(3, 4)(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(self, in_size, out_size, w_init=_KAIMING, b_init=_ZERO, w_mask=None, name: str | None = None,
                 param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        who = type(self).__name__
        self.in_size, self.out_size = check.size(who, "in_size", in_size), check.size(who, "out_size", out_size)
        self.n_inputs, self.n_outputs = self.in_size[-1], self.out_size[-1]
        init = _init()
        value = {"weight": init.param(w_init, (self.n_inputs, self.n_outputs))}
        if b_init is not None:
            value["bias"] = init.param(b_init, (self.n_outputs,))
        self.w_mask = None
        if w_mask is not None:
            self.w_mask = jnp.asarray(init.param(w_mask, (self.n_inputs, self.n_outputs)))
            if self.w_mask.shape != (self.n_inputs, self.n_outputs):
                raise ValueError(
                    f"{who}: argument 'w_mask' must have shape {(self.n_inputs, self.n_outputs)}; got {self.w_mask.shape}"
                )
        self.weight = param_type(value)

    def _effective_weight(self, params):
        w = params["weight"]
        return w if self.w_mask is None else w * self.w_mask

    def update(self, x):
        x = as_array(x)
        check.features(type(self).__name__, x, self.n_inputs)
        params = self.weight.value
        w = self._effective_weight(params)
        return _apply_2d(lambda v: matmul(v.astype(w.dtype), w, params.get("bias")), x, self.n_inputs)


class SignedWLinear(brainstate.nn.Module):
    """``y = x @ (|W| ∘ sign)``: non-negative magnitudes times a fixed sign (Dale's law).

    Args:
      in_size: input features I.
      out_size: output features O.
      w_init: initializer or array for W (default Kaiming normal).
      w_sign: fixed (I, O) (or broadcastable) array of signs; ``None`` for all +1.
      name: module name.
      param_type: the state class holding W.

    ``weight.value`` is W (I, O), as in brainstate. Input (..., I) -> (..., O).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> layer = dt.nn.SignedWLinear(3, 2, w_sign=jnp.array([[1.0], [-1.0], [1.0]]))
      >>> layer(jnp.ones((4, 3))).shape
      (4, 2)
    """

    def __init__(self, in_size, out_size, w_init=_KAIMING, w_sign=None, name: str | None = None,
                 param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        who = "SignedWLinear"
        self.in_size, self.out_size = check.size(who, "in_size", in_size), check.size(who, "out_size", out_size)
        self.n_inputs, self.n_outputs = self.in_size[-1], self.out_size[-1]
        init = _init()
        w = init.param(w_init, (self.n_inputs, self.n_outputs))
        self.w_sign = None
        if w_sign is not None:
            self.w_sign = jnp.asarray(w_sign)
            try:
                jnp.broadcast_shapes(self.w_sign.shape, (self.n_inputs, self.n_outputs))
            except ValueError:
                raise ValueError(
                    f"{who}: argument 'w_sign' must broadcast to {(self.n_inputs, self.n_outputs)}; "
                    f"got shape {self.w_sign.shape}"
                ) from None
        self.weight = param_type(w)

    def update(self, x):
        x = as_array(x)
        check.features("SignedWLinear", x, self.n_inputs)
        w = u.math.abs(self.weight.value)
        if self.w_sign is not None:
            w = w * self.w_sign
        return _apply_2d(lambda v: matmul(v, w), x, self.n_inputs)


class ScaledWSLinear(Linear):
    """Linear layer with scaled weight standardisation (and a learnable gain).

    ``y = x @ (ws(W, gain) ∘ mask) + b`` with :func:`weight_standardization`;
    ``weight.value == {'weight': (I, O), 'bias': (O,), 'gain': (1, O)}``.

    Args: as :class:`Linear`, plus ``ws_gain`` (learn a per-output gain) and ``eps``.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.ScaledWSLinear(3, 4)(jnp.ones((2, 3))).shape
      (2, 4)
    """

    def __init__(self, in_size, out_size, w_init=_KAIMING, b_init=_ZERO, w_mask=None, ws_gain: bool = True,
                 eps: float = 1e-4, name: str | None = None, param_type: type = brainstate.ParamState):
        super().__init__(in_size, out_size, w_init, b_init, w_mask, name, param_type)
        if not eps > 0:
            raise ValueError(f"ScaledWSLinear: argument 'eps' must be > 0; got {eps!r}")
        self.eps = float(eps)
        if ws_gain:
            value = dict(self.weight.value)
            value["gain"] = jnp.ones((1, self.n_outputs), value["weight"].dtype)
            self.weight = param_type(value)

    def _effective_weight(self, params):
        w = weight_standardization(params["weight"], self.eps, params.get("gain"))
        return w if self.w_mask is None else w * self.w_mask


def _sparse_classes() -> dict[str, tuple[type, ...]]:
    """The COO, CSR and CSC classes SparseLinear reads: brainunit's, and brainevent's when
    brainevent is loaded (a brainevent matrix cannot exist otherwise; it is no dependency).
    brainevent's ``CSR``/``CSC`` subclass ``brainunit.sparse.SparseMatrix`` but not
    brainunit's ``CSR``/``CSC``; its ``COO`` was removed in brainevent 0.1.0."""
    found = {name: (getattr(u.sparse, name),) for name in ("COO", "CSR", "CSC")}
    brainevent = sys.modules.get("brainevent")
    if brainevent is not None:
        for name in found:
            cls = getattr(brainevent, name, None)  # a removed name raises AttributeError
            if isinstance(cls, type):
                found[name] += (cls,)
    return found


def _coordinates(who: str, spar_mat) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) of every stored value of ``spar_mat``, in ``data``'s order."""
    n_in, n_out = spar_mat.shape
    classes = _sparse_classes()
    if isinstance(spar_mat, classes["COO"]):
        return np.asarray(spar_mat.row), np.asarray(spar_mat.col)
    if isinstance(spar_mat, classes["CSR"]):
        return np.repeat(np.arange(n_in), np.diff(np.asarray(spar_mat.indptr))), np.asarray(spar_mat.indices)
    if isinstance(spar_mat, classes["CSC"]):
        return np.asarray(spar_mat.indices), np.repeat(np.arange(n_out), np.diff(np.asarray(spar_mat.indptr)))
    known = ", ".join(f"{c.__module__}.{c.__qualname__}" for group in classes.values() for c in group)
    raise ValueError(f"{who}: argument 'spar_mat' must be one of {known}; got {type(spar_mat).__module__}."
                     f"{type(spar_mat).__qualname__}")


class SparseLinear(brainstate.nn.Module):
    """``y = x @ S + b`` for a fixed sparsity pattern whose non-zero values learn online.

    Args:
      spar_mat: a ``brainunit.sparse`` COO/CSR/CSC or a ``brainevent`` CSR/CSC matrix
        (I, O) with one stored value per non-zero; its ``data`` is the initial value of
        the learnable weight.
      b_init: optional bias initializer (default none).
      in_size: optional input size; its last entry must equal I.
      name: module name.
      param_type: the state class holding the weights.

    ``weight.value == {'weight': data (nnz,), ['bias': (O,)]}``. Input (..., I) -> (..., O).
    D-RTRL memory is O(B·nnz), not O(B·I·O).

    Example:
      >>> import brainunit as u, jax.numpy as jnp, disttrace as dt
      >>> s = u.sparse.COO.fromdense(jnp.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
      >>> dt.nn.SparseLinear(s)(jnp.ones((4, 3))).shape
      (4, 2)
    """

    def __init__(self, spar_mat, b_init=None, in_size=None, name: str | None = None,
                 param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        who = "SparseLinear"
        if not isinstance(spar_mat, u.sparse.SparseMatrix):
            raise ValueError(
                f"{who}: argument 'spar_mat' must be a brainunit.sparse or brainevent COO, CSR or CSC matrix; "
                f"got {type(spar_mat).__name__}"
            )
        n_in, n_out = spar_mat.shape
        rows, cols = _coordinates(who, spar_mat)
        if jnp.shape(spar_mat.data) != rows.shape:
            raise ValueError(
                f"{who}: argument 'spar_mat' must store one value per non-zero (data of shape {rows.shape}); "
                f"got data of shape {jnp.shape(spar_mat.data)} (a homogeneous matrix is not supported)"
            )
        if in_size is not None and check.size(who, "in_size", in_size)[-1] != n_in:
            raise ValueError(f"{who}: argument 'in_size' must end in {n_in} (the matrix rows); got {in_size!r}")
        self.in_size, self.out_size = (n_in,), (n_out,)
        self.n_inputs, self.n_outputs = n_in, n_out
        self.rows, self.cols = rows.astype(np.int32), cols.astype(np.int32)
        value = {"weight": as_array(spar_mat.data)}  # keeps a unit-ful matrix's unit
        if b_init is not None:
            value["bias"] = _init().param(b_init, (n_out,))
        self.weight = param_type(value)

    def update(self, x):
        x = as_array(x)
        check.features("SparseLinear", x, self.n_inputs)
        params = self.weight.value

        def fn(v):
            y = sparse_matmul(v, params["weight"], self.rows, self.cols, self.n_outputs)
            return y + element_wise(params["bias"]) if "bias" in params else y

        return _apply_2d(fn, x, self.n_inputs)


class GroupedLinear(brainstate.nn.Module):
    """Block-diagonal linear map: ``y[..., g, :] = x[..., g, :] @ W[g] + b[g]``.

    Args:
      num_groups: G.
      in_features: per-group input size I.
      out_features: per-group output size O.
      w_init: initializer for W (G, I, O) (default Kaiming normal per block).
      b_init: initializer for b (G, O) (default zeros); ``None`` for no bias.
      name: module name.
      param_type: the state class holding the weights.

    ``weight.value == {'weight': (G, I, O), 'bias': (G, O)}``. Input (..., G, I) ->
    output (..., G, O). D-RTRL keeps only the blocks: O(B·G·I·O).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.GroupedLinear(4, 8, 3)(jnp.ones((16, 4, 8))).shape
      (16, 4, 3)
    """

    def __init__(self, num_groups: int, in_features: int, out_features: int, w_init=_KAIMING, b_init=_ZERO,
                 name: str | None = None, param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        who = "GroupedLinear"
        g = check.positive_int(who, "num_groups", num_groups)
        i = check.positive_int(who, "in_features", in_features)
        o = check.positive_int(who, "out_features", out_features)
        self.num_groups, self.in_features, self.out_features = g, i, o
        self.in_size, self.out_size = (g, i), (g, o)
        init = _init()
        if callable(w_init):  # an initializer: drawn per group, each block its own fan-in
            weight = jnp.stack([init.param(w_init, (i, o)) for _ in range(g)])
        else:  # an array: the whole (G, I, O) weight (as braintrace)
            weight = as_array(w_init)
            if weight.shape != (g, i, o):
                raise ValueError(
                    f"GroupedLinear: argument 'w_init' as an array must have shape (num_groups, in_features, "
                    f"out_features) = {(g, i, o)}; got {weight.shape}"
                )
        value = {"weight": weight}
        if b_init is not None:
            value["bias"] = init.param(b_init, (g, o))
        self.weight = param_type(value)

    def update(self, x):
        x = as_array(x)
        if x.shape[-2:] != (self.num_groups, self.in_features):
            raise ValueError(
                f"GroupedLinear: argument 'x' must have shape (..., {self.num_groups}, {self.in_features}); "
                f"got {x.shape}"
            )
        params = self.weight.value
        lead = x.shape[:-2]
        flat = x.reshape((math.prod(lead), *self.in_size)) if len(lead) != 1 else x
        y = grouped_matmul(flat, params["weight"])
        if "bias" in params:
            y = y + element_wise(params["bias"])
        return y.reshape((*lead, *self.out_size)) if len(lead) != 1 else y
