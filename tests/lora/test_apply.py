"""Applying LoRA without forming ``W + s·A·B``: at init the adapted model is the base
model; with non-zero factors it is the merged model (dense, transposed, conv,
embedding), in pure functions and in brainstate models; merge, join and split."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace import lora
from disttrace.testing import EXACT_F64_ATOL
from tests.lora.models import KINDS, N_IN, B, LeakyLoRA, LeakyMerged, base_params, drive, make_spec

T = 6


def _x(kind):
    return jax.random.normal(jax.random.PRNGKey(5), (B, N_IN))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_b_adapter_equals_the_base_exactly(x64, kind):
    params, spec = base_params(kind), make_spec(kind)
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
    np.testing.assert_array_equal(drive(kind, tree, _x(kind)), drive(kind, params, _x(kind)))


@pytest.mark.parametrize("kind", KINDS)
def test_random_factors_equal_the_merged_weights(x64, kind):
    params, spec = base_params(kind), make_spec(kind, tune_bias=True)
    lp = lora.init_lora(params, spec, jax.random.PRNGKey(0), alpha=3.0, init="gaussian")
    tree = lora.join(params, lp, spec)
    merged = lora.merge(params, lp, spec)
    got, want = drive(kind, tree, _x(kind)), drive(kind, merged, _x(kind))
    assert float(jnp.abs(got - drive(kind, params, _x(kind))).max()) > 1e-2  # the adapter changes the output
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_model_with_lora_state_equals_the_merged_model(x64, kind):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    outs = []
    for cls in (LeakyLoRA, LeakyMerged):
        model = cls(kind)
        brainstate.nn.init_all_states(model, batch_size=B)
        outs.append(jnp.stack([model(x) for x in xs]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=EXACT_F64_ATOL)


def test_merge_values_and_donation(x64):
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (5, 4)), "b": jnp.ones(4), "k": jnp.ones((3, 2, 4))}
    spec = lora.make_lora_spec(params, rank=2, tune_vectors=True)
    lp = lora.init_lora(params, spec, jax.random.PRNGKey(1), alpha=2.0, init="gaussian")
    lp["b"] = lp["b"] + 1.0  # a trained FULL leaf
    merged = lora.merge(params, lp, spec)
    f = lp["w"]
    np.testing.assert_allclose(merged["w"], params["w"] + f.scale * f.a @ f.b, atol=1e-14)
    np.testing.assert_allclose(merged["k"], params["k"] + (lp["k"].scale * lp["k"].a @ lp["k"].b).reshape(3, 2, 4))
    np.testing.assert_array_equal(merged["b"], 2.0 * jnp.ones(4))
    copy = jax.tree.map(jnp.array, params)
    donated = lora.merge(copy, lp, spec, donate=True)
    jax.tree.map(np.testing.assert_array_equal, donated, merged)
    assert copy["w"].is_deleted()  # its buffer now belongs to the result


def test_split_and_join_are_inverse(x64):
    params = {"w": jnp.ones((5, 4)), "b": jnp.ones(4), "s": jnp.ones(())}
    spec = lora.make_lora_spec(params, lambda p, leaf: {"w": 2, "b": lora.FULL, "s": lora.FREEZE}[p[0]])
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
    frozen, trainable = lora.split_trainable(tree, spec)
    assert frozen["b"] is None and trainable["s"] is None
    assert isinstance(trainable["w"], lora.LoRAFactors) and frozen["w"].shape == (5, 4)
    again = lora.join(frozen, trainable, spec)
    assert jax.tree.structure(again) == jax.tree.structure(tree)
    jax.tree.map(np.testing.assert_array_equal, again, tree)
    np.testing.assert_array_equal(lora.merge(frozen, trainable, spec)["w"], params["w"])  # FULL slots not read


def test_tree_mismatches_name_the_argument():
    params = {"w": jnp.ones((5, 4))}
    spec = lora.make_lora_spec(params, rank=2)
    lp = lora.init_lora(params, spec, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="'lora_params'"):
        lora.merge(params, {"v": lp["w"]}, spec)
    with pytest.raises(ValueError, match=r"factors a \(5, 2\)"):
        lora.merge(params, {"w": lora.LoRAFactors(jnp.ones((5, 3)), jnp.ones((3, 4)), 1.0)}, spec)
    with pytest.raises(ValueError, match="'frozen'"):
        lora.join({"w": None}, lp, spec)
    with pytest.raises(ValueError, match="LoRAWeight"):
        lora.split_trainable(params, spec)
    with pytest.raises(ValueError, match="'donate'"):
        lora.merge(params, lp, spec, donate=1)


def test_helpers_validate_shapes():
    params = {"w": jnp.ones((5, 4))}
    spec = lora.make_lora_spec(params, rank=2)
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
    with pytest.raises(ValueError, match="'x'"):
        lora.matmul(jnp.ones((2, 4)), tree["w"])
    assert lora.matmul(jnp.ones((2, 4)), tree["w"], transpose=True).shape == (2, 5)
    assert lora.matmul(jnp.ones((3, 2, 5)), tree["w"]).shape == (3, 2, 4)  # leading axes are folded
    with pytest.raises(ValueError, match="'weight'"):
        lora.conv(jnp.ones((1, 8, 5)), tree["w"])


def test_pure_function_gradients_reach_only_the_factors(x64):
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (5, 4))}
    spec = lora.make_lora_spec(params, rank=2)
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(1), init="gaussian"), spec)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 5))
    g = jax.grad(lambda t: jnp.sum(jnp.sin(lora.matmul(x, t["w"]))))(tree)
    assert float(jnp.abs(g["w"].w).max()) == 0.0  # the base enters through stop_gradient
    ref = jax.grad(lambda f: jnp.sum(jnp.sin(x @ (params["w"] + f.scale * f.a @ f.b))))(tree["w"].factors)
    np.testing.assert_allclose(g["w"].factors.a, ref.a, rtol=0, atol=EXACT_F64_ATOL)
    np.testing.assert_allclose(g["w"].factors.b, ref.b, rtol=0, atol=EXACT_F64_ATOL)
