"""``LoRA``: a low-rank adapter layer whose factors learn online (braintrace's ``nn.LoRA``).

.. math::
    y = s · (x A) B \\; (+\\ \\mathrm{base\\_module}(x)), \\qquad s = α / r

with ``A`` (in, r), ``B`` (r, out) and, as in braintrace 0.2.8, ``s = 1/r`` by default
(``alpha=None``). The product goes through ``ops.lora_matmul``: the dense ``A·B`` is
never formed, and the trace kept for it is that of the effective (in, out) weight, so
D-RTRL memory equals a dense layer's and ES-D-RTRL memory is O(B·(in + out)).

Two pitfalls of the anchors are fixed. (1) braintrace/brainstate initialise both
factors with ``kernel_init`` (both random, so the adapted model differs from the base
at start) and ``kernel_init=ZeroInit()`` makes both zero, where no gradient reaches
either; here ``init='zero_b'`` (default) draws ``A`` from ``kernel_init`` and sets
``B = 0`` (the adapted model equals the base at init, ``∂L/∂B = s·Aᵀ xᵀ δ ≠ 0``), and
factors that would both be zero are rejected. (2) braintrace trains the parameters of
``base_module``; here the base is frozen (``disttrace.lora.freeze``: its
``ParamState``s become ``FrozenState``s), so it gets neither trace memory nor updates.
Pass ``freeze_base=False`` to train it too.
"""

from __future__ import annotations

import math

import brainstate
import jax.numpy as jnp

from disttrace import checks, lora
from disttrace.ops import lora_matmul

__all__ = ["LoRA"]

_LECUN = brainstate.nn.init.LecunNormal()


class LoRA(brainstate.nn.Module):
    """Low-rank adapter ``(alpha/r)·x·A·B (+ base_module(x))``.

    Args:
      in_features: input features I.
      lora_rank: r, with ``1 <= r <= min(I, O)``.
      out_features: output features O.
      base_module: optional module called on ``x`` and added; trained with the adapter
        (as braintrace's) unless ``freeze_base=True``.
      kernel_init: initializer (or array) for ``lora_a`` (and, with
        ``init='gaussian'``, ``lora_b``); default LeCun normal.
      param_type: the state class holding the factors (default ``ParamState``).
      in_size: input size override (brainstate convention); ``out_size`` becomes
        ``in_size[:-1] + (O,)``.
      alpha: scale numerator: ``s = alpha / r``; ``None`` gives braintrace's ``1/r``.
      init: ``'gaussian'`` (both factors from ``kernel_init``: braintrace 0.2.8's default,
        so code written for it gets the same layer) or ``'zero_b'`` (``lora_b = 0``: the
        LoRA paper's, the adapted layer equals the base at initialisation).
      freeze_base: freeze ``base_module``'s parameters (in place); default False, as
        braintrace (``disttrace.lora.adapt`` freezes the base it adapts).

    ``weight.value == {'lora_a': (I, r), 'lora_b': (r, O)}``. Input (..., I) -> (..., O),
    with or without a batch axis.

    Raises:
      ValueError: on a bad argument (naming it), factors that are both zero, or an
        input whose last axis is not I (naming ``'x'``).

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> from disttrace.nn._lora import LoRA
      >>> base = dt.nn.Linear(3, 4)
      >>> layer = LoRA(3, 2, 4, base_module=base, init="zero_b", freeze_base=True)
      >>> x = jnp.ones((5, 3))
      >>> bool(jnp.allclose(layer(x), base(x)))  # lora_b = 0: equals the base at init
      True
      >>> layer.weight.value["lora_a"].shape, layer.weight.value["lora_b"].shape
      ((3, 2), (2, 4))
    """

    def __init__(
        self,
        in_features: int,
        lora_rank: int,
        out_features: int,
        *,
        base_module=None,
        kernel_init=_LECUN,
        param_type: type = brainstate.ParamState,
        in_size=None,
        alpha: float | None = None,
        init: str = "gaussian",
        freeze_base: bool = False,
    ):
        super().__init__()
        self.in_features = checks.positive_int("LoRA", "in_features", in_features)
        self.out_features = checks.positive_int("LoRA", "out_features", out_features)
        checks.positive_int("LoRA", "lora_rank", lora_rank)
        self.lora_rank = lora.check_rank("LoRA: argument 'lora_rank'", lora_rank, (self.in_features, self.out_features))
        checks.one_of("LoRA", "init", init, lora.INITS)
        if base_module is not None and not callable(base_module):
            raise ValueError(f"LoRA: argument 'base_module' must be a callable module or None; got {base_module!r}")
        checks.boolean("LoRA", "freeze_base", freeze_base)
        self.scale = lora.lora_scale(self.lora_rank, 1.0 if alpha is None else alpha)
        self.in_size, self.out_size = (self.in_features,), (self.out_features,)
        if in_size is not None:
            self.in_size = tuple(in_size) if isinstance(in_size, tuple | list) else (in_size,)
            if self.in_size[-1] != self.in_features:
                raise ValueError(
                    f"LoRA: argument 'in_size' must end in in_features={self.in_features}; got {in_size!r}"
                )
            self.out_size = (*self.in_size[:-1], self.out_features)
        shape_a, shape_b = (self.in_features, self.lora_rank), (self.lora_rank, self.out_features)
        lora_a = jnp.asarray(brainstate.nn.init.param(kernel_init, shape_a))
        if init == "zero_b":
            lora_b = jnp.zeros(shape_b, lora_a.dtype)
        else:
            lora_b = jnp.asarray(brainstate.nn.init.param(kernel_init, shape_b))
        for name, value, shape in (("lora_a", lora_a, shape_a), ("lora_b", lora_b, shape_b)):
            if value.shape != shape:
                raise ValueError(f"LoRA: argument 'kernel_init' must give {name} of shape {shape}; got {value.shape}")
        if not (jnp.any(lora_a != 0) or jnp.any(lora_b != 0)) or (init == "zero_b" and not jnp.any(lora_a != 0)):
            raise ValueError(
                f"LoRA: argument 'kernel_init' ({type(kernel_init).__name__}) gives a zero lora_a with init={init!r}: both factors "
                "would be zero and neither would ever get a gradient; use a random initializer (default LecunNormal)"
            )
        self.weight = param_type({"lora_a": lora_a, "lora_b": lora_b})
        if base_module is not None and freeze_base:
            lora.freeze(base_module)
        self.base_module = base_module

    def update(self, x):
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"LoRA: argument 'x' must have shape (..., {self.in_features}); got {x.shape}")
        w = self.weight.value
        lead = x.shape[:-1]
        if len(lead) <= 1:
            out = lora_matmul(x, w["lora_b"], w["lora_a"], self.scale)
        else:  # fold leading axes into one batch axis for the op
            out = lora_matmul(x.reshape(math.prod(lead), self.in_features), w["lora_b"], w["lora_a"], self.scale)
            out = out.reshape((*lead, self.out_features))
        if self.base_module is not None:
            out = out + self.base_module(x)
        return out
