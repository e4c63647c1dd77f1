"""Trace memory of a LoRA weight against the dense weight it adapts.

The LoRA ops keep the trace of the effective dense weight, so under D-RTRL a LoRA
layer's trace has exactly the dense layer's bytes (never more) and under ES-D-RTRL
both keep O(B·(I+O)). The frozen base keeps nothing. Measured with the learners'
state (``learner.init()``) and ``disttrace.algorithms.param_trace_bytes``; the table in
``docs/lora.md`` is ``python -m tests.lora.test_memory``.
"""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import disttrace as dt
from disttrace import lora
from disttrace.algorithms import param_trace_bytes

B, I_DENSE, O_DENSE, RANK = 8, 64, 128, 4
LENGTH, C_IN, C_OUT, WINDOW = 16, 8, 16, 3


class Layer(brainstate.nn.Module):
    """``h_t = 0.9 h_{t-1} + op(x_t)`` for a dense or LoRA weight (matmul or conv)."""

    def __init__(self, kind: str, adapted: bool):
        super().__init__()
        self.kind = kind
        shape = (I_DENSE, O_DENSE) if kind == "matmul" else (WINDOW, C_IN, C_OUT)
        params = {"w": jax.random.normal(jax.random.PRNGKey(0), shape) * 0.1}
        self.adapted = adapted
        if adapted:
            spec = lora.make_lora_spec(params, rank=RANK)
            self._spec = (jax.tree.leaves(spec), jax.tree.structure(spec))
            lp = lora.init_lora(params, spec, jax.random.PRNGKey(1))
            frozen, trainable = lora.split_trainable(lora.join(params, lp, spec), spec)
            self.base, self.adapter = lora.FrozenState(frozen), brainstate.ParamState(trainable)
        else:
            self.weight = brainstate.ParamState(params)

    def init_state(self, batch_size=None, **kw):
        shape = (batch_size, O_DENSE) if self.kind == "matmul" else (batch_size, LENGTH, C_OUT)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        if self.adapted:
            leaves, tree = self._spec
            w = lora.join(self.base.value, self.adapter.value, jax.tree.unflatten(tree, leaves))["w"]
        else:
            w = self.weight.value["w"]
        y = lora.matmul(x, w) if self.kind == "matmul" else lora.conv(x, w)
        self.h.value = 0.9 * self.h.value + y
        return self.h.value


def _input(kind):
    return jnp.zeros((B, I_DENSE)) if kind == "matmul" else jnp.zeros((B, LENGTH, C_IN))


def measure(kind: str, adapted: bool, algo) -> dict:
    """Trace bytes in the learner's state, D-RTRL bytes by op, and parameter count."""
    model = Layer(kind, adapted)
    learner = dt.compile(model, algo, _input(kind), batch_size=B)
    state = learner.init()
    nbytes = lambda tree: sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree))
    return {
        "trace_bytes": nbytes(state.traces),
        "op_bytes": [param_trace_bytes(learner.graph, op) for op in learner.graph.ops if op.weight_params],
        "n_ops_kept": sum(m != "none" for m in learner.modes),
        "params": sum(a.size for a in jax.tree.leaves(learner.params())),
    }


@pytest.mark.parametrize("kind", ["matmul", "conv"])
def test_d_rtrl_trace_of_a_lora_weight_is_the_dense_one(kind):
    dense, adapted = measure(kind, False, dt.D_RTRL), measure(kind, True, dt.D_RTRL)
    assert adapted["trace_bytes"] == dense["trace_bytes"]
    assert adapted["op_bytes"] == dense["op_bytes"]  # one traced op each (the frozen base keeps nothing)
    assert adapted["n_ops_kept"] == dense["n_ops_kept"] == 1
    assert adapted["params"] < dense["params"]
    if kind == "matmul":
        assert dense["trace_bytes"] == B * I_DENSE * O_DENSE * 4  # (B, K=1, I, O) float32


@pytest.mark.parametrize("kind", ["matmul", "conv"])
def test_es_d_rtrl_trace_is_linear_in_in_plus_out(kind):
    dense, adapted = measure(kind, False, dt.ES_D_RTRL), measure(kind, True, dt.ES_D_RTRL)
    assert adapted["trace_bytes"] == dense["trace_bytes"]
    if kind == "matmul":
        assert adapted["trace_bytes"] == B * (I_DENSE + O_DENSE) * 4  # ε^x (B, I) + ε^f (B, 1, O)
    else:  # smoothed patches (B, P, window·C) + ε^f (B, 1, P, O)
        assert adapted["trace_bytes"] == B * LENGTH * (WINDOW * C_IN + C_OUT) * 4


def main():
    print(f"B={B}; matmul I={I_DENSE} O={O_DENSE}; conv length {LENGTH}, window {WINDOW}, {C_IN}->{C_OUT}; rank {RANK}")
    for kind in ("matmul", "conv"):
        for algo in (dt.D_RTRL, dt.ES_D_RTRL):
            for adapted in (False, True):
                m = measure(kind, adapted, algo)
                print(f"{kind:6s} {algo.__name__:9s} {'LoRA ' if adapted else 'dense'} trace {m['trace_bytes']:>9d} B  "
                      f"params {m['params']}")


if __name__ == "__main__":
    main()
