"""Forward outputs equal brainstate's layer of the same name for the same parameters
(or the documented formula where brainstate has none), and bad arguments raise a
ValueError naming the argument."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt

X = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
ZERO = brainstate.nn.init.ZeroInit()


def _copy(ours, theirs, attr="weight"):
    getattr(theirs, attr).value = jax.tree.map(jnp.asarray, getattr(ours, attr).value)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Linear(4, 5),
        lambda m: m.Linear(4, 5, b_init=None, w_mask=jnp.tril(jnp.ones((4, 5)))),
        lambda m: m.SignedWLinear(4, 5, w_sign=jnp.array([[1.0], [-1.0], [1.0], [-1.0]])),
        lambda m: m.ScaledWSLinear(4, 5),
    ],
    ids=["Linear", "Linear-masked", "SignedWLinear", "ScaledWSLinear"],
)
def test_linear_family_matches_brainstate(make):
    ours, theirs = make(dt.nn), make(brainstate.nn)
    _copy(ours, theirs)
    np.testing.assert_allclose(ours(X), theirs(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours(X[0]), theirs(X[0]), rtol=1e-6, atol=1e-6)


def test_sparse_linear_matches_brainstate():
    dense = jnp.where(jnp.arange(20).reshape(4, 5) % 3 == 0, 0.5, 0.0)
    for fmt in (u.sparse.COO, u.sparse.CSR):
        ours = dt.nn.SparseLinear(fmt.fromdense(dense), b_init=ZERO)
        theirs = brainstate.nn.SparseLinear(fmt.fromdense(dense), b_init=ZERO)
        ours.weight.value = {"weight": ours.weight.value["weight"] * 3.0, "bias": jnp.arange(5.0)}
        _copy(ours, theirs)
        np.testing.assert_allclose(ours(X), theirs(X), rtol=1e-6, atol=1e-6)


def test_grouped_linear_formula():
    layer = dt.nn.GroupedLinear(3, 4, 2, b_init=brainstate.nn.init.Constant(0.5))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 4))
    w = layer.weight.value
    np.testing.assert_allclose(layer(x), np.einsum("bgi,gio->bgo", x, w["weight"]) + 0.5, rtol=1e-6, atol=1e-6)


def test_embedding_matches_brainstate():
    ours = dt.nn.Embedding(10, 4, padding_idx=0, max_norm=1.0)
    theirs = brainstate.nn.Embedding(10, 4, padding_idx=0, max_norm=1.0)
    _copy(ours, theirs)
    idx = jnp.array([[0, 3], [9, 3]])
    np.testing.assert_allclose(ours(idx), theirs(idx), rtol=1e-6)
    with pytest.raises(ValueError, match="scale_grad_by_freq"):
        dt.nn.Embedding(10, 4, scale_grad_by_freq=True)


@pytest.mark.parametrize(
    "name,in_size,kwargs",
    [
        ("Conv1d", (7, 2), dict(stride=2, b_init=ZERO)),
        ("Conv2d", (5, 5, 2), dict(padding="VALID")),
        ("Conv3d", (3, 4, 3, 1), dict(padding=1, b_init=ZERO)),
        ("ScaledWSConv1d", (7, 2), dict(b_init=ZERO)),
        ("ScaledWSConv2d", (5, 5, 2), dict(stride=(1, 2))),
        ("ScaledWSConv3d", (3, 4, 3, 1), dict()),
    ],
)
def test_conv_matches_brainstate(name, in_size, kwargs):
    ours = getattr(dt.nn, name)(in_size, 3, 3, **kwargs)
    theirs = getattr(brainstate.nn, name)(in_size, 3, 3, **kwargs)
    _copy(ours, theirs)
    if "bias" in ours.weight.value:
        ours.weight.value = {**ours.weight.value, "bias": ours.weight.value["bias"] + 0.3}
        _copy(ours, theirs)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, *in_size))
    assert ours.out_size == theirs.out_size
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x[0]), theirs(x[0]), rtol=1e-5, atol=1e-5)


def test_conv_rejects_unsupported_arguments():
    for kwargs, arg in (
        (dict(groups=3), "groups"),  # 3 does not divide the 2 channels
        (dict(rhs_dilation=0), "rhs_dilation"),
        (dict(channel_first=True), "channel_first"),
        (dict(padding="FULL"), "padding"),
    ):
        with pytest.raises(ValueError, match=arg):
            dt.nn.Conv1d((6, 2), 2, 3, **kwargs)
    with pytest.raises(ValueError, match="in_size"):
        dt.nn.Conv2d((6, 2), 2, 3)


def test_norms_match_brainstate():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 4)) * 2 + 1
    for ours, theirs, attr in (
        (dt.nn.LayerNorm(4), brainstate.nn.LayerNorm(4), "weight"),
        (dt.nn.RMSNorm(4), brainstate.nn.RMSNorm(4), "scale"),
    ):
        getattr(ours, attr).value = jax.tree.map(lambda v: v + 0.25, getattr(ours, attr).value)
        getattr(theirs, attr).value = getattr(ours, attr).value
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    ours, theirs = dt.nn.BatchNorm1d((3, 4)), brainstate.nn.BatchNorm1d((3, 4))
    brainstate.nn.init_all_states(theirs)
    with brainstate.environ.context(fit=True):
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.value, rtol=1e-5, atol=1e-6)
    with brainstate.environ.context(fit=False):
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def _run(neuron, currents):
    brainstate.nn.init_all_states(neuron, batch_size=currents.shape[1])
    return np.stack([np.asarray(neuron(c)) for c in currents])


def test_lif_and_alif_follow_their_formulas():
    currents = jax.random.uniform(jax.random.PRNGKey(4), (30, 2, 3), minval=0.0, maxval=4.0)
    tau, tau_a, beta, th = 4.0, 20.0, 0.3, 1.0
    alpha, rho = np.exp(-1 / tau), np.exp(-1 / tau_a)
    v, a, spikes, aspikes = np.zeros((2, 3)), np.zeros((2, 3)), [], []
    va = np.zeros((2, 3))
    for c in np.asarray(currents):
        s = (v > th).astype(float)
        v = alpha * (v - th * s) + (1 - alpha) * c
        spikes.append((v > th).astype(float))
        theta = th + beta * a
        s = (va > theta).astype(float)
        a = rho * a + s
        va = alpha * (va - theta * s) + (1 - alpha) * c
        aspikes.append((va > th + beta * a).astype(float))
    np.testing.assert_array_equal(_run(dt.nn.LIF(3, tau=tau), currents), np.stack(spikes))
    np.testing.assert_array_equal(_run(dt.nn.ALIF(3, tau=tau, tau_a=tau_a, beta=beta), currents), np.stack(aspikes))
    assert np.stack(spikes).sum() > 0 and np.stack(aspikes).sum() > 0


def test_neuron_arguments_are_checked():
    with pytest.raises(ValueError, match="learnable"):
        dt.nn.LIF(3, learnable=("tau_a",))
    with pytest.raises(ValueError, match="spk_reset"):
        dt.nn.LIF(3, spk_reset="none")
    with pytest.raises(ValueError, match="tau"):
        dt.nn.LIF(3, tau=0.0)
    with pytest.raises(ValueError, match="spk_fun"):
        dt.nn.IF(3, spk_fun="relu")
    with brainstate.environ.context(dt=0.5 * u.ms):
        assert dt.nn.LIF(3, tau=5.0 * u.ms)._constants["tau"] == pytest.approx(10.0)


def test_embedding_max_norm_gradient_is_finite_on_an_all_zero_row():
    from tests.nn.layer_case import Integrate

    emb = dt.nn.Embedding(5, 3, max_norm=1.0)
    emb.weight.value = emb.weight.value.at[2].set(0.0)
    learner = dt.compile(Integrate(emb, (3,)), dt.D_RTRL, jnp.zeros((2,), jnp.int32), batch_size=2)
    idx = jnp.array([[2, 1], [2, 2]])
    grads = learner.etrace_grad(idx, jnp.ones((2, 2, 3)), step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))
    assert bool(jnp.all(jnp.isfinite(grads[("layer", "weight")])))


def test_conv_padding_reads_ints_as_brainstate_does():
    for in_size, padding in (((7, 2), (1, 2)), ((5, 5, 2), (1, 2))):
        ours = getattr(dt.nn, f"Conv{len(in_size) - 1}d")(in_size, 3, 3, padding=padding)
        theirs = getattr(brainstate.nn, f"Conv{len(in_size) - 1}d")(in_size, 3, 3, padding=padding)
        _copy(ours, theirs)
        x = jax.random.normal(jax.random.PRNGKey(5), (2, *in_size))
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_sparse_linear_csc_matches_dense():
    dense = jnp.where(jnp.arange(20).reshape(4, 5) % 3 == 0, 0.5, 0.0) * jnp.arange(20.0).reshape(4, 5)
    layer = dt.nn.SparseLinear(u.sparse.CSC.fromdense(dense))
    np.testing.assert_allclose(layer(X), X @ dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer(X[0]), X[0] @ dense, rtol=1e-5, atol=1e-6)
