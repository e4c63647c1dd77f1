"""Property tests (hypothesis) over randomly built models whose hidden dynamics are
element-wise: the compiler's graph is well formed, D-RTRL equals BPTT, and every chunk
size gives the step-by-step gradient (float64)."""

import brainstate
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

LAYERS = ("lif_layer", "alif_layer", "leaky_rate", "linear_lif", "linear_alif", "linear_expon", "linear_if")


def _layer(kind, n_in, n):
    nn = dt.nn
    return {
        "lif_layer": lambda: [nn.LIFLayer(n_in, n, w_scale=3.0)],
        "alif_layer": lambda: [nn.ALIFLayer(n_in, n, w_scale=3.0)],
        "leaky_rate": lambda: [nn.LeakyRate(n_in, n)],
        "linear_lif": lambda: [nn.Linear(n_in, n, w_init=brainstate.nn.init.Normal(0.0, 2.0)), nn.LIF(n, tau=3.0, learnable=("tau",))],
        "linear_alif": lambda: [nn.Linear(n_in, n, w_init=brainstate.nn.init.Normal(0.0, 2.0)), nn.ALIF(n, tau=3.0)],
        "linear_expon": lambda: [nn.Linear(n_in, n), nn.Expon(n, tau=4.0, learnable=("tau",))],
        "linear_if": lambda: [nn.Linear(n_in, n, w_init=brainstate.nn.init.Normal(0.0, 2.0)), nn.IF(n)],
    }[kind]()


models = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(LAYERS),
        "n_in": st.integers(1, 4),
        "n": st.integers(1, 5),
        "n_out": st.integers(1, 3),
        "batch": st.integers(1, 3),
        "T": st.integers(1, 12),
        "seed": st.integers(0, 2**16),
    }
)
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _make(m):
    def make():
        layers = _layer(m["kind"], m["n_in"], m["n"])
        return brainstate.nn.Sequential(*layers, dt.nn.LeakyRateReadout(m["n"], m["n_out"], tau=0))

    return make


def _data(m):
    key = jax.random.PRNGKey(m["seed"])
    xs = jax.random.normal(key, (m["T"], m["batch"], m["n_in"])) * 2.0
    ys = jax.random.normal(jax.random.fold_in(key, 1), (m["T"], m["batch"], m["n_out"]))
    return xs, ys


@SETTINGS
@given(m=models)
def test_graph_is_well_formed(m):
    brainstate.random.seed(m["seed"])
    model = _make(m)()
    brainstate.nn.init_all_states(model, batch_size=m["batch"])
    graph = dt.compile_etrace_graph(model, _data(m)[0][0])
    members = sorted(i for grp in graph.groups for i in grp.members)
    assert members == list(range(len(graph.hidden_paths)))  # groups partition the hidden states
    for grp in graph.groups:
        assert all(graph.hidden_group_of[i] == grp.index for i in grp.members)
    assert set(graph.param_kinds) == set(graph.param_paths)
    assert "unused" not in graph.param_kinds.values()
    for op in graph.ops:  # an op output reaches its groups element-wise: it broadcasts to them
        for g in op.groups:
            assert np.broadcast_shapes(tuple(op.out.shape), graph.groups[g].shape) == graph.groups[g].shape


@pytest.mark.slow  # 20 random models x 3 compilations: 75 CPU s (2026-12-02, loaded 2-core CPU)
@pytest.mark.usefixtures("x64")
@SETTINGS
@given(m=models, chunk=st.integers(1, 12))
def test_d_rtrl_equals_bptt_and_chunks_change_nothing(m, chunk):
    xs, ys = _data(m)
    ref = gradients(_make(m), dt.BPTT, xs, ys, seed=m["seed"])
    step = gradients(_make(m), dt.D_RTRL, xs, ys, seed=m["seed"])
    chunked = gradients(_make(m), dt.D_RTRL, xs, ys, seed=m["seed"], chunk_size=min(chunk, m["T"]))
    np.testing.assert_allclose(flat(step), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    np.testing.assert_allclose(flat(chunked), flat(step), rtol=0, atol=EXACT_F64_ATOL)
