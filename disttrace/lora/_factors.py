"""Low-rank factors and their initialisation.

A LoRA leaf ``W`` of shape (*lead, O), read as the (I, O) matrix with I = prod(lead),
is adapted to

.. math::
    W' = W + s · \\mathrm{reshape}(A B), \\qquad A ∈ R^{I×r},\\ B ∈ R^{r×O},\\ s = α/r
    \\ (\\text{or } α/\\sqrt{r} \\text{ with rsLoRA})

(Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"). With
``init='zero_b'`` (the default) ``A ~ N(0, 1/I)`` and ``B = 0``, so ``W' = W`` at
initialisation while ``∂L/∂B = s·Aᵀ G`` is not zero and the adapter trains; with
``init='gaussian'`` ``B ~ N(0, 1/r)`` too (the adapted model then differs from the
base at init). The factors are never both zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from disttrace.lora._spec import FREEZE, FULL, check_spec, lora_scale, matrix_shape

__all__ = ["INITS", "LoRAFactors", "LoRAWeight", "init_factors", "init_lora"]

INITS = ("zero_b", "gaussian")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoRAFactors:
    """The trainable part of one LoRA leaf.

    Attributes:
      a: (I, r) factor.
      b: (r, O) factor.
      scale: the static factor ``s`` (pytree metadata, not a leaf: never trained).
    """

    a: jax.Array
    b: jax.Array
    scale: float = dataclasses.field(metadata=dict(static=True))

    @property
    def rank(self) -> int:
        return self.a.shape[-1]

    def delta(self, shape: tuple[int, ...]) -> jax.Array:
        """The dense update ``s·A·B`` reshaped to ``shape`` (materialises it)."""
        return (self.scale * (self.a @ self.b)).reshape(shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoRAWeight:
    """A frozen weight and its factors: the slot of a LoRA leaf in a joined tree.

    Attributes:
      w: the frozen base weight (*lead, O).
      factors: its :class:`LoRAFactors`.
    """

    w: jax.Array
    factors: LoRAFactors

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.w.shape)

    def merged(self) -> jax.Array:
        """``W + s·A·B`` as one dense array (for ops with no factorised form)."""
        return self.w + self.factors.delta(self.shape).astype(self.w.dtype)


def _check_init(who: str, init) -> str:
    if init not in INITS:
        raise ValueError(f"{who}: argument 'init' must be one of {INITS}; got {init!r}")
    return init


def init_factors(key: jax.Array, shape: tuple[int, ...], rank: int, scale: float, init: str = "zero_b",
                 dtype=None) -> LoRAFactors:
    """Factors for one leaf of ``shape`` (*lead, O): ``A`` (prod(lead), r), ``B`` (r, O).

    Args:
      key: a ``jax.random`` key.
      shape: the leaf's shape.
      rank: r (already validated).
      scale: s.
      init: ``'zero_b'`` (B = 0) or ``'gaussian'`` (B ~ N(0, 1/r)); A ~ N(0, 1/I).
      dtype: factor dtype (default float32 or float64 under x64).

    Example:
      >>> import jax
      >>> from disttrace.lora import init_factors
      >>> f = init_factors(jax.random.PRNGKey(0), (3, 3, 4, 8), 2, 0.5)
      >>> f.a.shape, f.b.shape, float(abs(f.b).max())
      ((36, 2), (2, 8), 0.0)
    """
    _check_init("init_factors", init)
    n_in, n_out = matrix_shape(tuple(shape))
    dtype = jnp.zeros((), dtype).dtype
    k_a, k_b = jax.random.split(key)
    a = jax.random.normal(k_a, (n_in, rank), dtype) / math.sqrt(n_in)
    if init == "zero_b":
        b = jnp.zeros((rank, n_out), dtype)
    else:
        b = jax.random.normal(k_b, (rank, n_out), dtype) / math.sqrt(rank)
    return LoRAFactors(a, b, scale)


def init_lora(params: Any, spec: Any, key: jax.Array, *, alpha: float = 1.0, init: str = "zero_b",
              rslora: bool = False) -> Any:
    """The adapter tree for ``params``: factors for LoRA leaves, copies for FULL leaves.

    Args:
      params: the base parameters (a pytree of arrays).
      spec: from :func:`make_lora_spec` (same structure).
      key: a ``jax.random`` key (each LoRA leaf gets its own fold of it).
      alpha: the scale numerator: ``s = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        The default 1.0 gives ``1/r``, braintrace's ``nn.LoRA`` scaling.
      init: ``'zero_b'`` (B = 0: the adapted model equals the base at init) or
        ``'gaussian'`` (both factors random).
      rslora: use ``alpha / sqrt(r)``.

    Returns:
      ``lora_params``: a tree with the structure of ``spec`` whose slot is
      :class:`LoRAFactors` for a rank, the (copied) array for FULL and ``None`` for
      FREEZE. It is everything that trains, so it is what an adapter checkpoint holds.

    Raises:
      ValueError: on a bad argument or a spec that does not fit ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> params = {"w": jnp.ones((16, 32)), "b": jnp.zeros(32)}
      >>> spec = lora.make_lora_spec(params, rank=4)
      >>> lp = lora.init_lora(params, spec, jax.random.PRNGKey(0), alpha=8.0)
      >>> lp["w"].a.shape, lp["w"].b.shape, lp["w"].scale, lp["b"]
      ((16, 4), (4, 32), 2.0, None)
    """
    who = "init_lora"
    _check_init(who, init)
    checked = check_spec(who, params, spec)
    try:
        key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jnp.asarray(key)
        if key_data.dtype != jnp.uint32:
            raise TypeError
    except (AttributeError, TypeError):
        raise ValueError(f"{who}: argument 'key' must be a jax.random key (e.g. jax.random.PRNGKey(0)); got {key!r}") from None
    out = []
    for i, (_, decision, leaf) in enumerate(checked):
        if decision is FREEZE:
            out.append(None)
        elif decision is FULL:
            out.append(jnp.array(leaf, copy=True))
        else:
            scale = lora_scale(decision, alpha, rslora)
            shape = tuple(jnp.shape(leaf))
            out.append(init_factors(jax.random.fold_in(key, i), shape, decision, scale, init, jnp.result_type(leaf)))
    return jax.tree.unflatten(jax.tree.structure(spec), out)
