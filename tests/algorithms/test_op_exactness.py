"""D-RTRL equals BPTT for every trace op on an exact model (leaky units driven by the op,
memoryless readout), and ES-D-RTRL runs on each, with the same gradient for any chunk
size (float64)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

T, B, N_IN, N = 20, 2, 4, 6


class Leaky(brainstate.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        k = jax.random.PRNGKey(7)
        if op == "conv":
            self.w = brainstate.ParamState(jax.random.normal(k, (3, 1, 2)))  # window 3, C=1, O=2 -> N = 3 pos x 2
        elif op == "lora":
            self.w = brainstate.ParamState({"a": jax.random.normal(k, (N_IN, 2)), "b": jax.random.normal(k, (2, N))})
        elif op == "sparse":
            self.w = brainstate.ParamState(jax.random.normal(k, (8,)))
        elif op == "embedding":
            self.w = brainstate.ParamState(jax.random.normal(k, (N_IN, N)))
        else:
            self.w = brainstate.ParamState(jax.random.normal(k, (N_IN, N)))
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (N, 2)))

    def init_state(self, batch_size=None, **kw):
        shape = (batch_size, 3, 2) if self.op == "conv" else (batch_size, N)  # conv: one neuron per position
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def drive(self, x):
        w = self.w.value
        if self.op == "matmul":
            return dt.ops.matmul(x, w)
        if self.op == "lora":
            return dt.ops.lora_matmul(x, w["b"], w["a"], 0.5)
        if self.op == "sparse":
            rows, cols = np.arange(8) % N_IN, (np.arange(8) * 5) % N
            return dt.ops.sparse_matmul(x, w, rows, cols, N)
        if self.op == "embedding":
            return dt.ops.embedding(jnp.argmax(x, -1), w)
        return dt.ops.conv(x[:, :3, None], w, padding="SAME")  # (B, 3, 2)

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.drive(x))
        return dt.ops.matmul(self.h.value.reshape(x.shape[0], N), self.ro.value)


OPS = ["matmul", "lora", "sparse", "embedding", "conv"]


# chunk 6 in the slow pass (1-2.7 CPU s per op, 2026-12-02): chunked D-RTRL is checked by
# tests/algorithms/test_exactness.py and chunked ES per op below in the default suite
@pytest.mark.parametrize("chunk", [None, pytest.param(6, marks=pytest.mark.slow)])
@pytest.mark.parametrize("op", OPS)
def test_each_op_exact_under_d_rtrl(x64, op, chunk):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))
    ref = gradients(lambda: Leaky(op), dt.BPTT, xs, ys)
    got = gradients(lambda: Leaky(op), dt.D_RTRL, xs, ys, chunk_size=chunk)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    es = gradients(lambda: Leaky(op), dt.ES_D_RTRL, xs, ys)
    assert np.isfinite(flat(es)).all() and np.abs(flat(es)).max() > 0


@pytest.mark.parametrize("op", OPS)
def test_each_op_es_chunked_equals_step_by_step(x64, op):
    # T = 20 in chunks of 6: three full chunks and a tail of 2
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))
    ref = gradients(lambda: Leaky(op), dt.ES_D_RTRL, xs, ys)
    got = gradients(lambda: Leaky(op), dt.ES_D_RTRL, xs, ys, chunk_size=6)
    assert np.abs(flat(ref)).max() > 1e-3
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
