"""Einsum trace op: ``y = einsum(equation, x, w)``, linear in the weight ``w``.

The equation ``'x_spec,w_spec->y_spec'`` is in batched form: the leading letter ``b``
of ``x_spec`` and ``y_spec`` is the batch axis and is not in ``w_spec`` (a leading
``...`` in ``x_spec`` and ``y_spec`` stands for the batch axis and any axes after it).
Every output position is its own neuron, so the hidden group's neuron shape is that
of ``y`` without batch. The letters fall into four classes:

- ``C``, *contracted*: in ``w_spec``, not in ``y_spec`` (each must be in ``x_spec``);
- ``D``, *diagonal*: in ``w_spec`` and ``y_spec`` (a weight entry feeds only the
  outputs with its own ``D`` index);
- ``S``, *shared*: in ``y_spec`` and ``x_spec`` only (the weight is reused along it,
  as a conv kernel is along positions);
- ``R``: in ``x_spec`` only (summed away before anything else).

Since ``∂y[b, n]/∂w[c, d] = [d = d(n)] · x̄[b, c, d(n), s(n)]`` with ``x̄`` the input
summed over ``R``, D-RTRL keeps one trace per neuron and contracted index, ``E`` of
layout (B, K, *C, *N) with ``N`` the output neuron axes (``D`` and ``S``):

.. math::
    E_t[b,k,c,n] = Σ_{k'} D_t[b,k,k',n] E_{t-1}[b,k',c,n] + g_t[b,k,n]\\, x̄_t[b, c, n]

and the gradient ``Σ_{b,k,s} δ[b,k,n] E[b,k,c,n]`` lands in ``w``'s own layout. Exact
for D-RTRL; memory B·K·|C|·|N| (that of a dense matmul when there is no ``S`` axis,
a conv's when there is). ES-D-RTRL keeps the smoothed ``x̄`` and contracts
``Σ_{b,s} ε^x̄[b,c,n] s[b,n]``. The chunked D-RTRL form is available.

A rule holds its equation, and the compiler hands a rule no static argument of an op
but its convolutions (:class:`~disttrace.ops.OpBody`); so each equation has its own
rule and jit, registered on first use under ``einsum_<x>_<w>_<y>`` with the letters
renamed in order of first appearance (``'bi,ij->bj'`` and ``'nk,km->nm'`` share one).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable

import jax
import jax.numpy as jnp

from disttrace.ops._aliases import transformed
from disttrace.ops._blocks import apply_block
from disttrace.ops._registry import TraceOpRule, get_rule, register, trace_op
from disttrace.units import attach, split

__all__ = ["einsum"]

_ALLOWED = (
    "an explicit two-operand equation 'x_spec,w_spec->y_spec' of lowercase letters, each letter at most once "
    "per spec, whose x_spec and y_spec start with the same batch letter (or '...') that is not in w_spec; "
    "every weight letter must be in x_spec or y_spec, every output letter in x_spec or w_spec; '...' only "
    "at the start of x_spec and y_spec (e.g. 'bi,ij->bj', '...i,ij->...j', 'bhi,hij->bhj')"
)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A batched equation with canonical letters; see the module docstring."""

    x: str
    w: str
    y: str

    @property
    def batch(self) -> str:
        return self.x[0]

    @property
    def c(self) -> str:  # contracted
        return "".join(ch for ch in self.w if ch not in self.y)

    @property
    def n(self) -> str:  # output neuron axes
        return self.y[1:]

    @property
    def xr(self) -> str:  # x without the letters summed away up front
        return "".join(ch for ch in self.x if ch in self.w or ch in self.y)

    @property
    def equation(self) -> str:
        return f"{self.x},{self.w}->{self.y}"


def _parse(equation, x_ndim: int) -> tuple[_Spec, bool]:
    """The canonical batched spec of ``equation`` for an ``x`` of rank ``x_ndim``, and
    whether ``x`` is unbatched (a ``...`` standing for no axis: a batch axis is added)."""
    bad = lambda why: ValueError(f"einsum: argument 'equation' {equation!r} {why}; allowed: {_ALLOWED}")
    if not isinstance(equation, str):
        raise bad("is not a string")
    eq = equation.replace(" ", "")
    if eq.count("->") != 1:
        raise bad("is not explicit ('lhs->rhs')")
    lhs, y = eq.split("->")
    if lhs.count(",") != 1:
        raise bad("does not have exactly two operands (x, weight)")
    x, w = lhs.split(",")
    unbatched = False
    if "." in x or "." in y or "." in w:
        if not (x.startswith("...") and y.startswith("...")) or "." in w or "." in x[3:] + y[3:]:
            raise bad("uses '...' other than at the start of both x_spec and y_spec")
        n_lead = x_ndim - (len(x) - 3)
        if n_lead < 0:
            raise bad(f"needs x of rank >= {len(x) - 3}; got rank {x_ndim}")
        free = [ch for ch in string.ascii_lowercase if ch not in x + w + y]
        unbatched, n_lead = n_lead == 0, max(n_lead, 1)
        if len(free) < n_lead:
            raise bad("leaves too few free letters for the axes of '...'")
        lead = "".join(free[:n_lead])
        x, y = lead + x[3:], lead + y[3:]
    for name, spec in (("x_spec", x), ("w_spec", w), ("y_spec", y)):
        if not spec or not all(ch in string.ascii_lowercase for ch in spec):
            raise bad(f"has a {name} that is empty or not lowercase letters")
        if len(set(spec)) != len(spec):
            raise bad(f"repeats a letter in {name}")
    if x[0] != y[0] or x[0] in w:
        raise bad("is not in batched form (x_spec and y_spec must start with the batch letter, absent from w_spec)")
    if set(y) - set(x) - set(w):
        raise bad(f"has output letters {sorted(set(y) - set(x) - set(w))} in no operand")
    if set(w) - set(x) - set(y):
        raise bad(f"has weight letters {sorted(set(w) - set(x) - set(y))} in neither x_spec nor y_spec")
    rename = {}
    for ch in x + w + y:
        rename.setdefault(ch, string.ascii_lowercase[len(rename)])
    canon = lambda s: "".join(rename[ch] for ch in s)
    return _Spec(canon(x), canon(w), canon(y)), unbatched


@dataclasses.dataclass(frozen=True)
class _EinsumRule(TraceOpRule):
    """Trace rule of one einsum equation (``spec``); trace layout (B, K, *C, *N)."""

    spec: _Spec | None = None
    chunkable: bool = True
    es_foldable: bool = True  # es_grad reads no operand

    def _xbar(self, x):
        s = self.spec
        return x if s.xr == s.x else jnp.einsum(f"{s.x}->{s.xr}", x)

    def dr_zeros(self, operands, batch, k, neuron_shape, dtype):
        s, w = self.spec, operands[1]
        c_shape = tuple(w.shape[s.w.index(ch)] for ch in s.c)
        return (jnp.zeros((batch, k, *c_shape, *neuron_shape), dtype),)

    def dr_outer(self, g, operands):
        s = self.spec
        x = self._xbar(operands[0]).astype(g.dtype)
        return (jnp.einsum(f"{s.xr},{s.batch}K{s.n}->{s.batch}K{s.c}{s.n}", x, g),)

    def dr_decay(self, d, trace):
        return (apply_block(d, trace[0]),)

    def dr_contract(self, delta, trace):
        s = self.spec
        return (jnp.einsum(f"{s.batch}K{s.n},{s.batch}K{s.c}{s.n}->{s.w}", delta, trace[0]),)

    # ---- chunked D-RTRL
    def chunk_input(self, operands):
        return self._xbar(operands[0])

    def outer_sum(self, gs, xs, operands):
        s = self.spec
        return (jnp.einsum(f"U{s.xr},U{s.batch}K{s.n}->{s.batch}K{s.c}{s.n}", xs.astype(gs.dtype), gs),)

    def input_vjp_sum(self, xs, cs, operands):
        s = self.spec
        return (jnp.einsum(f"U{s.xr},U{s.batch}{s.n}->{s.w}", xs.astype(cs.dtype), cs),)

    # ---- ES-D-RTRL
    def es_input(self, operands):
        return self._xbar(operands[0])

    def es_grad(self, x_trace, signal, operands):
        s = self.spec
        return (jnp.einsum(f"{s.xr},{s.batch}{s.n}->{s.w}", x_trace.astype(signal.dtype), signal),)


_OPS: dict[str, Callable] = {}


def _op_for(spec: _Spec) -> Callable:
    """The jit of ``spec``'s equation, registering its rule on first use."""
    name = f"einsum_{spec.x}_{spec.w}_{spec.y}"
    if name not in _OPS:
        if get_rule("dt__" + name) is None:
            register(_EinsumRule(name=name, input_argnum=0, weight_argnums=(1,), spec=spec))
        equation = spec.equation

        def body(x, w):
            return jnp.einsum(equation, x, w)

        _OPS[name] = trace_op(name, body)
    return _OPS[name]


def einsum(equation: str, x: jax.Array, weight: jax.Array, *, weight_fn: Callable | None = None) -> jax.Array:
    """Two-operand einsum, linear in ``weight``, whose weight takes part in eligibility traces.

    braintrace 0.2.8's signature. Computes ``jnp.einsum(equation, x, weight_fn(weight))``
    with the gradient taken with respect to the raw ``weight``.

    Args:
      equation: ``'x_spec,w_spec->y_spec'`` in batched form: ``x_spec`` and ``y_spec``
        start with the batch letter (absent from ``w_spec``) or with ``'...'`` (the
        batch axis and any axes after it; an ``x`` with no axis there is unbatched).
        Each weight letter must be in ``x_spec`` (contracted) or ``y_spec`` (diagonal,
        as a group axis); output letters absent from the weight must be in ``x_spec``
        (a weight shared along them, like a conv kernel along positions). Examples:
        ``'bi,ij->bj'``, ``'...i,ij->...j'``, ``'bhi,hij->bhj'`` (per-group weights),
        ``'bti,ij->btj'`` (shared along t).
      x: input of rank ``len(x_spec)`` (with ``'...'``: any rank that leaves the named
        axes).
      weight: weight of rank ``len(w_spec)``.
      weight_fn: optional shape-preserving transform of ``weight``.

    Returns:
      ``y`` with the axes of ``y_spec``; its non-batch axes are the neurons of the
      hidden group it feeds.

    Raises:
      ValueError: if the equation is not of that form (naming it and what is allowed),
        or ``x`` / ``weight`` do not fit it.

    Example:
      >>> import jax.numpy as jnp, disttrace as dt
      >>> dt.einsum("bhi,hij->bhj", jnp.ones((5, 2, 3)), jnp.ones((2, 3, 4))).shape
      (5, 2, 4)
      >>> dt.einsum("...i,ij->...j", jnp.ones(3), jnp.ones((3, 4))).shape
      (4,)
    """
    (x, x_unit), (weight, w_unit) = split(x), split(weight)
    x = jnp.asarray(x)
    spec, unbatched = _parse(equation, x.ndim)
    weight = jnp.asarray(transformed("einsum", "weight_fn", weight_fn, weight))
    if unbatched:
        x = x[None]
    if x.ndim != len(spec.x):
        raise ValueError(f"einsum: argument 'x' must have rank {len(spec.x)} for {equation!r}; got shape {x.shape}")
    if weight.ndim != len(spec.w):
        raise ValueError(
            f"einsum: argument 'weight' must have rank {len(spec.w)} for {equation!r}; got shape {weight.shape}"
        )
    sizes = {}
    for spec_s, arr in ((spec.x, x), (spec.w, weight)):
        for ch, size in zip(spec_s, arr.shape):
            if sizes.setdefault(ch, size) != size:
                raise ValueError(
                    f"einsum: the shapes of 'x' {x.shape} and 'weight' {weight.shape} disagree on an axis of "
                    f"{equation!r}"
                )
    y = _op_for(spec)(x, weight)
    return attach(y[0] if unbatched else y, x_unit * w_unit)
