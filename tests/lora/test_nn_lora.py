"""``disttrace.nn.LoRA``: braintrace's constructor and layout, ``(alpha/r)·x·A·B
(+ base(x))``, an init that lets the adapter train, and a frozen base module."""

import re

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace import lora
from disttrace.nn._lora import LoRA
from disttrace.testing import EXACT_F64_ATOL


def test_layout_and_default_scale_is_one_over_rank(x64):
    brainstate.random.seed(0)
    layer = LoRA(4, 2, 3, init="gaussian")
    w = layer.weight.value
    assert w["lora_a"].shape == (4, 2) and w["lora_b"].shape == (2, 3)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    np.testing.assert_allclose(layer(x), x @ w["lora_a"] @ w["lora_b"] / 2, rtol=0, atol=EXACT_F64_ATOL)  # braintrace: 1/r
    scaled = LoRA(4, 2, 3, init="gaussian", alpha=6.0)
    ws = scaled.weight.value
    np.testing.assert_allclose(scaled(x), 3.0 * x @ ws["lora_a"] @ ws["lora_b"], rtol=0, atol=EXACT_F64_ATOL)


def test_defaults_are_braintraces():
    brainstate.random.seed(0)
    base = dt.nn.Linear(4, 3)
    layer = LoRA(4, 2, 3, base_module=base)  # braintrace 0.2.8: both factors LeCun normal, base trained
    w = layer.weight.value
    assert float(jnp.abs(w["lora_a"]).max()) > 0 and float(jnp.abs(w["lora_b"]).max()) > 0
    assert set(base.states(brainstate.ParamState)) == {("weight",)}
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    np.testing.assert_allclose(layer(x), base(x) + x @ w["lora_a"] @ w["lora_b"] / 2, rtol=1e-6, atol=1e-6)


def test_zero_b_equals_the_base_and_trains():
    brainstate.random.seed(0)
    base = dt.nn.Linear(4, 3)
    layer = LoRA(4, 2, 3, base_module=base, init="zero_b")
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    np.testing.assert_array_equal(layer(x), base(x))
    assert float(jnp.abs(layer.weight.value["lora_a"]).max()) > 0  # never both zero
    grads = jax.grad(lambda w: jnp.sum(lora_out(layer, w, x)))(layer.weight.value)
    assert float(jnp.abs(grads["lora_b"]).max()) > 0


def lora_out(layer, w, x):
    return dt.ops.lora_matmul(x, w["lora_b"], w["lora_a"], layer.scale)


def test_both_factors_zero_is_rejected():
    with pytest.raises(ValueError, match="'kernel_init'.*both factors"):
        LoRA(4, 2, 3, kernel_init=brainstate.nn.init.ZeroInit(), init="zero_b")
    with pytest.raises(ValueError, match="'kernel_init'"):
        LoRA(4, 2, 3, kernel_init=brainstate.nn.init.ZeroInit())


def test_base_is_trained_unless_frozen():
    base = dt.nn.Linear(4, 3)
    LoRA(4, 2, 3, base_module=base, freeze_base=True)
    assert not base.states(brainstate.ParamState) and isinstance(base.weight, lora.FrozenState)
    trained = dt.nn.Linear(4, 3)
    LoRA(4, 2, 3, base_module=trained)
    assert set(trained.states(brainstate.ParamState)) == {("weight",)}


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"in_features": 0}, "in_features"),
        ({"lora_rank": True}, "lora_rank"),
        ({"lora_rank": 4}, "lora_rank"),  # > min(in, out) = 3
        ({"out_features": 2.0}, "out_features"),
        ({"init": "zeros"}, "init"),
        ({"alpha": -1.0}, "alpha"),
        ({"base_module": 3}, "base_module"),
        ({"freeze_base": 1}, "freeze_base"),
        ({"in_size": (7, 5)}, "in_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, arg):
    args = {"in_features": 4, "lora_rank": 2, "out_features": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(f"'{arg}'")):
        LoRA(args.pop("in_features"), args.pop("lora_rank"), args.pop("out_features"), **args)


def test_inputs_with_any_leading_axes_and_a_wrong_last_axis():
    brainstate.random.seed(0)
    layer = LoRA(4, 2, 3, init="gaussian", in_size=(6, 4))
    assert layer.out_size == (6, 3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4))
    y = layer(x)
    assert y.shape == (2, 6, 3)
    np.testing.assert_allclose(y[1, 2], layer(x[1, 2]), rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape("'x'")):
        layer(jnp.ones((2, 5)))
