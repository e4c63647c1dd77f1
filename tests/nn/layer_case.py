"""What the shared layer suite (``tests/nn/test_layers.py``) needs to know about a layer.

Each ``tests/nn/cases_<family>.py`` module defines ``CASES: list[LayerCase]``; the
suite collects every such module, so adding a family never touches the suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer under test.

    Attributes:
      name: the test id.
      make: builds the layer alone (no argument).
      in_shape: one sample's input shape, without the batch axis.
      out_shape: one sample's output shape (needed by the default ``model``).
      model: builds the model the gradient test trains (default: ``Integrate(make())``,
        a leaky element-wise integrator of the layer's output, so a stateless layer
        gets a hidden state and D-RTRL stays exact).
      exact: D-RTRL equals BPTT on ``model`` (float64, atol ``EXACT_F64_ATOL``).
      es_exact: ES-D-RTRL equals BPTT too (all weights are element-wise: their
        traces are kept exactly by every algorithm).
      floors: ``{"d_rtrl": f, "es_d_rtrl": f}`` cosine floors to BPTT on ``model``,
        fixed from a measurement recorded next to the case; never lowered. For exact
        cases the ES floor alone is given.
      make_input: ``make_input(key, shape) -> array`` (default standard normal).
      bad_shape: an input shape (with batch axis 2) the layer must reject with a
        ValueError naming ``'x'`` (default: ``in_shape`` with the last axis + 1).
      bad_input: builds an input (batch 2) the layer must reject with a ValueError
        naming ``'x'``, when a wrong shape is not the natural bad input (default none).
      warns: a message regex for an expected ``UserWarning`` at compile time (the
        GRU-style same-step-only weights), or ``None``.
    """

    name: str
    make: Callable[[], brainstate.nn.Module]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...] | None = None
    model: Callable[[], brainstate.nn.Module] | None = None
    exact: bool = True
    es_exact: bool = False
    floors: dict = dataclasses.field(default_factory=dict)
    make_input: Callable | None = None
    bad_shape: tuple[int, ...] | None = None
    bad_input: Callable | None = None
    warns: str | None = None

    def build_model(self) -> brainstate.nn.Module:
        if self.model is not None:
            return self.model()
        if self.out_shape is None:
            raise ValueError(f"LayerCase {self.name!r}: give 'out_shape' or 'model'")
        return Integrate(self.make(), self.out_shape)

    def inputs(self, key, lead: tuple[int, ...]) -> jax.Array:
        shape = (*lead, *self.in_shape)
        if self.make_input is not None:
            return self.make_input(key, shape)
        return jax.random.normal(key, shape, dtype=jnp.zeros(()).dtype)


class Integrate(brainstate.nn.Module):
    """``h_t = 0.8 h_{t-1} + tanh(layer(x_t))``: gives a stateless layer a hidden state
    with element-wise dynamics, so D-RTRL is exact for the layer's weights."""

    def __init__(self, layer, out_shape):
        super().__init__()
        self.layer, self.out_shape = layer, tuple(out_shape)

    def init_state(self, batch_size=None, **kwargs):
        lead = () if batch_size is None else (batch_size,)
        self.h = brainstate.HiddenState(jnp.zeros((*lead, *self.out_shape)))

    def update(self, x):
        y = jnp.tanh(self.layer(x))
        self.h.value = 0.8 * self.h.value + y
        return self.h.value


Stack = brainstate.nn.Sequential  # applies layers in order; params at ('layers', i, ...)
