"""Convolutions whose kernels learn online: Conv1d/2d/3d and their scaled
weight-standardised variants, with brainstate's constructors and parameter layout
(``weight.value == {'weight': (*window, C_in, C_out), ['bias': (1, ..., 1, C_out)],
['gain': (1, ..., 1, C_out)]}``), channels-last.

The kernel goes through ``ops.conv`` (every output position is its own neuron; the
D-RTRL trace is (B, K, positions, window·C_in/groups, C_out)). The conv trace op
supports strides, padding, input and kernel dilation and feature groups;
channels-first inputs raise a ValueError naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import brainstate
import jax
import jax.numpy as jnp

from disttrace.nn import _validation as check
from disttrace.nn._linear import weight_standardization
from disttrace.ops import conv

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ScaledWSConv1d", "ScaledWSConv2d", "ScaledWSConv3d"]

_XAVIER = brainstate.nn.init.XavierNormal()


def _tuple(who, arg, value, nd):
    if not isinstance(value, Sequence) or isinstance(value, str):
        value = (value,) * nd  # one value for every dim; positive_int below rejects a non-int
    if len(value) != nd:
        raise ValueError(f"{who}: argument {arg!r} must be an int or a tuple of {nd} ints; got {value!r}")
    return tuple(check.positive_int(who, arg, v) for v in value)


def _padding(who, padding, nd):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{who}: argument 'padding' must be 'SAME', 'VALID', an int or pairs; got {padding!r}")
        return padding.upper()
    if isinstance(padding, int) and not isinstance(padding, bool):
        return ((padding, padding),) * nd
    if isinstance(padding, Sequence) and padding and all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
        # brainstate's reading: one (low, high) pair in 1-d, else one symmetric int per dim
        if nd == 1 and len(padding) == 2:
            return (tuple(padding),)
        if len(padding) == nd:
            return tuple((p, p) for p in padding)
    try:
        pairs = tuple((int(a), int(b)) for a, b in padding)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) == 1:
        pairs = pairs * nd
    if len(pairs) != nd:
        raise ValueError(f"{who}: argument 'padding' must be 'SAME', 'VALID', an int or {nd} pairs; got {padding!r}")
    return pairs


class _Conv(brainstate.nn.Module):
    num_spatial_dims: int = 0

    def __init__(self, in_size, out_channels, kernel_size, stride=1, padding="SAME", lhs_dilation=1,
                 rhs_dilation=1, groups=1, w_init=_XAVIER, b_init=None, w_mask=None, channel_first=False,
                 name=None, param_type=brainstate.ParamState):
        super().__init__(name=name)
        who, nd = type(self).__name__, self.num_spatial_dims
        self.in_size = check.size(who, "in_size", in_size)
        if len(self.in_size) != nd + 1:
            raise ValueError(
                f"{who}: argument 'in_size' must be (*spatial, C) with {nd} spatial dims; got {in_size!r}"
            )
        self.out_channels = check.positive_int(who, "out_channels", out_channels)
        self.kernel_size = _tuple(who, "kernel_size", kernel_size, nd)
        self.stride = _tuple(who, "stride", stride, nd)
        self.padding = _padding(who, padding, nd)
        self.lhs_dilation = _tuple(who, "lhs_dilation", lhs_dilation, nd)
        self.rhs_dilation = _tuple(who, "rhs_dilation", rhs_dilation, nd)
        if isinstance(self.padding, str) and self.lhs_dilation != (1,) * nd:
            raise ValueError(
                f"{who}: argument 'padding' must be an int or (low, high) pairs when 'lhs_dilation' is not 1 "
                f"(lax has no {self.padding!r} rule for a dilated input); got {padding!r}"
            )
        self.groups = check.positive_int(who, "groups", groups)
        if channel_first:
            raise ValueError(f"{who}: argument 'channel_first' must be False (channels-last only); got {channel_first!r}")
        self.channel_first = False
        self.in_channels = self.in_size[-1]
        for arg, n in (("in_size", self.in_channels), ("out_channels", self.out_channels)):
            if n % self.groups:
                raise ValueError(
                    f"{who}: argument 'groups' must divide the {n} channels of {arg!r}; got groups={self.groups}"
                )
        init = brainstate.nn.init
        self.kernel_shape = (*self.kernel_size, self.in_channels // self.groups, self.out_channels)
        params = {"weight": init.param(w_init, self.kernel_shape)}
        if b_init is not None:
            params["bias"] = init.param(b_init, (1,) * nd + (self.out_channels,))
        self.w_mask = None if w_mask is None else jnp.asarray(init.param(w_mask, self.kernel_shape))
        self._extra_params(params)
        self.weight = param_type(params)
        y = jax.eval_shape(lambda x: self._conv(x, params), jax.ShapeDtypeStruct((1, *self.in_size), params["weight"].dtype))
        self.out_size = tuple(y.shape[1:])

    def _extra_params(self, params):
        pass

    def _kernel(self, params):
        w = params["weight"]
        return w if self.w_mask is None else w * self.w_mask

    def _conv(self, x, params):
        bias = params.get("bias")
        bias = None if bias is None else bias.reshape(-1)
        return conv(x, self._kernel(params), bias, strides=self.stride, padding=self.padding,
                    lhs_dilation=self.lhs_dilation, rhs_dilation=self.rhs_dilation, feature_group_count=self.groups)

    def update(self, x):
        x = jnp.asarray(x)
        batched = check.trailing(type(self).__name__, x, self.in_size)
        x = x.astype(self.weight.value["weight"].dtype)  # lax.conv needs equal dtypes
        y = self._conv(x if batched else x[None], self.weight.value)
        return y if batched else y[0]


class _ScaledWSConv(_Conv):
    def __init__(self, in_size, out_channels, kernel_size, stride=1, padding="SAME", lhs_dilation=1,
                 rhs_dilation=1, groups=1, ws_gain=True, eps=1e-4, w_init=_XAVIER, b_init=None, w_mask=None,
                 channel_first=False, name=None, param_type=brainstate.ParamState):
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: argument 'eps' must be > 0; got {eps!r}")
        self.ws_gain, self.eps = bool(ws_gain), float(eps)
        super().__init__(in_size, out_channels, kernel_size, stride, padding, lhs_dilation, rhs_dilation, groups,
                         w_init, b_init, w_mask, channel_first, name, param_type)

    def _extra_params(self, params):
        if self.ws_gain:
            params["gain"] = jnp.ones((1,) * (len(self.kernel_shape) - 1) + (self.out_channels,),
                                      params["weight"].dtype)

    def _kernel(self, params):
        w = weight_standardization(params["weight"], self.eps, params.get("gain"))
        return w if self.w_mask is None else w * self.w_mask


_DOC = """{kind} convolution over {nd} spatial dim(s), channels-last, kernel learning online.

    Args:
      in_size: one sample's input shape (*spatial, C_in) without the batch axis.
      out_channels: C_out.
      kernel_size: int or tuple of {nd}.
      stride: int or tuple of {nd}.
      padding: ``'SAME'``, ``'VALID'``, an int or {nd} (low, high) pairs.
      lhs_dilation: input dilation, int or tuple of {nd} (1: none).
      rhs_dilation: kernel dilation, int or tuple of {nd} (1: none).
      groups: feature groups G; must divide C_in and C_out (the kernel is
        (*kernel_size, C_in/G, C_out)).
      channel_first: brainstate's argument; only False (channels-last) is supported.
      w_init: kernel initializer (default Xavier normal); b_init: bias (default none).
      w_mask: optional fixed mask of the kernel's shape.{extra}
      name, param_type: as brainstate.

    Shapes: input (B, *spatial, C_in) or (*spatial, C_in) -> (B, *spatial_out, C_out);
    ``out_size`` holds (*spatial_out, C_out); ``in_channels`` is C_in. Owns no hidden state.

    Raises:
      ValueError: on bad sizes, strides, dilations, padding or groups, naming the argument.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.nn.{name}({example_in}, 4, 3)(jnp.ones((2, *{example_in}))).shape
      (2, {example_out})
    """


def _make(name, base, nd, kind, extra=""):
    example_in = ((8,) * nd) + (3,)
    example_out = ", ".join(["8"] * nd + ["4"])
    cls = type(name, (base,), {"num_spatial_dims": nd, "__module__": __name__})
    cls.__doc__ = _DOC.format(kind=kind, nd=nd, extra=extra, name=name, example_in=example_in, example_out=example_out)
    cls.__qualname__ = name
    return cls


_WS = "\n      ws_gain: learn a per-channel gain; eps: variance floor of the standardisation."
Conv1d = _make("Conv1d", _Conv, 1, "A")
Conv2d = _make("Conv2d", _Conv, 2, "A")
Conv3d = _make("Conv3d", _Conv, 3, "A")
ScaledWSConv1d = _make("ScaledWSConv1d", _ScaledWSConv, 1, "A weight-standardised", _WS)
ScaledWSConv2d = _make("ScaledWSConv2d", _ScaledWSConv, 2, "A weight-standardised", _WS)
ScaledWSConv3d = _make("ScaledWSConv3d", _ScaledWSConv, 3, "A weight-standardised", _WS)
