"""Each trace op computes its plain result and works under jit, vmap and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace import ops

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(KEY, (2, 3))
W = jax.random.normal(jax.random.PRNGKey(1), (3, 4))

CASES = {
    "matmul": (lambda w: ops.matmul(X, w, jnp.ones(4)), W, lambda w: X @ w + 1.0),
    "element_wise": (lambda w: ops.element_wise(w, jnp.exp), W, jnp.exp),
    "lora": (lambda w: ops.lora_matmul(X, w[:1], w[:, :1], 0.5), W, lambda w: 0.5 * X @ w[:, :1] @ w[:1]),
    "embedding": (lambda w: ops.embedding(jnp.array([2, 0]), w), W, lambda w: w[jnp.array([2, 0])]),
    "sparse": (
        lambda w: ops.sparse_matmul(X, w[0, :2], [0, 2], [1, 3], 4),
        W,
        lambda w: X @ jnp.zeros((3, 4)).at[0, 1].set(w[0, 0]).at[2, 3].set(w[0, 1]),
    ),
    "conv": (
        lambda w: ops.conv(jnp.ones((2, 5, 3)), w.reshape(1, 3, 4)),
        W,
        lambda w: jax.lax.conv_general_dilated(jnp.ones((2, 5, 3)), w.reshape(1, 3, 4), (1,), "SAME",
                                               dimension_numbers=("NHC", "HIO", "NHC")),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_jit_grad(name):
    fn, w, ref = CASES[name]
    np.testing.assert_allclose(fn(w), ref(w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(w), ref(w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda w: fn(w).sum())(w), jax.grad(lambda w: ref(w).sum())(w), rtol=1e-5, atol=1e-6
    )
    batched = jax.vmap(fn)(jnp.stack([w, 2 * w]))
    np.testing.assert_allclose(batched[1], ref(2 * w), rtol=1e-5, atol=1e-5)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="'x'"):
        ops.matmul(jnp.ones((2, 5)), W)
    with pytest.raises(ValueError, match="'bias'"):
        ops.matmul(X, W, jnp.ones(3))
    with pytest.raises(ValueError, match="'cols'"):
        ops.sparse_matmul(X, jnp.ones(1), [0], [9], 4)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        ops.register(ops.MatmulRule(name="matmul", input_argnum=0, weight_argnums=(1,)))
    assert "matmul" in dt.ops.registered_names()
