"""Normalisation layers whose learnable scale and shift learn online.

The statistics are computed as brainstate does; the affine part ``y = x̂ · scale +
bias`` routes ``scale`` and ``bias`` through ``ops.element_wise``, so when ``y`` drives
a hidden state their eligibility traces are kept (O(B·K·N), exact under every
algorithm). Running statistics of batch norm are ``brainstate.BatchState``s: carried
across steps, never learned.

A norm placed between a trace op and the hidden state it drives (``h = f(LN(x W))``)
mixes that op's output neurons, which the diagonal trace cannot represent: the compiler
raises a ``CompilationError`` naming the op. Normalise the inputs of a recurrent layer,
or its outputs, instead.

Parameter layout as brainstate: LayerNorm ``weight.value == {'scale', 'bias'}`` (F,),
RMSNorm ``scale.value == {'scale'}`` (F,), BatchNorm ``weight.value == {'scale',
'bias'}`` (1, ..., C) with ``running_mean``/``running_var`` (1, ..., C).
"""

from __future__ import annotations

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.ops import element_wise

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm"]

_ONE = brainstate.nn.init.Constant(1.0)
_ZERO = brainstate.nn.init.ZeroInit()


def _affine(y, params):
    if "scale" in params:
        y = y * element_wise(params["scale"])
    if "bias" in params:
        y = y + element_wise(params["bias"])
    return y


class LayerNorm(brainstate.nn.Module):
    """Layer normalisation over the last axis: ``(x - mean) / sqrt(var + ε) · scale + bias``.

    Args:
      in_size: feature size F (an int or a tuple ending in F).
      epsilon: variance floor.
      use_bias, use_scale: learn a shift / a scale (F,).
      bias_init, scale_init: their initializers (zeros / ones).
      param_type: the state class holding them.
      name: module name.

    Shapes: input (..., F) -> (..., F). Owns no hidden state.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.LayerNorm(4)(jnp.arange(8.0).reshape(2, 4)).shape
      (2, 4)
    """

    def __init__(self, in_size, *, epsilon: float = 1e-6, use_bias: bool = True, use_scale: bool = True,
                 bias_init=_ZERO, scale_init=_ONE, param_type: type = brainstate.ParamState, name=None):
        super().__init__(name=name)
        self.in_size = check.size("LayerNorm", "in_size", in_size)
        self.out_size = self.in_size
        if not epsilon > 0:
            raise ValueError(f"LayerNorm: argument 'epsilon' must be > 0; got {epsilon!r}")
        self.epsilon = float(epsilon)
        n = self.in_size[-1]
        params = {}
        if use_scale:
            params["scale"] = brainstate.nn.init.param(scale_init, (n,))
        if use_bias:
            params["bias"] = brainstate.nn.init.param(bias_init, (n,))
        self.weight = param_type(params) if params else None

    def update(self, x):
        x = jnp.asarray(x)
        check.features("LayerNorm", x, self.in_size[-1])
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.var(x, axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y if self.weight is None else _affine(y, self.weight.value)


class RMSNorm(brainstate.nn.Module):
    """Root-mean-square normalisation over the last axis: ``x / sqrt(mean(x²) + ε) · scale``.

    Args:
      in_size: feature size F.
      epsilon: floor inside the square root.
      use_scale: learn a scale (F,); scale_init: its initializer (ones).
      param_type: the state class holding it; name: module name.

    Shapes: input (..., F) -> (..., F). Owns no hidden state.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.RMSNorm(4)(jnp.ones((2, 4))).shape
      (2, 4)
    """

    def __init__(self, in_size, *, epsilon: float = 1e-6, use_scale: bool = True, scale_init=_ONE,
                 param_type: type = brainstate.ParamState, name=None):
        super().__init__(name=name)
        self.in_size = check.size("RMSNorm", "in_size", in_size)
        self.out_size = self.in_size
        if not epsilon > 0:
            raise ValueError(f"RMSNorm: argument 'epsilon' must be > 0; got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.scale = param_type({"scale": brainstate.nn.init.param(scale_init, (self.in_size[-1],))}) if use_scale else None

    def update(self, x):
        x = jnp.asarray(x)
        check.features("RMSNorm", x, self.in_size[-1])
        y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
        return y if self.scale is None else _affine(y, self.scale.value)


class _BatchNorm(brainstate.nn.Module):
    num_spatial_dims = 0

    def __init__(self, in_size, feature_axis=-1, *, track_running_stats: bool = True, epsilon: float = 1e-5,
                 momentum: float = 0.99, affine: bool = True, bias_initializer=_ZERO, scale_initializer=_ONE,
                 name=None, param_type: type = brainstate.ParamState):
        super().__init__(name=name)
        who = type(self).__name__
        self.in_size = check.size(who, "in_size", in_size)
        self.out_size = self.in_size
        if len(self.in_size) != self.num_spatial_dims + 1:
            raise ValueError(
                f"{who}: argument 'in_size' must be (*spatial, C) with {self.num_spatial_dims} spatial dims; "
                f"got {in_size!r}"
            )
        if feature_axis not in (-1, len(self.in_size) - 1):
            raise ValueError(f"{who}: argument 'feature_axis' must be -1 (channels-last); got {feature_axis!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"{who}: argument 'momentum' must be in [0, 1); got {momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"{who}: argument 'epsilon' must be > 0; got {epsilon!r}")
        self.epsilon, self.momentum, self.track_running_stats = float(epsilon), float(momentum), track_running_stats
        stats_shape = (1,) * self.num_spatial_dims + (self.in_size[-1],)
        if track_running_stats:
            self.running_mean = brainstate.BatchState(jnp.zeros(stats_shape))
            self.running_var = brainstate.BatchState(jnp.ones(stats_shape))
        self.weight = None
        if affine:
            init = brainstate.nn.init
            self.weight = param_type(
                {"scale": init.param(scale_initializer, stats_shape), "bias": init.param(bias_initializer, stats_shape)}
            )

    def update(self, x):
        """Normalises ``x`` (B, *in_size) or (*in_size).

        In fitting mode (``brainstate.environ`` ``fit=True``, the default when unset)
        the statistics of this call are used and the running statistics updated; with
        ``fit=False`` the running statistics are used. The mode is read when the step is
        traced: a learner (``dt.compile``) keeps the mode in force when it was compiled,
        so compile a second learner under ``brainstate.environ.context(fit=False)`` to
        evaluate with the running statistics.
        """
        x = jnp.asarray(x)
        check.trailing(type(self).__name__, x, self.in_size)
        fit = brainstate.environ.get("fit", default=None)
        fit = True if fit is None else bool(fit)
        axes = tuple(range(x.ndim - 1))
        if fit or not self.track_running_stats:
            mean = jnp.mean(x, axis=axes, keepdims=True)
            var = jnp.var(x, axis=axes, keepdims=True)
            if self.track_running_stats:
                m = self.momentum
                stats = lambda v: v.reshape(self.running_mean.value.shape)
                self.running_mean.value = m * self.running_mean.value + (1 - m) * stats(mean)
                self.running_var.value = m * self.running_var.value + (1 - m) * stats(var)
        else:
            mean, var = self.running_mean.value, self.running_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y if self.weight is None else _affine(y, self.weight.value)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (B, L, C) inputs (channels-last).

    Args:
      in_size: one sample's shape (L, C) (one spatial dim, channels-last).
      feature_axis: must be -1.
      track_running_stats: keep running mean/var (``BatchState``, not learned).
      epsilon, momentum: as brainstate (running = momentum·running + (1-momentum)·batch).
      affine: learn scale and bias (1, C) through ``element_wise``.
      bias_initializer, scale_initializer, name, param_type: as brainstate.

    Shapes: (B, L, C) or (L, C) -> same. Statistics over every axis but C.

    Example:
      >>> import brainstate, jax.numpy as jnp, disttrace as dt
      >>> bn = dt.nn.BatchNorm1d((5, 3))
      >>> brainstate.nn.init_all_states(bn)
      BatchNorm1d(...)
      >>> bn(jnp.ones((2, 5, 3))).shape
      (2, 5, 3)
    """

    num_spatial_dims = 1


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (B, H, W, C) inputs (channels-last); see :class:`BatchNorm1d`.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.BatchNorm2d((4, 4, 3))(jnp.ones((2, 4, 4, 3))).shape
      (2, 4, 4, 3)
    """

    num_spatial_dims = 2
