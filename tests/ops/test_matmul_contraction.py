"""The matmul rule's D-RTRL contraction: the pairwise batch sum equals ``sum(0)``, the
contraction-then-decay form equals the two separate calls bit for bit (NaN, inf and -0
included), and a loop-carried trace is updated in place (no trace-sized copy)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disttrace.ops._matmul import MatmulRule, batch_sum

_RULE = MatmulRule(name="matmul", input_argnum=0, weight_argnums=(1,))


@pytest.mark.parametrize("batch", [1, 3, 16, 48, 64])
def test_batch_sum_is_the_sum_over_the_batch(batch):
    x = jax.random.normal(jax.random.PRNGKey(batch), (batch, 5, 7))
    np.testing.assert_allclose(batch_sum(x), np.asarray(x).sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_contract_decay_equals_contract_and_decay(k):
    keys = jax.random.split(jax.random.PRNGKey(k), 4)
    b, n_in, n_out = 16, 6, 5
    delta = jax.random.normal(keys[0], (b, k, n_out))
    d = jax.random.normal(keys[1], (b, k, k, n_out))
    trace = (jax.random.normal(keys[2], (b, k, n_in, n_out)), jax.random.normal(keys[3], (b, k, n_out)))
    contracted, decayed = jax.jit(_RULE.dr_contract_decay)(delta, d, trace)
    want_c, want_d = jax.jit(lambda *a: (_RULE.dr_contract(a[0], a[2]), _RULE.dr_decay(a[1], a[2])))(delta, d, trace)
    for got, want in zip(contracted + decayed, want_c + want_d):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(contracted[0], jnp.einsum("bko,bkio->io", delta, trace[0]), rtol=1e-5, atol=1e-5)


def test_contract_decay_keeps_special_values_bit_for_bit():
    b, n_in, n_out = 4, 3, 4
    delta = jnp.ones((b, 1, n_out))
    trace = (jnp.full((b, 1, n_in, n_out), jnp.nan), jnp.ones((b, 1, n_out)))  # the contraction is NaN
    d = jnp.array([jnp.nan, jnp.inf, -0.0, 2.5], jnp.float32).reshape(1, 1, 1, n_out) * jnp.ones((b, 1, 1, 1))
    _, decayed = jax.jit(_RULE.dr_contract_decay)(delta, d, trace)
    _, want = jax.jit(lambda d, e: (None, _RULE.dr_decay(d, e)))(d, trace)
    for got, ref in zip(decayed, want):
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
        np.testing.assert_array_equal(got, ref)


def test_loop_carried_trace_is_updated_in_place():
    b, n_in, n_out, steps = 8, 96, 64, 3
    trace_shape = f"f32[{b},1,{n_in},{n_out}]"

    def run(trace, deltas, ds):
        def body(e, inp):
            (g,), e_new = _RULE.dr_contract_decay(inp[0], inp[1], (e,))
            return e_new[0], g

        return jax.lax.scan(body, trace, (deltas, ds))

    args = (
        jax.ShapeDtypeStruct((b, 1, n_in, n_out), jnp.float32),
        jax.ShapeDtypeStruct((steps, b, 1, n_out), jnp.float32),
        jax.ShapeDtypeStruct((steps, b, 1, 1, n_out), jnp.float32),
    )
    hlo = jax.jit(run, donate_argnums=(0,)).lower(*args).compile().as_text()
    copies = re.findall(re.escape(trace_shape) + r"\{[0-9,]*\} copy\(", hlo)
    assert not copies, f"the trace is copied {len(copies)} time(s) per update"
