"""The trace ops accept braintrace 0.2.8's signatures (read from its source), importable
from ``disttrace``'s top level: the same forward output as our own signatures, D-RTRL ==
BPTT (float64) for every braintrace-argument form and for ``einsum``, and refusals where
the two signatures cannot be told apart."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace import ops
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

K0, K1, K2, K3 = (jax.random.PRNGKey(i) for i in range(4))
DENSE = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0], [0.0, -3.0, 0.5], [1.0, 0.0, 0.0]])  # (I=4, O=3)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_top_level_exports_are_the_ops():
    for name in ("matmul", "element_wise", "conv", "sparse_matmul", "lora_matmul", "grouped_matmul", "einsum",
                 "embedding"):
        assert getattr(dt, name) is getattr(ops, name)
        assert name in dt.__all__


# ---- forward: braintrace's signature == ours ---------------------------------------------------


def test_matmul_element_wise_embedding():
    x, w, b = jax.random.normal(K0, (2, 3)), jax.random.normal(K1, (3, 4)), jax.random.normal(K2, (4,))
    _close(dt.matmul(x, weight=w, bias=b, weight_fn=jnp.square, bias_fn=jnp.tanh),
           ops.matmul(x, jnp.square(w), jnp.tanh(b)))
    _close(dt.element_wise(weight=b, weight_fn=jnp.exp), ops.element_wise(b, jnp.exp))
    idx = jnp.array([2, 0])
    _close(dt.embedding(indices=idx, weight=w, weight_fn=jnp.abs), ops.embedding(idx, jnp.abs(w)))


def test_grouped_matmul():
    x, w, b = jax.random.normal(K0, (2, 3, 4)), jax.random.normal(K1, (3, 4, 5)), jax.random.normal(K2, (3, 5))
    ref = jnp.einsum("bgi,gio->bgo", x, jnp.square(w)) + jnp.tanh(b)
    _close(dt.grouped_matmul(x, w, b, weight_fn=jnp.square, bias_fn=jnp.tanh), ref)
    _close(dt.grouped_matmul(x, weight=w, bias=b, weight_fn=jnp.square, bias_fn=jnp.tanh), ref)
    _close(dt.grouped_matmul(x[0], w, b), ops.grouped_matmul(x[:1], w)[0] + b)


@pytest.mark.parametrize("fmt", ["CSR", "CSC", "COO"])
def test_sparse_matmul_with_a_sparse_mat(fmt):
    mat = getattr(u.sparse, fmt).fromdense(jnp.asarray(DENSE))
    rows, cols, n_out = ops.sparse_coordinates(mat)
    x, b = jax.random.normal(K0, (2, 4)), jax.random.normal(K1, (3,))
    data = jax.random.normal(K2, mat.data.shape)
    got = dt.sparse_matmul(x, data, sparse_mat=mat, bias=b, weight_fn=jnp.square, bias_fn=jnp.tanh)
    ref = x @ jnp.zeros((4, 3)).at[rows, cols].add(jnp.square(data)) + jnp.tanh(b)
    _close(got, ref)
    _close(dt.sparse_matmul(x, weight=data, sparse_mat=mat), ops.sparse_matmul(x, data, rows, cols, n_out))
    _close(dt.sparse_matmul(x, mat.data, sparse_mat=mat), x @ DENSE)  # data order is the matrix's own


@pytest.mark.parametrize("fmt", ["CSR", "CSC"])
def test_sparse_matmul_with_a_brainevent_matrix(fmt):
    brainevent = pytest.importorskip("brainevent")
    mat = getattr(brainevent, fmt).fromdense(jnp.asarray(DENSE))
    x = jax.random.normal(K0, (2, 4))
    _close(dt.sparse_matmul(x, mat.data, sparse_mat=mat), x @ DENSE)


def test_lora_matmul_both_orders():
    x, down, up = jax.random.normal(K0, (2, 5)), jax.random.normal(K1, (5, 2)), jax.random.normal(K2, (2, 3))
    ref = 0.5 * x @ down @ up
    _close(dt.lora_matmul(x, down, up, alpha=0.5), ref)  # braintrace: (x, B (I, r), A (r, O))
    _close(dt.lora_matmul(x, B=down, A=up, alpha=0.5), ref)
    _close(dt.lora_matmul(x, up, down, 0.5), ref)  # ours: (x, lora_b (r, O), lora_a (I, r), alpha)
    _close(dt.lora_matmul(x, up, down, alpha=0.5), ref)  # ours, read from the shapes
    _close(dt.lora_matmul(x, lora_b=up, lora_a=down, alpha=0.5), ref)
    b = jax.random.normal(K3, (3,))
    got = dt.lora_matmul(x, down, up, alpha=0.5, bias=b, b_fn=jnp.square, a_fn=jnp.abs, bias_fn=jnp.tanh)
    _close(got, 0.5 * x @ jnp.square(down) @ jnp.abs(up) + jnp.tanh(b))
    _close(dt.lora_matmul(x[0], down, up), x[0] @ down @ up)


def test_conv_braintrace_keywords():
    x, k, b = jax.random.normal(K0, (2, 7, 3)), jax.random.normal(K1, (3, 3, 4)), jax.random.normal(K2, (4,))
    got = dt.conv(x, kernel=k, bias=b, strides=(1,), padding="SAME", dimension_numbers=("NWC", "WIO", "NWC"),
                  batch_group_count=1, kernel_fn=jnp.square, bias_fn=jnp.tanh)
    _close(got, ops.conv(x, jnp.square(k), jnp.tanh(b)))


@pytest.mark.parametrize(
    ("equation", "x_shape", "w_shape"),
    [
        ("bi,ij->bj", (2, 3), (3, 4)),
        ("...i,ij->...j", (2, 3), (3, 4)),
        ("...i,ij->...j", (3,), (3, 4)),
        ("...i,ij->...j", (2, 5, 3), (3, 4)),
        ("bhi,hij->bhj", (2, 3, 4), (3, 4, 5)),
        ("b h i, h i j -> b j h", (2, 3, 4), (3, 4, 5)),
        ("bti,ij->btj", (2, 3, 4), (4, 5)),
        ("bik,ij->bj", (2, 3, 4), (3, 5)),
    ],
)
def test_einsum_is_jnp_einsum(equation, x_shape, w_shape):
    x, w = jax.random.normal(K0, x_shape), jax.random.normal(K1, w_shape)
    _close(dt.einsum(equation, x, w), jnp.einsum(equation, x, w))
    _close(dt.einsum(equation, x, w, weight_fn=jnp.square), jnp.einsum(equation, x, jnp.square(w)))
    _close(jax.jit(lambda w: dt.einsum(equation, x, w))(w), jnp.einsum(equation, x, w))


# ---- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "equation",
    ["bi,ij", "bi,ij,jk->bk", "bi,bij->bj", "bi,ij->jb", "bi,ijk->bj", "bi,ij->bjq", "bii,ij->bj",
     "bi,...ij->bj", "b...i,ij->b...j", "bI,Ij->bj"],
)
def test_einsum_refuses_unsupported_equations(equation):
    with pytest.raises(ValueError, match="einsum: argument 'equation'.*allowed"):
        dt.einsum(equation, jnp.ones((2, 3, 3)), jnp.ones((3, 4)))


def test_einsum_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match="'x'"):
        dt.einsum("bi,ij->bj", jnp.ones((2, 3, 1)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="disagree"):
        dt.einsum("bi,ij->bj", jnp.ones((2, 3)), jnp.ones((5, 4)))


def test_lora_matmul_refuses_what_it_cannot_tell_apart():
    x, p, q = jnp.ones((2, 3)), jnp.ones((3, 3)), 2 * jnp.ones((3, 3))
    with pytest.raises(ValueError, match="fit both"):
        dt.lora_matmul(x, p, q, alpha=0.5)
    _close(dt.lora_matmul(x, p, q, 0.5), 0.5 * x @ q @ p)  # alpha positionally: ours
    _close(dt.lora_matmul(x, B=p, A=q), x @ p @ q)
    with pytest.raises(ValueError, match="not a mix"):
        dt.lora_matmul(x, lora_b=p, A=q)
    with pytest.raises(ValueError, match="alpha"):
        dt.lora_matmul(x, p, q, 0.5, alpha=0.5)
    with pytest.raises(ValueError, match="'A' is required"):
        dt.lora_matmul(x, B=p)


def test_other_refusals_name_the_argument():
    x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="'w' or its braintrace name 'weight'"):
        dt.matmul(x, w, weight=w)
    with pytest.raises(ValueError, match="'sparse_mat', not both"):
        dt.sparse_matmul(x, jnp.ones(2), [0, 1], [0, 1], 4, sparse_mat=u.sparse.CSR.fromdense(w))
    with pytest.raises(ValueError, match="'sparse_mat' must be"):
        dt.sparse_matmul(x, jnp.ones(2), sparse_mat=np.ones((3, 4)))
    with pytest.raises(ValueError, match="'dimension_numbers'"):  # braintrace's channels-first default layout
        dt.conv(jnp.ones((2, 3, 7)), jnp.ones((4, 3, 3)), dimension_numbers=("NCH", "OIH", "NCH"))
    with pytest.raises(ValueError, match="'batch_group_count'"):
        dt.conv(jnp.ones((2, 7, 3)), jnp.ones((3, 3, 4)), batch_group_count=2)
    with pytest.raises(ValueError, match="'bias'"):
        dt.grouped_matmul(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5)), jnp.ones(5))


# ---- D-RTRL == BPTT on an exact model (leaky units driven by the op, memoryless readout) -------

T, B, N_IN = 12, 2, 4


PATTERN = u.sparse.CSR.fromdense(jnp.asarray(DENSE))  # built outside any trace (fromdense needs concrete values)


# name -> (param shapes, hidden neuron shape, drive(x (B, N_IN), params) -> (B, *hidden))
FORMS = {
    "matmul_fns": ({"w": (4, 3), "b": (3,)}, (3,),
                   lambda x, p: dt.matmul(x, weight=p["w"], bias=p["b"], weight_fn=jnp.square, bias_fn=jnp.tanh)),
    "grouped_bias_fns": ({"w": (2, 2, 3), "b": (2, 3)}, (2, 3),
                         lambda x, p: dt.grouped_matmul(x.reshape(-1, 2, 2), weight=p["w"], bias=p["b"],
                                                        weight_fn=jnp.square, bias_fn=jnp.tanh)),
    "sparse_mat_bias_fns": ({"w": (5,), "b": (3,)}, (3,),
                            lambda x, p: dt.sparse_matmul(x, p["w"], sparse_mat=PATTERN, bias=p["b"],
                                                          weight_fn=jnp.square, bias_fn=jnp.tanh)),
    "lora_braintrace_order": ({"B": (4, 2), "A": (2, 3), "b": (3,)}, (3,),
                              lambda x, p: dt.lora_matmul(x, p["B"], p["A"], alpha=0.5, bias=p["b"],
                                                          b_fn=jnp.square, a_fn=jnp.abs, bias_fn=jnp.tanh)),
    "conv_kernel_fn": ({"k": (3, 1, 2), "b": (2,)}, (4, 2),
                       lambda x, p: dt.conv(x[:, :, None], kernel=p["k"], bias=p["b"], kernel_fn=jnp.square,
                                            bias_fn=jnp.tanh)),
    "embedding_fn": ({"w": (4, 3)}, (3,),
                     lambda x, p: dt.embedding(indices=jnp.argmax(x, -1), weight=p["w"], weight_fn=jnp.square)),
    "einsum_dense": ({"w": (4, 3)}, (3,), lambda x, p: dt.einsum("bi,ij->bj", x, p["w"])),
    "einsum_ellipsis_fn": ({"w": (4, 3)}, (3,),
                           lambda x, p: dt.einsum("...i,ij->...j", x, p["w"], weight_fn=jnp.square)),
    "einsum_grouped": ({"w": (2, 2, 3)}, (2, 3), lambda x, p: dt.einsum("bhi,hij->bhj", x.reshape(-1, 2, 2), p["w"])),
    "einsum_grouped_permuted": ({"w": (2, 2, 3)}, (3, 2),
                                lambda x, p: dt.einsum("bhi,hij->bjh", x.reshape(-1, 2, 2), p["w"])),
    "einsum_shared": ({"w": (2, 3)}, (2, 3), lambda x, p: dt.einsum("bti,ij->btj", x.reshape(-1, 2, 2), p["w"])),
    "einsum_summed_input": ({"w": (2, 3)}, (3,), lambda x, p: dt.einsum("bik,ij->bj", x.reshape(-1, 2, 2), p["w"])),
}


class Leaky(brainstate.nn.Module):
    """``h = 0.8 h + tanh(op(x))``: a diagonal Jacobian, so D-RTRL is exact."""

    def __init__(self, form):
        super().__init__()
        shapes, self.hidden, self.drive = FORMS[form]
        keys = jax.random.split(jax.random.PRNGKey(7), len(shapes))
        self.p = brainstate.ParamState({k: 0.7 * jax.random.normal(key, s) for (k, s), key in zip(shapes.items(), keys)})
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (int(np.prod(self.hidden)), 2)))

    def init_state(self, batch_size=None, **kw):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, *self.hidden)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.drive(x, self.p.value))
        return dt.matmul(self.h.value.reshape(x.shape[0], -1), self.ro.value)


def _data():
    return jax.random.normal(K2, (T, B, N_IN)), jax.random.normal(K3, (T, B, 2))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_d_rtrl_equals_bptt(x64, form):
    xs, ys = _data()
    ref = gradients(lambda: Leaky(form), dt.BPTT, xs, ys)
    got = gradients(lambda: Leaky(form), dt.D_RTRL, xs, ys)
    assert np.abs(flat(ref)).max() > 1e-3 and all(a.dtype == jnp.float64 for a in jax.tree.leaves(got))
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("form", ["einsum_grouped_permuted", "einsum_shared"])
def test_einsum_chunked_d_rtrl_equals_bptt(x64, form):
    xs, ys = _data()  # T = 12 in chunks of 5: two full chunks and a tail of 2
    ref = gradients(lambda: Leaky(form), dt.BPTT, xs, ys)
    got = gradients(lambda: Leaky(form), dt.D_RTRL, xs, ys, chunk_size=5)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("form", [f for f in sorted(FORMS) if f.startswith("einsum")])
def test_es_d_rtrl_runs_on_einsum(x64, form):
    # ES-D-RTRL is approximate here: finite, non-zero gradients of the parameters' shapes
    xs, ys = _data()
    es = gradients(lambda: Leaky(form), dt.ES_D_RTRL, xs, ys)
    shapes, hidden, _ = FORMS[form]
    want = {("p",): shapes, ("ro",): (int(np.prod(hidden)), 2)}
    assert jax.tree.map(lambda a: a.shape, es) == want
    assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(es))
    assert np.isfinite(flat(es)).all() and np.abs(flat(es[("p",)])).max() > 0
    if form in ("einsum_grouped_permuted", "einsum_shared"):  # chunked ES == step by step (es_foldable)
        chunked = gradients(lambda: Leaky(form), dt.ES_D_RTRL, xs, ys, chunk_size=5)
        np.testing.assert_allclose(flat(chunked), flat(es), rtol=0, atol=EXACT_F64_ATOL)
