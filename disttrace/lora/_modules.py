"""LoRA on brainstate models: frozen weights and low-rank adapted parameters in place.

The online learners train a model's ``brainstate.ParamState``s and nothing else
(``compiler.ModuleBinding``). So *frozen* means *held in a state that is not a
ParamState*: :class:`FrozenState`. The compiler reads a state the step never writes as
a constant: a trace op whose weights are constants keeps no trace and gets no
gradient, and a constant may be part of a trace-op weight (``W_frozen + s·A·B``).

- :func:`freeze` turns every ``ParamState`` of a module into a :class:`FrozenState`.
- :func:`adapt` applies a LoRA spec to every ``ParamState`` of a module: each one
  with a LoRA leaf becomes a :class:`LoRAParam` node holding the frozen base
  (:class:`FrozenState`) and the adapter (a ``ParamState``), whose ``.value`` is the
  merged weight tree. The layers' code is unchanged (it reads ``.value``); the op
  receives ``W + s·A·B``, whose D-RTRL trace is the dense weight's (B·K·I·O, no more
  than before adaptation) and whose trace-space gradient the learner maps to ``A``
  and ``B`` by the VJP of the merge. Only the forward pass forms the (I, O) weight; the
  layers written with the factorised helpers (``disttrace.nn.LoRA``,
  :func:`disttrace.lora.matmul`) do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import brainstate
import jax

from disttrace.lora._factors import init_lora
from disttrace.lora._merge import join, merge, split_trainable
from disttrace.lora._spec import FREEZE, make_lora_spec

__all__ = ["FrozenState", "LoRAParam", "adapt", "freeze"]


class FrozenState(brainstate.State):
    """A weight that is read and never learned (not a ``ParamState``).

    The online learners give it no trace, no gradient and no update; an optimizer built
    on ``learner.params()`` never sees it.

    Example:
      >>> import jax.numpy as jnp
      >>> from disttrace.lora import FrozenState
      >>> FrozenState(jnp.ones(3)).value.shape
      (3,)
    """


class LoRAParam(brainstate.graph.Node):
    """A parameter tree adapted by LoRA: frozen base + trainable adapter, read as one value.

    Attributes:
      base: :class:`FrozenState` with the frozen half of :func:`split_trainable` (base
        weights; ``None`` at FULL slots).
      adapter: ``ParamState`` with the trainable half (LoRA factors, FULL leaves).

    ``.value`` is ``merge(base, adapter, spec)``: the tree the replaced ``ParamState``
    held, with ``W + s·A·B`` at LoRA leaves.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from disttrace import lora
      >>> value = {"weight": jnp.ones((4, 3)), "bias": jnp.zeros(3)}
      >>> p = lora.LoRAParam(value, lora.make_lora_spec(value, rank=2), jax.random.PRNGKey(0))
      >>> type(p.adapter.value["weight"]).__name__, p.adapter.value["bias"]
      ('LoRAFactors', None)
      >>> bool((p.value["weight"] == 1.0).all())  # B = 0: the merged value is the base
      True
    """

    def __init__(self, value: Any, spec: Any, key: jax.Array, *, alpha: float = 1.0, init: str = "zero_b",
                 rslora: bool = False, param_type: type = brainstate.ParamState):
        lora_params = init_lora(value, spec, key, alpha=alpha, init=init, rslora=rslora)
        frozen, trainable = _halves(value, lora_params, spec)
        self._spec_leaves, self._spec_tree = tuple(jax.tree.leaves(spec)), jax.tree.structure(spec)
        self.base = FrozenState(frozen)
        self.adapter = param_type(trainable)

    @property
    def spec(self) -> Any:
        return jax.tree.unflatten(self._spec_tree, self._spec_leaves)

    @property
    def value(self) -> Any:
        return merge(self.base.value, self.adapter.value, self.spec)


def _halves(value, lora_params, spec):
    """(frozen, trainable) of the joined tree of ``value`` and ``lora_params``."""
    return split_trainable(join(value, lora_params, spec), spec)


def _set_at(root, path: tuple, new) -> None:
    obj = root
    for k in path[:-1]:
        obj = obj[k] if isinstance(obj, list | tuple | dict) else getattr(obj, k)
    last = path[-1]
    if isinstance(obj, tuple):
        raise ValueError(
            f"cannot replace the state at {'.'.join(map(str, path))}: it is held in a tuple; hold it in a list, a "
            "dict or a module attribute"
        )
    if isinstance(obj, list | dict):
        obj[last] = new
    else:
        setattr(obj, last, new)


def _param_states(module) -> dict:
    if not isinstance(module, brainstate.graph.Node):
        raise ValueError(f"argument 'module' must be a brainstate module; got {type(module).__name__}")
    return {p: s for p, s in module.states().items() if isinstance(s, brainstate.ParamState)}


def freeze(module):
    """Makes every ``ParamState`` of ``module`` a :class:`FrozenState` (in place).

    Args:
      module: a brainstate module (e.g. the ``base_module`` of ``disttrace.nn.LoRA``).

    Returns:
      ``module``, now with no ``ParamState``.

    Raises:
      ValueError: if ``module`` is not a brainstate module, or a state sits where it
        cannot be replaced (a tuple).

    Example:
      >>> import brainstate, disttrace as dt
      >>> from disttrace import lora
      >>> layer = lora.freeze(dt.nn.Linear(3, 4))
      >>> len(layer.states(brainstate.ParamState)), type(layer.weight).__name__
      (0, 'FrozenState')
    """
    for path, st in _param_states(module).items():
        _set_at(module, path, FrozenState(st.value))
    return module


def adapt(
    module,
    key: jax.Array,
    *,
    decision_fn: Callable[[tuple, Any], Any] | None = None,
    rank: int = 8,
    tune_vectors: bool = False,
    alpha: float = 1.0,
    init: str = "zero_b",
    rslora: bool = False,
):
    """Applies LoRA to every ``ParamState`` of a brainstate model, in place.

    For each ``ParamState`` (path ``p``, value tree ``v``) the spec
    ``make_lora_spec(v, decision_fn', rank, tune_vectors)`` is made, where ``decision_fn'``
    calls ``decision_fn(p + leaf_path, leaf)``. A state whose leaves are all FREEZE
    becomes a :class:`FrozenState`; one with a LoRA leaf becomes a :class:`LoRAParam`;
    an all-FULL state stays as it is.

    Args:
      module: a brainstate model.
      key: a ``jax.random`` key (folded per state).
      decision_fn, rank, tune_vectors: as :func:`make_lora_spec`.
      alpha, init, rslora: as :func:`init_lora`.

    Returns:
      ``module``. Its ``ParamState``s are now the adapters (and FULL leaves) only.

    Raises:
      ValueError: on a bad argument or decision (naming the leaf path).

    Example:
      >>> import brainstate, jax, disttrace as dt
      >>> from disttrace import lora
      >>> net = lora.adapt(dt.nn.LeakyRate(16, 32), jax.random.PRNGKey(0), rank=4)
      >>> sorted(p for p in net.states(brainstate.ParamState))
      [('weight', 'adapter')]
    """
    for i, (path, st) in enumerate(_param_states(module).items()):
        fn = None if decision_fn is None else (lambda sub, leaf, path=path: decision_fn(tuple(path) + tuple(sub), leaf))
        spec = make_lora_spec(st.value, fn, rank=rank, tune_vectors=tune_vectors)
        decisions = jax.tree.leaves(spec)
        if all(d is FREEZE for d in decisions):
            _set_at(module, path, FrozenState(st.value))
        elif any(isinstance(d, int) for d in decisions) or any(d is FREEZE for d in decisions):
            node = LoRAParam(st.value, spec, jax.random.fold_in(key, i), alpha=alpha, init=init, rslora=rslora,
                             param_type=type(st))
            _set_at(module, path, node)
    return module
