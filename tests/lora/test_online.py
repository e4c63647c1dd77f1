"""LoRA factors learn online; frozen weights take no part.

On an exact model (leaky units without recurrent weights driven by a LoRA weight,
memoryless readout; ``tests/lora/models.py``) the D-RTRL gradients of ``A`` and ``B``
equal BPTT's (float64, max abs diff <= ``EXACT_F64_ATOL``; measured <= 4e-15) for the dense, transposed, conv and
embedding helpers, for a model adapted in place by ``lora.adapt`` and for
``nn.LoRA``. ES-D-RTRL meets cosine floors measured 2026-11-23 (jax 0.10.2 CPU,
float64, T=20, B=2; ``python -m tests.lora.test_online``), rounded down to two
decimals, never lowered:

==================  ======
model               ES
==================  ======
dense               0.9830
dense, FULL bias    0.9876
transpose           0.9825
conv                0.9683
embedding           0.8651
adapt(LeakyRate)    0.9286
==================  ======

With a frozen *recurrent* base (``RecurrentLoRA``; not exact): D-RTRL 0.7285,
ES-D-RTRL 0.6187.

Frozen means frozen: the base weight is no parameter of the learner, its op keeps no
trace (a constant op), it gets no gradient and is bitwise unchanged after training.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace import lora
from disttrace.compiler import DiagnosticKind
from disttrace.nn._lora import LoRA
from disttrace.testing import EXACT_F64_ATOL, cosine, flat, gradients
from disttrace.train import Trainer
from tests.lora.models import N_IN, B, LeakyLoRA, N

T = 20
ES_FLOORS = {"dense": 0.98, "dense-full-bias": 0.98, "transpose": 0.98, "conv": 0.96, "embedding": 0.86,
             "adapt": 0.92}


class AdaptedLeakyRate(brainstate.nn.Module):
    """``dt.nn.LeakyRate`` adapted in place by ``lora.adapt`` (weight LoRA'd, bias and decay
    frozen), with a memoryless readout."""

    def __init__(self):
        super().__init__()
        self.rate = dt.nn.LeakyRate(N_IN, N)
        lora.adapt(self.rate, jax.random.PRNGKey(3), rank=2, alpha=2.0, init="gaussian")
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (N, 2), jnp.zeros(()).dtype))

    def update(self, x):
        return dt.ops.matmul(self.rate(x), self.ro.value)


RECURRENT_FLOORS = {"D_RTRL": 0.72, "ES_D_RTRL": 0.61}

MODELS = {
    "dense": lambda: LeakyLoRA("dense"),
    "dense-full-bias": lambda: LeakyLoRA("dense", tune_bias=True),
    "transpose": lambda: LeakyLoRA("transpose"),
    "conv": lambda: LeakyLoRA("conv"),
    "embedding": lambda: LeakyLoRA("embedding"),
    "adapt": AdaptedLeakyRate,
}


def _data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))
    return xs, ys


@pytest.mark.parametrize("name", sorted(MODELS))
def test_d_rtrl_gradients_of_the_factors_equal_bptt(x64, name):
    xs, ys = _data()
    ref = gradients(MODELS[name], dt.BPTT, xs, ys)
    got = gradients(MODELS[name], dt.D_RTRL, xs, ys)
    assert set(got) == set(ref)
    factors = [p for p in ref if "adapter" in p]
    assert factors, f"no adapter among the parameters {sorted(ref)}"
    for path in factors:
        for leaf_ref, leaf_got in zip(jax.tree.leaves(ref[path]), jax.tree.leaves(got[path])):
            assert np.abs(np.asarray(leaf_ref)).max() > 1e-3, f"{path}: BPTT gradient ~0, the comparison is vacuous"
            np.testing.assert_allclose(leaf_got, leaf_ref, rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("name", ["dense", "embedding", "adapt"])
def test_chunked_d_rtrl_equals_bptt(x64, name):
    xs, ys = _data()
    ref = gradients(MODELS[name], dt.BPTT, xs, ys)
    got = gradients(MODELS[name], dt.D_RTRL, xs, ys, chunk_size=7)  # 20 = 2 chunks of 7 + 6
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_es_d_rtrl_meets_its_cosine_floor(x64, name):
    xs, ys = _data()
    ref = gradients(MODELS[name], dt.BPTT, xs, ys)
    got = gradients(MODELS[name], dt.ES_D_RTRL, xs, ys)
    assert cosine(got, ref) >= ES_FLOORS[name]


@pytest.mark.usefixtures("optax_promotion")  # steps optax.adam
# D_RTRL in the slow pass (7.4 CPU s, 2026-12-02); ES_D_RTRL checks the same in the default suite
@pytest.mark.parametrize("algo", [pytest.param(dt.D_RTRL, marks=pytest.mark.slow), dt.ES_D_RTRL])
def test_frozen_base_has_no_trace_no_gradient_and_no_update(algo):
    model = LeakyLoRA("dense")
    base_before = jax.tree.map(jnp.array, model.base.value)
    learner = dt.compile(model, algo, jnp.zeros((B, N_IN)), batch_size=B)
    assert set(learner.param_states) == {("adapter",), ("ro",)}
    const = [op for op in learner.graph.ops if not op.weight_params]
    assert [op.name for op in const] == ["matmul"]  # the frozen base: an op with constant weights
    assert any(r.kind is DiagnosticKind.CONSTANT_OP for r in learner.graph.records)
    assert all(learner.modes[op.index] == "none" for op in const)
    state = learner.init()
    # only the ops with parameters have traces (a constant op has no name to keep one under)
    assert set(state.traces) == {op.key for op in learner.graph.ops if op.weight_params and op.groups}
    assert all(op.key == "" for op in const)
    # the learner's own (instantaneous) gradients have no entry for it
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner.loss_fn = mse
    _, _, grads = learner.step(state, learner.params(), jnp.ones((B, N_IN)), jnp.ones((B, 2)))
    assert set(grads) == {("adapter",), ("ro",)}
    # train; the base is bitwise unchanged, the adapter moved
    adapter_before = jax.tree.map(jnp.array, model.adapter.value)
    trainer = Trainer(learner, optax.adam(1e-2))
    key = jax.random.PRNGKey(0)
    for _ in range(5):
        key, sub = jax.random.split(key)
        xs = jax.random.normal(sub, (8, B, N_IN))
        trainer.train_batch(xs, jnp.zeros((B,), jnp.int32), jnp.ones((8,)))
    jax.tree.map(np.testing.assert_array_equal, model.base.value, base_before)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), model.adapter.value, adapter_before)
    assert min(jax.tree.leaves(moved)) > 0


def test_nn_lora_frozen_base_and_trace_sizes():
    base = dt.nn.Linear(N_IN, N)
    model = LoRA(N_IN, 2, N, base_module=base, init="zero_b", freeze_base=True)
    assert type(base.weight).__name__ == "FrozenState"

    class Leaky(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = model

        def init_state(self, batch_size=None, **kw):
            self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

        def update(self, x):
            self.h.value = 0.8 * self.h.value + jnp.tanh(self.layer(x))
            return self.h.value

    learner = dt.compile(Leaky(), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert set(learner.param_states) == {("layer", "weight")}
    traces = learner.init().traces
    # the lora op only: a dense-sized D-RTRL trace
    assert [e[0].shape for v in traces.values() for e in v.e.values()] == [(B, 1, N_IN, N)]


class RecurrentLoRA(brainstate.nn.Module):
    """``h_t = 0.8 h_{t-1} + tanh(LoRA([x_t, h_{t-1}]))`` with a frozen recurrent base:
    the base op's input depends on ``h``; as a constant op its input is cut like any
    trace op's (the diagonal approximation) instead of being refused."""

    def __init__(self):
        super().__init__()
        self.cell = LoRA(N_IN + N, 2, N, base_module=dt.nn.Linear(N_IN + N, N), init="gaussian", freeze_base=True)

    def init_state(self, batch_size=None, **kw):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.cell(jnp.concatenate([x, self.h.value], -1)))
        return self.h.value


def _recurrent_data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N))
    return xs, ys


@pytest.mark.parametrize("algo", ["D_RTRL", "ES_D_RTRL"])
def test_frozen_recurrent_base_compiles_and_meets_its_floor(x64, algo):
    xs, ys = _recurrent_data()
    ref = gradients(RecurrentLoRA, dt.BPTT, xs, ys)
    got = gradients(RecurrentLoRA, getattr(dt, algo), xs, ys)
    assert set(got) == set(ref) == {("cell", "weight")}  # the frozen recurrent base is no parameter
    assert cosine(got, ref) >= RECURRENT_FLOORS[algo]


def main():
    jax.config.update("jax_enable_x64", True)
    brainstate.environ.set(precision=64)
    xs, ys = _data()
    for name, make in MODELS.items():
        ref = gradients(make, dt.BPTT, xs, ys)
        es = gradients(make, dt.ES_D_RTRL, xs, ys)
        print(f"{name:18s} ES cosine {cosine(es, ref):.4f}")
    xs, ys = _recurrent_data()
    ref = gradients(RecurrentLoRA, dt.BPTT, xs, ys)
    for algo in (dt.D_RTRL, dt.ES_D_RTRL):
        print(f"recurrent {algo.__name__:8s} cosine {cosine(gradients(RecurrentLoRA, algo, xs, ys), ref):.4f}")


if __name__ == "__main__":
    main()
