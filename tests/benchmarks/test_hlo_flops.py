"""``benchmarks/_hlo_flops.dot_flops``: matrix-product FLOPs of one call, loops counted by
their trip counts (XLA's ``cost_analysis`` counts a loop body once)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _hlo_flops import dot_flops  # noqa: E402


def _flops(fn, *args):
    return dot_flops(jax.jit(fn).lower(*args).compile().as_text())


def test_one_product():
    assert _flops(lambda a, b: a @ b, jnp.ones((8, 64)), jnp.ones((64, 32))) == 2 * 8 * 64 * 32


def test_batched_product():
    fn = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
    assert _flops(fn, jnp.ones((3, 4, 5)), jnp.ones((3, 5, 6))) == 2 * 3 * 4 * 5 * 6


@pytest.mark.parametrize("t_len", [10, 100])
def test_scan_counts_every_step(t_len):
    def fn(w, xs):
        return jax.lax.scan(lambda c, x: (c + jnp.sum(x @ w), None), 0.0, xs)[0]

    assert _flops(fn, jnp.ones((64, 64)), jnp.ones((t_len, 8, 64))) == t_len * 2 * 8 * 64 * 64


def test_nested_scans_multiply():
    def fn(w, xs):
        def outer(c, x):
            return jax.lax.scan(lambda c2, x2: (c2 + x2 @ w, None), c, x)[0], None

        return jax.lax.scan(outer, jnp.zeros((8, 64)), xs)[0]

    assert _flops(fn, jnp.ones((64, 64)), jnp.ones((5, 7, 8, 64))) == 35 * 2 * 8 * 64 * 64


def test_a_loop_of_unknown_length_is_refused():
    def fn(w, x):
        return jax.lax.while_loop(lambda c: jnp.sum(c) < 1e6, lambda c: c @ w + 1.0, x)

    with pytest.raises(ValueError, match="trip count"):
        _flops(fn, jnp.ones((4, 4)), jnp.ones((2, 4)))


def test_not_hlo_is_refused():
    with pytest.raises(ValueError, match="ENTRY"):
        dot_flops("not an HLO module")
