"""LoRA specs and factor initialisation: defaults, decision functions, validation."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace import lora


def _params():
    return {
        "dense": {"w": jnp.ones((16, 32)), "b": jnp.ones(32)},
        "conv": jnp.ones((3, 3, 4, 8)),  # 3x3 window, 4 -> 8 channels
        "readout": jnp.ones((32, 2)),
        "gain": jnp.ones(()),
        "idx": jnp.arange(5),
    }


def test_default_spec_adapts_matrices_and_kernels_and_freezes_the_rest():
    spec = lora.make_lora_spec(_params(), rank=4)
    assert spec["dense"]["w"] == 4 and spec["conv"] == 4
    assert spec["readout"] == 2  # a matrix narrower than `rank` gets its full rank min(in, out)
    assert spec["dense"]["b"] is lora.FREEZE and spec["gain"] is lora.FREEZE and spec["idx"] is lora.FREEZE
    tuned = lora.make_lora_spec(_params(), rank=4, tune_vectors=True)
    assert tuned["dense"]["b"] is lora.FULL and tuned["gain"] is lora.FULL
    assert tuned["idx"] is lora.FREEZE  # integers never train
    assert jax.tree.structure(spec) == jax.tree.structure(_params())


def test_decision_fn_sees_plain_paths_and_its_choice_is_kept():
    seen = []

    def decide(path, leaf):
        seen.append(path)
        return 3 if path == ("dense", "w") else lora.FREEZE

    spec = lora.make_lora_spec(_params(), decide)
    assert ("dense", "w") in seen and ("conv",) in seen
    assert spec["dense"]["w"] == 3 and spec["conv"] is lora.FREEZE


@pytest.mark.parametrize(
    "decision, match",
    [
        (0, "1 <= r <= min(in, out) = 16"),
        (17, "got 17"),
        (True, "got True"),
        ("full", "FREEZE, FULL or an int rank"),
    ],
)
def test_bad_rank_names_the_leaf_the_value_and_the_range(decision, match):
    with pytest.raises(ValueError, match=re.escape(match)) as err:
        lora.make_lora_spec(_params(), lambda p, leaf: decision if p == ("dense", "w") else lora.FREEZE)
    assert "['dense']['w']" in str(err.value)


def test_rank_of_a_vector_or_integer_leaf_is_rejected():
    with pytest.raises(ValueError, match=re.escape("['dense']['b']")):
        lora.make_lora_spec(_params(), lambda p, leaf: 2 if p == ("dense", "b") else lora.FREEZE)
    with pytest.raises(ValueError, match="floating-point"):
        lora.make_lora_spec({"i": jnp.zeros((4, 4), jnp.int32)}, lambda p, leaf: 2)
    with pytest.raises(ValueError, match="floating-point"):
        lora.make_lora_spec({"i": jnp.zeros(4, jnp.int32)}, lambda p, leaf: lora.FULL)


def test_conv_rank_is_bounded_by_the_flattened_fan_in_not_the_window():
    params = {"k": jnp.ones((3, 3, 4, 64))}  # adapted as a 36 x 64 matrix
    assert lora.make_lora_spec(params, lambda p, leaf: 36)["k"] == 36
    with pytest.raises(ValueError, match=re.escape("min(in, out) = 36")):
        lora.make_lora_spec(params, lambda p, leaf: 37)


@pytest.mark.parametrize("arg, value", [("rank", 0), ("rank", True), ("tune_vectors", 1), ("decision_fn", 3)])
def test_bad_arguments_are_named(arg, value):
    with pytest.raises(ValueError, match=repr(arg)):
        lora.make_lora_spec(_params(), **{arg: value})


def test_init_shapes_scale_and_zero_b():
    params = _params()
    spec = lora.make_lora_spec(params, rank=4, tune_vectors=True)
    lp = lora.init_lora(params, spec, jax.random.PRNGKey(0), alpha=8.0)
    assert lp["dense"]["w"].a.shape == (16, 4) and lp["dense"]["w"].b.shape == (4, 32)
    assert lp["conv"].a.shape == (3 * 3 * 4, 4) and lp["conv"].b.shape == (4, 8)
    assert lp["dense"]["w"].scale == 2.0 and lp["readout"].scale == 4.0  # alpha / r with r = 4 and 2
    assert float(jnp.abs(lp["dense"]["w"].b).max()) == 0.0 and float(jnp.abs(lp["dense"]["w"].a).max()) > 0
    assert lp["idx"] is None  # frozen
    np.testing.assert_array_equal(lp["dense"]["b"], params["dense"]["b"])  # FULL: a copy of the base value
    rs = lora.init_lora(params, spec, jax.random.PRNGKey(0), alpha=8.0, rslora=True)
    assert rs["dense"]["w"].scale == 8.0 / math.sqrt(4)
    # every leaf gets its own key
    assert not np.allclose(lp["dense"]["w"].a[:, :2], lp["readout"].a[:16, :2])


def test_gaussian_init_makes_both_factors_random():
    params = {"w": jnp.ones((64, 64))}
    spec = lora.make_lora_spec(params, rank=8)
    f = lora.init_lora(params, spec, jax.random.PRNGKey(1), init="gaussian")["w"]
    assert float(jnp.abs(f.b).max()) > 0 and float(jnp.abs(f.a).max()) > 0
    np.testing.assert_allclose(float(jnp.std(f.a)), 1 / 8, rtol=0.1)  # N(0, 1/in)
    np.testing.assert_allclose(float(jnp.std(f.b)), 1 / math.sqrt(8), rtol=0.1)  # N(0, 1/r)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": "zeros"}, "'init'"),
        ({"alpha": 0.0}, "'alpha'"),
        ({"alpha": True}, "'alpha'"),
        ({"rslora": 1}, "'rslora'"),
        ({"key": 3}, "'key'"),
    ],
)
def test_init_lora_bad_arguments_are_named(kwargs, match):
    params = {"w": jnp.ones((4, 4))}
    spec = lora.make_lora_spec(params, rank=2)
    args = {"key": jax.random.PRNGKey(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        lora.init_lora(params, spec, **args)


def test_init_lora_rejects_a_spec_of_another_tree():
    with pytest.raises(ValueError, match="'spec'"):
        lora.init_lora({"w": jnp.ones((4, 4))}, {"v": 2}, jax.random.PRNGKey(0))


def test_new_style_keys_are_accepted():
    params = {"w": jnp.ones((4, 4))}
    spec = lora.make_lora_spec(params, rank=2)
    a = lora.init_lora(params, spec, jax.random.key(0))["w"].a
    b = lora.init_lora(params, spec, jax.random.PRNGKey(0))["w"].a
    np.testing.assert_array_equal(a, b)
