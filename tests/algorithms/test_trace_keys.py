"""Trace names are stable: adding an unrelated layer leaves every other trace's key
unchanged, and a checkpoint written by the smaller model restores its traces by name
into the bigger one."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import disttrace as dt

B, N_IN = 2, 3


class Net(brainstate.nn.Module):
    """A LIF layer and a readout; ``extra`` adds an unrelated LIF layer that runs first
    (so every op after it moves one position down in the step's jaxpr)."""

    def __init__(self, extra: bool):
        super().__init__()
        if extra:
            self.a_extra = dt.nn.LIFLayer(N_IN, 5, w_scale=3.0)
        self.l0 = dt.nn.LIFLayer(N_IN, 6, w_scale=3.0)
        self.readout = dt.nn.LeakyRateReadout(6, 2, tau=5.0)
        self.extra = extra

    def update(self, x):
        if self.extra:
            self.a_extra(x)
        return self.readout(self.l0(x))


def _learner(extra, algo):
    brainstate.random.seed(0)
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    return dt.compile(Net(extra), algo, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
def test_an_added_layer_leaves_other_trace_keys_unchanged(algo):
    small, big = _learner(False, algo), _learner(True, algo)
    keys = lambda lr: {lr.graph.trace_key(op, g): op.index for op in lr.graph.ops for g in op.groups}
    ks, kb = keys(small), keys(big)
    assert set(ks) < set(kb)
    assert "l0.weight->l0.V" in ks and "readout.weight->readout.r" in ks
    assert any(ks[k] != kb[k] for k in ks)  # positions moved; names did not
    s_state, b_state = small.init(), big.init()
    assert set(s_state.traces) < set(b_state.traces)
    for name in s_state.traces:
        same = jax.tree.map(lambda a, b: a.shape == b.shape, s_state.traces[name], b_state.traces[name])
        assert all(jax.tree.leaves(same)), name


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
def test_a_checkpoint_of_the_smaller_model_restores_traces_by_name(algo, tmp_path):
    small, big = _learner(False, algo), _learner(True, algo)
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(1), (4, B, 2))
    state, params = small.init(), small.params()
    for t in range(4):
        state, _, _ = small.step(state, params, xs[t], ys[t])
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "traces", {"traces": state.traces})
    with ocp.StandardCheckpointer() as ckpt:
        saved = ckpt.restore(tmp_path / "traces")["traces"]  # no target: plain nested dicts
    restored, taken = big.restore_traces(big.init(), saved)
    assert set(taken) == set(state.traces)
    for name in state.traces:
        jax.tree.map(np.testing.assert_array_equal, restored.traces[name], state.traces[name])
    extra = [n for n in restored.traces if n not in taken]
    assert extra and all(float(jnp.abs(a).max()) == 0 for n in extra for a in jax.tree.leaves(restored.traces[n]))
    nonzero = [float(jnp.abs(a).max()) for n in taken for a in jax.tree.leaves(restored.traces[n])]
    assert max(nonzero) > 0


def test_restore_traces_refuses_a_mismatched_layout():
    small = _learner(False, dt.D_RTRL)
    state = small.init()
    name = next(iter(state.traces))
    bad = {name: jax.tree.map(lambda a: jnp.zeros(a.shape[:-1] + (a.shape[-1] + 1,)), state.traces[name])}
    with pytest.raises(ValueError, match=name.replace("+", r"\+")):
        small.restore_traces(state, bad)
