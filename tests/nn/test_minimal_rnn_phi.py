"""``MinimalRNNCell(..., phi=...)`` (braintrace 0.2.8's argument, issue #15): the given Φ
replaces the default ``tanh(x W_x + b_x)`` (forward equal to the formula written out in
numpy, float64), its weights learn online, and D-RTRL equals BPTT where the cell's
hidden Jacobian is diagonal (``W_u = 0``)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

N_IN, N, N_OUT, B, T = 3, 4, 2, 2, 8
_NORMAL = brainstate.nn.init.Normal(scale=0.5)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _lin(p, x):
    return x @ p["weight"] + p["bias"]


def _cell(phi):
    brainstate.random.seed(0)
    return dt.nn.MinimalRNNCell(N_IN, N, b_init=_NORMAL, phi=phi)


def test_phi_replaces_the_default_input_map(x64):
    phi = dt.nn.Linear(N_IN, N, b_init=_NORMAL)  # braintrace's default Φ: a Linear without activation
    cell = _cell(phi)
    assert cell.phi is phi and cell.activation is None
    brainstate.nn.init_all_states(cell, batch_size=B)
    p_phi = jax.tree.map(np.asarray, phi.weight.value)
    p_u = jax.tree.map(np.asarray, cell.W_u.weight.value)
    h = np.zeros((B, N))
    for x in np.asarray(jax.random.normal(jax.random.PRNGKey(1), (T, B, N_IN))):
        z = _lin(p_phi, x)  # no tanh: phi is the whole map
        u = _sigmoid(_lin(p_u, np.concatenate([z, h], -1)))
        h = u * h + (1 - u) * z
        np.testing.assert_allclose(cell(x), h, rtol=0, atol=EXACT_F64_ATOL)
    # a plain function works too (no weights: Φ(x) = 2 x[:, :1] broadcast)
    fn_cell = _cell(lambda x: 2.0 * jnp.broadcast_to(x[..., :1], (*x.shape[:-1], N)))
    brainstate.nn.init_all_states(fn_cell, batch_size=B)
    assert set(fn_cell.states(brainstate.ParamState)) == {("W_u", "weight")}
    assert fn_cell(jnp.ones((B, N_IN))).shape == (B, N)


def _net():
    cell = dt.nn.MinimalRNNCell(N_IN, N, b_init=_NORMAL, phi=dt.nn.Linear(N_IN, N, b_init=_NORMAL))
    w = cell.W_u.weight.value
    # W_u = 0 (the gate's bias stays): ∂h_t/∂h_{t-1} = diag(u_t), so D-RTRL is exact
    cell.W_u.weight.value = {"weight": jnp.zeros_like(w["weight"]), "bias": w["bias"]}
    return brainstate.nn.Sequential(cell, dt.nn.LeakyRateReadout(N, N_OUT, tau=0))


def test_phi_weights_learn_online_and_d_rtrl_is_bptt(x64):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, N_OUT))
    ref = gradients(_net, dt.BPTT, xs, ys)
    got = gradients(_net, dt.D_RTRL, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    for path in (("layers", 0, "phi", "weight"), ("layers", 0, "W_u", "weight")):
        assert np.abs(flat(ref[path])).max() > 1e-3, f"{path}: BPTT gradient ~0, the comparison would be vacuous"


def test_phi_arguments_are_checked():
    with pytest.raises(ValueError, match="'phi'"):
        dt.nn.MinimalRNNCell(N_IN, N, phi=3)
    with pytest.raises(ValueError, match="'activation'"):
        dt.nn.MinimalRNNCell(N_IN, N, phi=dt.nn.Linear(N_IN, N), activation="relu")
    cell = dt.nn.MinimalRNNCell(N_IN, N, phi=lambda x: x)  # (B, I) -> (B, I), not the hidden shape
    brainstate.nn.init_all_states(cell, batch_size=B)
    with pytest.raises(ValueError, match="phi must map"):
        cell(jnp.ones((B, N_IN)))
