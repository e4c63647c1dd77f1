"""braintrace 0.2.8 layer code runs on ``disttrace.nn`` with only the import changed
(issue #15, item 7): the attributes, constructors and classmethods braintrace's layers
have, and the convolution options (feature groups, dilation) its ``Conv*d`` accept.

Convolutions with groups or dilation are checked for exactness the way the shared layer
suite checks every layer (tests/nn/test_layers.py): D-RTRL (per step and chunked) equals
BPTT in float64 on the conv feeding an element-wise leaky integrator; ES-D-RTRL, which is
not exact for a conv, is checked against the same conv written densely (a block-diagonal
masked kernel), whose ES gradient it must reproduce entry for entry.
"""

import brainevent
import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, flat, gradients
from tests.nn.layer_case import Integrate

T, B = 6, 2
_ZERO = brainstate.nn.init.ZeroInit()


def _sequences(in_shape, out_shape):
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, *in_shape), dtype=jnp.zeros(()).dtype)
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, *out_shape), dtype=xs.dtype)
    return xs, ys


# ---- convolutions: feature groups and dilation -------------------------------------------

_CONVS = {
    # name: (layer maker, one sample's input shape)
    "groups": (lambda: dt.nn.Conv1d((6, 4), 6, 3, groups=2, b_init=_ZERO), (6, 4)),
    "depthwise": (lambda: dt.nn.Conv1d((5, 3), 3, 2, groups=3, padding="VALID"), (5, 3)),
    "rhs_dilation": (lambda: dt.nn.Conv1d((7, 2), 3, 3, rhs_dilation=2, b_init=_ZERO), (7, 2)),
    "lhs_dilation": (lambda: dt.nn.Conv1d((4, 2), 3, 3, lhs_dilation=2, padding=1), (4, 2)),
    "2d-groups-dilation-stride": (
        lambda: dt.nn.Conv2d((5, 5, 4), 4, 2, stride=2, rhs_dilation=(2, 1), groups=2, padding=1),
        (5, 5, 4),
    ),
    "ws-groups": (lambda: dt.nn.ScaledWSConv1d((6, 4), 4, 3, groups=2, rhs_dilation=2), (6, 4)),
}


def _conv_model(name):
    make, in_shape = _CONVS[name]
    brainstate.random.seed(0)
    out_shape = make().out_size
    return (lambda: Integrate(make(), out_shape)), in_shape, out_shape


@pytest.mark.parametrize("name", sorted(_CONVS))
def test_conv_forward_is_lax_conv(name):
    make, in_shape = _CONVS[name]
    brainstate.random.seed(0)
    layer = make()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, *in_shape))
    params = layer.weight.value
    w = layer._kernel(params)
    nd = len(in_shape) - 1
    spec = ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")
    want = jax.lax.conv_general_dilated(
        x, w, layer.stride, layer.padding, layer.lhs_dilation, layer.rhs_dilation, spec,
        feature_group_count=layer.groups,
    )
    if "bias" in params:
        want = want + params["bias"].reshape(-1)
    got = layer(x)
    assert got.shape == (2, *layer.out_size)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer(x[0]), got[0], rtol=1e-5, atol=1e-6)  # unbatched


def _d_rtrl_cases():
    # the 2-D per-step case (~8 s on the loaded 2-core machine) runs in the slow pass; its
    # chunked twin and the 2-D dense comparisons below stay in the default suite
    return [
        pytest.param(name, chunk, id=f"{name}-{tag}", marks=[pytest.mark.slow] if (name[:2], chunk) == ("2d", None) else [])
        for name in sorted(_CONVS)
        for chunk, tag in ((None, "per-step"), (3, "chunked"))
    ]


@pytest.mark.parametrize("name, chunk_size", _d_rtrl_cases())
def test_conv_d_rtrl_equals_bptt(x64, name, chunk_size):
    make_model, in_shape, out_shape = _conv_model(name)
    xs, ys = _sequences(in_shape, out_shape)
    ref = gradients(make_model, dt.BPTT, xs, ys)
    got = gradients(make_model, dt.D_RTRL, xs, ys, chunk_size=chunk_size)
    assert set(got) == set(ref)
    assert np.abs(flat(ref)).max() > 1e-3, "BPTT gradient is ~0: the comparison would be vacuous"
    for path in ref:
        np.testing.assert_allclose(flat(got[path]), flat(ref[path]), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path))


class _Dense(brainstate.nn.Module):
    """A grouped conv written as the dense conv with a block-diagonal kernel mask."""

    def __init__(self, grouped):
        super().__init__()
        g, c_in, c_out = grouped.groups, grouped.in_channels, grouped.out_channels
        mask = np.zeros((*grouped.kernel_size, c_in, c_out))
        w = np.zeros_like(mask)
        wg = np.asarray(grouped.weight.value["weight"])
        ci, co = c_in // g, c_out // g
        for k in range(g):
            mask[..., k * ci : (k + 1) * ci, k * co : (k + 1) * co] = 1.0
            w[..., k * ci : (k + 1) * ci, k * co : (k + 1) * co] = wg[..., k * co : (k + 1) * co]
        self.conv = type(grouped)(
            grouped.in_size, c_out, grouped.kernel_size, grouped.stride, grouped.padding, grouped.lhs_dilation,
            grouped.rhs_dilation, w_init=jnp.asarray(w), w_mask=jnp.asarray(mask),
        )

    def update(self, x):
        return self.conv(x)


def _ungroup(dense_w, groups):
    """The grouped (*window, C/G, O) kernel's entries of a dense (*window, C, O) one."""
    c_in, c_out = dense_w.shape[-2:]
    ci, co = c_in // groups, c_out // groups
    return np.concatenate(
        [dense_w[..., k * ci : (k + 1) * ci, k * co : (k + 1) * co] for k in range(groups)], axis=-1
    )


@pytest.mark.parametrize(
    "algo, chunk_size", [("es_d_rtrl", None), ("es_d_rtrl", 3), ("d_rtrl", 3)], ids=["es", "es-chunked", "d_rtrl-chunked"]
)
@pytest.mark.parametrize("name", ["groups", "2d-groups-dilation-stride"])
def test_grouped_conv_gradient_equals_dense_block_diagonal(x64, name, algo, chunk_size):
    # ES-D-RTRL is not exact for a conv, but a grouped conv must give the ES gradient of
    # the same conv written densely; D-RTRL chunked covers outer_sum/input_vjp_sum
    make, in_shape = _CONVS[name]
    brainstate.random.seed(0)
    grouped = make()
    out_shape = grouped.out_size
    algorithm = {"es_d_rtrl": dt.ES_D_RTRL, "d_rtrl": dt.D_RTRL}[algo]
    xs, ys = _sequences(in_shape, out_shape)
    got = gradients(lambda: Integrate(make(), out_shape), algorithm, xs, ys, chunk_size=chunk_size)
    dense = gradients(lambda: Integrate(_Dense(make()), out_shape), algorithm, xs, ys, chunk_size=chunk_size)
    ((g_path, g_grad),) = [(p, v["weight"]) for p, v in got.items() if p[-1] == "weight"]
    ((_, d_grad),) = [(p, v["weight"]) for p, v in dense.items() if p[-1] == "weight"]
    assert np.abs(g_grad).max() > 1e-3, g_path
    np.testing.assert_allclose(g_grad, _ungroup(np.asarray(d_grad), grouped.groups), rtol=0, atol=EXACT_F64_ATOL)


def test_conv_attributes_and_group_errors():
    layer = dt.nn.Conv2d((8, 8, 4), 6, 3, groups=2, rhs_dilation=2)
    assert layer.in_channels == 4 and layer.out_channels == 6 and layer.groups == 2
    assert layer.kernel_shape == (3, 3, 2, 6) and layer.weight.value["weight"].shape == (3, 3, 2, 6)
    assert layer.rhs_dilation == (2, 2) and layer.lhs_dilation == (1, 1)
    with pytest.raises(ValueError, match="'groups'"):
        dt.nn.Conv1d((8, 3), 4, 3, groups=2)  # 2 does not divide C_in = 3
    with pytest.raises(ValueError, match="'groups'"):
        dt.nn.Conv1d((8, 4), 3, 3, groups=2)  # nor C_out = 3
    with pytest.raises(ValueError, match="'groups'"):
        dt.nn.Conv1d((8, 4), 4, 3, groups=0)
    with pytest.raises(ValueError, match="'rhs_dilation'"):
        dt.nn.Conv1d((8, 4), 4, 3, rhs_dilation=(1, 2))
    with pytest.raises(ValueError, match="'padding'"):
        dt.nn.Conv1d((8, 4), 4, 3, lhs_dilation=2)  # lax has no 'SAME' for a dilated input
    with pytest.raises(ValueError, match="'feature_group_count'"):
        dt.ops.conv(jnp.ones((1, 8, 4)), jnp.ones((3, 2, 4)), feature_group_count=0)
    with pytest.raises(ValueError, match="'w'"):
        dt.ops.conv(jnp.ones((1, 8, 6)), jnp.ones((3, 2, 4)), feature_group_count=3)  # 3 does not divide O = 4
    with pytest.raises(ValueError, match="'x'"):
        dt.ops.conv(jnp.ones((1, 8, 4)), jnp.ones((3, 2, 4)), feature_group_count=1)


# ---- LeakyRateReadout: braintrace's tau, decay, W; reset_state --------------------------


def test_leaky_rate_readout_braintrace_attributes():
    ro = dt.nn.LeakyRateReadout(4, 2, tau=5.0)
    assert ro.tau == 5.0 and ro.decay == pytest.approx(np.exp(-1.0 / 5.0), rel=1e-15)
    assert ro.W is ro.weight and ro.W.value.shape == (4, 2)
    assert dt.nn.LeakyRateReadout(4, 2, tau=0).decay == 0.0
    with brainstate.environ.context(dt=0.5 * u.ms):
        timed = dt.nn.LeakyRateReadout(4, 2, tau=5.0 * u.ms)
    assert timed.tau == 5.0 * u.ms and timed.decay == pytest.approx(np.exp(-0.1), rel=1e-15)
    # the aliases are not a second path to the weight: the compiler and checkpoints see 'weight'
    brainstate.nn.init_all_states(ro, batch_size=3)
    assert set(ro.states().keys()) == {("weight",), ("r",)}
    ro.W.value = jnp.ones((4, 2))
    np.testing.assert_array_equal(ro(jnp.ones((3, 4))), jnp.full((3, 2), 4.0))  # r_0 = 0: r_1 = x W


@pytest.mark.parametrize("r_init", [_ZERO, brainstate.nn.init.Constant(0.5)], ids=["zero", "constant"])
def test_leaky_rate_readout_reset_state_restores_r(r_init):
    ro = dt.nn.LeakyRateReadout(4, 2, tau=5.0, r_init=r_init)
    brainstate.nn.init_all_states(ro, batch_size=3)
    r0 = np.asarray(ro.r.value)
    ro(jnp.ones((3, 4)))
    ro(jnp.ones((3, 4)))
    assert not np.allclose(ro.r.value, r0)
    brainstate.nn.reset_all_states(ro, batch_size=3)
    np.testing.assert_array_equal(ro.r.value, r0)
    ro.reset_state(batch_size=5)  # another batch size, as braintrace's reset_state takes
    assert ro.r.value.shape == (5, 2)
    ro.reset_state()
    assert ro.r.value.shape == (2,)
    memoryless = dt.nn.LeakyRateReadout(4, 2, tau=0)
    brainstate.nn.init_all_states(memoryless, batch_size=3)
    brainstate.nn.reset_all_states(memoryless, batch_size=3)  # no state: a no-op, not an error
    assert not memoryless.states(brainstate.HiddenState)


def test_leaky_spike_readout_reset_state_restores_v():
    ro = dt.nn.LeakySpikeReadout(4, 2)
    brainstate.nn.init_all_states(ro, batch_size=3)
    ro(jnp.full((3, 4), 5.0))
    assert np.abs(ro.V.value).max() > 0
    brainstate.nn.reset_all_states(ro, batch_size=3)
    np.testing.assert_array_equal(ro.V.value, jnp.zeros((3, 2)))


# ---- LRUCell: r_min, r_max ------------------------------------------------------------------


def test_lru_keeps_r_min_r_max():
    brainstate.random.seed(0)
    lru = dt.nn.LRUCell(3, 64, r_min=0.4, r_max=0.9, max_phase=3.14)
    assert (lru.r_min, lru.r_max, lru.max_phase) == (0.4, 0.9, 3.14)
    modulus = np.exp(-np.exp(np.asarray(lru.nu_log.value)))  # |λ| lies on the ring [r_min, r_max]
    assert modulus.min() >= lru.r_min - 1e-6 and modulus.max() <= lru.r_max + 1e-6


# ---- SignedWLinear: tuple sizes --------------------------------------------------------------


def test_signed_w_linear_takes_tuple_sizes():
    # braintrace/brainstate's own example: SignedWLinear((10,), (5,)) with an optional sign matrix
    layer = dt.nn.SignedWLinear((10,), (5,))
    assert layer.in_size == (10,) and layer.out_size == (5,) and layer.weight.value.shape == (10, 5)
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 10))
    np.testing.assert_allclose(layer(x), x @ jnp.abs(layer.weight.value), rtol=1e-5, atol=1e-5)
    neg = dt.nn.SignedWLinear((10,), (5,), w_sign=jnp.ones((10, 5)) * -1.0)
    np.testing.assert_allclose(neg(x), -(x @ jnp.abs(neg.weight.value)), rtol=1e-5, atol=1e-5)
    assert dt.nn.SignedWLinear([10], [5]).weight.value.shape == (10, 5)
    with pytest.raises(ValueError, match="'in_size'"):
        dt.nn.SignedWLinear((), (5,))


# ---- Embedding.from_pretrained --------------------------------------------------------------


def test_embedding_from_pretrained():
    table = jnp.arange(12.0).reshape(4, 3)
    emb = dt.nn.Embedding.from_pretrained(table)
    assert emb.num_embeddings == 4 and emb.embedding_size == (3,) and emb.freeze
    np.testing.assert_array_equal(emb(jnp.array([[2, 0]])), table[jnp.array([[2, 0]])])
    assert not emb.states(brainstate.ParamState)  # frozen by default, as brainstate's
    learned = dt.nn.Embedding.from_pretrained(table, freeze=False)
    assert set(learned.states(brainstate.ParamState).keys()) == {("weight",)}
    np.testing.assert_array_equal(learned.weight.value, table)
    padded = dt.nn.Embedding.from_pretrained(table, padding_idx=1, freeze=False)
    np.testing.assert_array_equal(padded.weight.value[1], jnp.zeros(3))  # as brainstate's constructor
    np.testing.assert_array_equal(padded.weight.value[2], table[2])
    wide = dt.nn.Embedding.from_pretrained(jnp.ones((5, 2, 3)))
    assert wide.embedding_size == (2, 3) and wide(jnp.array([0, 4])).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="'embeddings'"):
        dt.nn.Embedding.from_pretrained(jnp.ones(4))
    with pytest.raises(ValueError, match="'padding_idx'"):
        dt.nn.Embedding.from_pretrained(table, padding_idx=4)


def test_embedding_from_pretrained_learns_online(x64):
    table = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    idx = jax.random.randint(jax.random.PRNGKey(1), (T, B), 0, 5)
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 3))
    make = lambda: Integrate(dt.nn.Embedding.from_pretrained(table, freeze=False), (3,))
    ref = gradients(make, dt.BPTT, idx, ys)
    got = gradients(make, dt.D_RTRL, idx, ys)
    assert set(got) == set(ref) == {("layer", "weight")}
    np.testing.assert_allclose(got[("layer", "weight")], ref[("layer", "weight")], rtol=0, atol=EXACT_F64_ATOL)


# ---- SparseLinear: brainunit and brainevent matrices --------------------------------------


_DENSE = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [0.5, 0.0, 0.0]])
_SPARSE = {
    "brainunit-COO": lambda d: u.sparse.COO.fromdense(d),
    "brainunit-CSR": lambda d: u.sparse.CSR.fromdense(d),
    "brainunit-CSC": lambda d: u.sparse.CSC.fromdense(d),
    "brainevent-CSR": lambda d: brainevent.CSR.fromdense(d),
    "brainevent-CSC": lambda d: brainevent.CSC.fromdense(d),
}


@pytest.mark.parametrize("kind", sorted(_SPARSE))
def test_sparse_linear_accepts_brainunit_and_brainevent(kind):
    dense = jnp.asarray(_DENSE, dtype=jnp.zeros(()).dtype)
    layer = dt.nn.SparseLinear(_SPARSE[kind](dense), b_init=_ZERO)
    assert layer.in_size == (4,) and layer.out_size == (3,)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    np.testing.assert_allclose(layer(x), x @ dense, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["brainevent-CSR", "brainunit-CSR"])
def test_sparse_linear_d_rtrl_equals_bptt(x64, kind):
    make = lambda: Integrate(dt.nn.SparseLinear(_SPARSE[kind](jnp.asarray(_DENSE))), (3,))
    xs, ys = _sequences((4,), (3,))
    ref = gradients(make, dt.BPTT, xs, ys)
    got = gradients(make, dt.D_RTRL, xs, ys)
    assert set(got) == set(ref) and np.abs(flat(ref)).max() > 1e-3
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_sparse_linear_rejects_other_matrices():
    with pytest.raises(ValueError, match="'spar_mat'"):
        dt.nn.SparseLinear(jnp.asarray(_DENSE))
    csr = brainevent.CSR.fromdense(jnp.asarray(_DENSE))
    homogeneous = brainevent.CSR((jnp.asarray(1.0), csr.indices, csr.indptr), shape=csr.shape)
    with pytest.raises(ValueError, match="'spar_mat'"):
        dt.nn.SparseLinear(homogeneous)


# ---- GRU / LSTM / URLSTM: braintrace's per-gate Linear names --------------------------------

_GATES = {
    # cell: (fused attribute, braintrace's gate names in the fused column order)
    "GRUCell": ("Wrz", ("Wr", "Wz")),
    "LSTMCell": ("W", ("Wi", "Wg", "Wf", "Wo")),
    "URLSTMCell": ("W", ("Wf", "Wr", "Wu", "Wo")),
}
_PATHS = {  # what the compiler, brainstate.graph and checkpoints see: unchanged by the gate views
    "GRUCell": {("Wrz", "weight"), ("Wh", "weight"), ("h",)},
    "LSTMCell": {("W", "weight"), ("c",), ("h",)},
    "URLSTMCell": {("W", "weight"), ("bias",), ("c",), ("h",)},
}
I_, N_ = 3, 4


def _cell(name):
    brainstate.random.seed(0)
    kw = {} if name == "URLSTMCell" else {"b_init": brainstate.nn.init.Normal()}
    cell = getattr(dt.nn, name)(I_, N_, **kw)
    brainstate.nn.init_all_states(cell, batch_size=2)
    cell.h.value = jax.random.normal(jax.random.PRNGKey(5), (2, N_))
    if name != "GRUCell":
        cell.c.value = jax.random.normal(jax.random.PRNGKey(6), (2, N_))
    return cell


@pytest.mark.parametrize("name", sorted(_GATES))
def test_gate_views_are_the_fused_columns(name):
    cell = _cell(name)
    fused_name, gates = _GATES[name]
    fused = getattr(cell, fused_name).weight.value
    for k, gate in enumerate(gates):
        view = getattr(cell, gate).weight.value
        assert set(view) == set(fused)
        for key in fused:
            np.testing.assert_array_equal(view[key], fused[key][..., k * N_ : (k + 1) * N_])
        assert getattr(cell, gate).in_size == (I_ + N_,) and getattr(cell, gate).out_size == (N_,)
    assert set(cell.states().keys()) == _PATHS[name]


def _braintrace_step(name, cell, x):
    """One step written as braintrace 0.2.8's cells write it, on the per-gate names."""
    h = cell.h.value
    xh = jnp.concatenate([x, h], axis=-1)
    sig, tanh = jax.nn.sigmoid, jnp.tanh
    if name == "GRUCell":
        z, r = sig(cell.Wz(xh)), sig(cell.Wr(xh))
        return (1 - z) * h + z * tanh(cell.Wh(jnp.concatenate([x, r * h], axis=-1)))
    c = cell.c.value
    if name == "LSTMCell":
        c = sig(cell.Wf(xh) + 1.0) * c + sig(cell.Wi(xh)) * tanh(cell.Wg(xh))
        return sig(cell.Wo(xh)) * tanh(c)
    b = cell.bias.value
    f_, r_ = sig(b + cell.Wf(xh)), sig(-(b + (-cell.Wr(xh))))
    g = 2 * r_ * f_ + (1 - 2 * r_) * f_**2
    c = g * c + (1 - g) * tanh(cell.Wu(xh))
    return sig(cell.Wo(xh)) * tanh(c)


@pytest.mark.parametrize("name", sorted(_GATES))
def test_gate_views_give_braintrace_update(name):
    cell = _cell(name)
    x = jax.random.normal(jax.random.PRNGKey(7), (2, I_))
    want = _braintrace_step(name, cell, x)
    np.testing.assert_allclose(cell(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(_GATES))
def test_gate_view_assignment_writes_the_fused_columns(name):
    # loading a braintrace checkpoint: cell.<gate>.weight.value = {'weight': (I+N, N), ['bias': (N,)]}
    cell = _cell(name)
    fused_name, gates = _GATES[name]
    before = {key: np.asarray(a) for key, a in getattr(cell, fused_name).weight.value.items()}
    k, gate = 1, gates[1]
    new = {key: jnp.full(a[..., :N_].shape, 7.0, a.dtype) for key, a in before.items()}
    getattr(cell, gate).weight.value = new
    after = getattr(cell, fused_name).weight.value
    for key in before:
        np.testing.assert_array_equal(after[key][..., k * N_ : (k + 1) * N_], new[key])
        rest = np.delete(np.asarray(after[key]), np.s_[k * N_ : (k + 1) * N_], axis=-1)
        np.testing.assert_array_equal(rest, np.delete(before[key], np.s_[k * N_ : (k + 1) * N_], axis=-1))
    with pytest.raises(ValueError, match="keys"):
        getattr(cell, gate).weight.value = {"kernel": new["weight"]}
    with pytest.raises(ValueError, match="shape"):
        getattr(cell, gate).weight.value = {key: jnp.ones((2, 2)) for key in new}
    with pytest.raises(AttributeError):
        setattr(cell, gate, None)  # a view, not a sub-layer to replace


def test_grouped_linear_takes_a_whole_weight_array():
    w = jnp.arange(3 * 4 * 5, dtype=jnp.float32).reshape(3, 4, 5)
    layer = dt.nn.GroupedLinear(3, 4, 5, w_init=w)
    np.testing.assert_array_equal(layer.weight.value["weight"], w)  # not stacked once per group
    with pytest.raises(ValueError, match=r"'w_init' as an array must have shape .*\(3, 4, 5\); got \(4, 5\)"):
        dt.nn.GroupedLinear(3, 4, 5, w_init=w[0])
