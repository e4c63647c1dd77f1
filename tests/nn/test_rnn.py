"""Recurrent cells: forward equal to brainstate's cells (same parameters copied across)
or to the paper's formula written out in numpy; parameter layout; argument checks.

The gradient tests (D-RTRL exact for MiniGRU, MiniLSTM, LRUCell; cosine floors for the
others) run in the shared layer suite, with the cases of ``cases_rnn.py``.
"""

import brainstate
import jax
import numpy as np
import pytest

import disttrace as dt
from disttrace.compiler import DiagnosticKind
from disttrace.testing import EXACT_F64_ATOL

N_IN, N, B, STEPS = 3, 4, 2, 4
_NORMAL = brainstate.nn.init.Normal(scale=0.5)


def _param(module, name):
    obj = getattr(module, name)
    return obj if isinstance(obj, brainstate.State) else obj.weight


def _values(module, names):
    return {n: jax.tree.map(np.asarray, _param(module, n).value) for n in names}


def _xs(shape=(STEPS, B, N_IN), seed=1):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), shape, dtype=jax.numpy.float64))


def _start_states(ours, names, seed=7):
    """Random non-zero starting states, so the recurrence is exercised from step one."""
    keys = jax.random.split(jax.random.PRNGKey(seed), len(names))
    out = {}
    for k, s in zip(keys, names):
        out[s] = np.asarray(0.5 * jax.random.normal(k, getattr(ours, s).value.shape, dtype=jax.numpy.float64))
        getattr(ours, s).value = out[s]
    return out


# ---- same as brainstate ----------------------------------------------------------------------

# (ours, brainstate's, the parameters to copy, the states)
BRAINSTATE_PAIRS = {
    "ValinaRNNCell": (
        lambda: dt.nn.ValinaRNNCell(N_IN, N, b_init=_NORMAL, activation="tanh"),
        lambda: brainstate.nn.ValinaRNNCell(N_IN, N, activation="tanh"),
        ("W",),
        ("h",),
    ),
    "ValinaRNNCell-relu": (
        lambda: dt.nn.ValinaRNNCell(N_IN, N, b_init=_NORMAL),
        lambda: brainstate.nn.ValinaRNNCell(N_IN, N),
        ("W",),
        ("h",),
    ),
    "GRUCell": (
        lambda: dt.nn.GRUCell(N_IN, N, b_init=_NORMAL),
        lambda: brainstate.nn.GRUCell(N_IN, N),
        ("Wrz", "Wh"),
        ("h",),
    ),
    "MGUCell": (
        lambda: dt.nn.MGUCell(N_IN, N, b_init=_NORMAL),
        lambda: brainstate.nn.MGUCell(N_IN, N),
        ("Wf", "Wh"),
        ("h",),
    ),
    "LSTMCell": (
        lambda: dt.nn.LSTMCell(N_IN, N, b_init=_NORMAL),
        lambda: brainstate.nn.LSTMCell(N_IN, N),
        ("W",),
        ("c", "h"),
    ),
    "URLSTMCell": (
        lambda: dt.nn.URLSTMCell(N_IN, N),
        lambda: brainstate.nn.URLSTMCell(N_IN, N),
        ("W", "bias"),
        ("c", "h"),
    ),
}


@pytest.mark.parametrize("name", sorted(BRAINSTATE_PAIRS))
def test_forward_equals_brainstate(x64, name):
    make_ours, make_theirs, params, states = BRAINSTATE_PAIRS[name]
    brainstate.random.seed(0)
    ours, theirs = make_ours(), make_theirs()
    for p in params:  # brainstate's layout: same names, same shapes
        mine, other = _param(ours, p), _param(theirs, p)
        assert jax.tree.map(np.shape, mine.value) == jax.tree.map(np.shape, other.value), p
        other.value = mine.value
    brainstate.nn.init_all_states(ours, batch_size=B)
    brainstate.nn.init_all_states(theirs, batch_size=B)
    for s, v in _start_states(ours, states).items():
        getattr(theirs, s).value = v
    for x in _xs():
        np.testing.assert_allclose(ours(x), theirs(x), rtol=0, atol=EXACT_F64_ATOL)
        for s in states:
            np.testing.assert_allclose(getattr(ours, s).value, getattr(theirs, s).value, rtol=0, atol=EXACT_F64_ATOL)


# ---- same as the paper's formula ----------------------------------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _lin(p, x):
    return x @ p["weight"] + p.get("bias", 0.0)


def _minimal_rnn(p, h, x):
    z = np.tanh(_lin(p["phi"], x))
    u = _sigmoid(_lin(p["W_u"], np.concatenate([z, h], -1)))
    return u * h + (1 - u) * z


def _cfn(p, h, x):
    xh = np.concatenate([x, h], -1)
    theta, eta = _sigmoid(_lin(p["Wf"], xh)), _sigmoid(_lin(p["Wi"], xh))
    return theta * np.tanh(h) + eta * np.tanh(_lin(p["Wh"], x))


def _min_gru(p, h, x):
    z = _sigmoid(_lin(p["W_z"], x))
    return (1 - z) * h + z * _lin(p["W_x"], x)


def _min_lstm(p, h, x):
    f, i = _sigmoid(_lin(p["W_f"], x)), _sigmoid(_lin(p["W_i"], x))
    return f / (f + i) * h + i / (f + i) * _lin(p["W_x"], x)


# (ours, parameters, numpy step h, x -> h)
FORMULA_CELLS = {
    "MinimalRNNCell": (lambda: dt.nn.MinimalRNNCell(N_IN, N, b_init=_NORMAL), ("phi", "W_u"), _minimal_rnn),
    "CFNCell": (lambda: dt.nn.CFNCell(N_IN, N, b_init=_NORMAL), ("Wf", "Wi", "Wh"), _cfn),
    "MiniGRU": (lambda: dt.nn.MiniGRU(N_IN, N, b_init=_NORMAL), ("W_z", "W_x"), _min_gru),
    "MiniLSTM": (lambda: dt.nn.MiniLSTM(N_IN, N, b_init=_NORMAL), ("W_f", "W_i", "W_x"), _min_lstm),
}


@pytest.mark.parametrize("name", sorted(FORMULA_CELLS))
def test_forward_equals_formula(x64, name):
    make, params, step = FORMULA_CELLS[name]
    brainstate.random.seed(0)
    cell = make()
    p = _values(cell, params)
    brainstate.nn.init_all_states(cell, batch_size=B)
    h = _start_states(cell, ("h",))["h"]
    for x in _xs():
        h = step(p, h, x)
        np.testing.assert_allclose(cell(x), h, rtol=0, atol=EXACT_F64_ATOL)


def test_lru_equals_complex_formula(x64):
    brainstate.random.seed(0)
    lru = dt.nn.LRUCell(N_IN, N, r_min=0.5, r_max=0.95)
    p = _values(lru, ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im", "D"))
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    b = p["B_re"]["weight"] + 1j * p["B_im"]["weight"]  # (N_IN, N)
    c = p["C_re"]["weight"] + 1j * p["C_im"]["weight"]  # (N, N_IN)
    brainstate.nn.init_all_states(lru, batch_size=B)
    start = _start_states(lru, ("h_re", "h_im"))
    s = start["h_re"] + 1j * start["h_im"]
    for x in _xs():
        s = lam * s + np.exp(p["gamma_log"]) * (x @ b)
        y = np.real(s @ c) + p["D"] * x
        np.testing.assert_allclose(lru(x), y, rtol=0, atol=EXACT_F64_ATOL)
        # combined in numpy: under strict promotion jax refuses float64 * 1j
        h = np.asarray(lru.h_re.value) + 1j * np.asarray(lru.h_im.value)
        np.testing.assert_allclose(h, s, rtol=0, atol=EXACT_F64_ATOL)


def test_lru_initialisation_follows_the_paper(x64):
    brainstate.random.seed(0)
    lru = dt.nn.LRUCell(N_IN, 500, r_min=0.4, r_max=0.9, max_phase=3.0)
    modulus = np.exp(-np.exp(np.asarray(lru.nu_log.value)))
    phase = np.exp(np.asarray(lru.theta_log.value))
    assert modulus.min() >= 0.4 and modulus.max() <= 0.9
    assert phase.min() >= 0.0 and phase.max() <= 3.0
    # γ normalises the input so that a unit white-noise input keeps a unit state variance.
    np.testing.assert_allclose(np.exp(np.asarray(lru.gamma_log.value)) ** 2, 1 - modulus**2, rtol=1e-12)


# ---- what the compiler sees ---------------------------------------------------------------------


def test_gru_reset_columns_are_same_step_only():
    brainstate.random.seed(0)
    gru = dt.nn.GRUCell(N_IN, N)
    brainstate.nn.init_all_states(gru, batch_size=B)
    with pytest.warns(UserWarning, match="same-step"):
        graph = dt.compile_etrace_graph(gru, np.ones((B, N_IN), np.float32))
    same_step = [r for r in graph.records if r.kind is DiagnosticKind.SAME_STEP_ONLY]
    assert [r.path for r in same_step] == ["Wrz.weight"]
    # r, z (one op per column block of Wrz) and Wh; only r reaches no hidden group.
    assert [op.groups for op in graph.ops] == [(), (0,), (0,)]
    assert graph.param_kinds == {("Wrz", "weight"): "trace", ("Wh", "weight"): "trace"}


@pytest.mark.parametrize(
    "make,k",
    [
        (lambda: dt.nn.LSTMCell(N_IN, N), 2),
        (lambda: dt.nn.URLSTMCell(N_IN, N), 2),
        (lambda: dt.nn.LRUCell(N_IN, N), 2),
        (lambda: dt.nn.MiniLSTM(N_IN, N), 1),
    ],
)
def test_states_form_one_hidden_group(make, k):
    brainstate.random.seed(0)
    cell = make()
    brainstate.nn.init_all_states(cell, batch_size=B)
    graph = dt.compile_etrace_graph(cell, np.ones((B, N_IN), np.float32))
    assert [g.k for g in graph.groups] == [k]
    assert all(op.groups == (0,) for op in graph.ops if op.weight_params[0][0] not in ("C_re", "C_im", "D"))


def test_reset_state_restores_the_initial_states():
    brainstate.random.seed(0)
    lstm = dt.nn.LSTMCell(N_IN, N)
    brainstate.nn.init_all_states(lstm, batch_size=B)
    lstm(np.ones((B, N_IN), np.float32))
    assert np.abs(np.asarray(lstm.c.value)).max() > 0
    lstm.reset_state(B)
    assert np.asarray(lstm.c.value).shape == (B, N) and np.abs(np.asarray(lstm.c.value)).max() == 0


# ---- argument checks ----------------------------------------------------------------------------

CELLS = {
    "ValinaRNNCell": dt.nn.ValinaRNNCell,
    "GRUCell": dt.nn.GRUCell,
    "MGUCell": dt.nn.MGUCell,
    "LSTMCell": dt.nn.LSTMCell,
    "URLSTMCell": dt.nn.URLSTMCell,
    "MinimalRNNCell": dt.nn.MinimalRNNCell,
    "CFNCell": dt.nn.CFNCell,
    "MiniGRU": dt.nn.MiniGRU,
    "MiniLSTM": dt.nn.MiniLSTM,
}
WITH_ACTIVATION = sorted(set(CELLS) - {"MiniGRU", "MiniLSTM"})
WITH_BIAS_INIT = sorted(set(CELLS) - {"URLSTMCell"})


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0, N), {}, "'in_size' must be a positive int; got 0"),
        ((N_IN, True), {}, "'out_size' must be a positive int; got True"),
        ((N_IN, 2.5), {}, "'out_size' must be a positive int; got 2.5"),
        ((N_IN, N), {"w_init": "orthogonal"}, "'w_init' must be an initializer"),
        ((N_IN, N), {"state_init": None}, "'state_init' must be an initializer"),
    ],
)
def test_bad_arguments_are_named(name, args, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        CELLS[name](*args, **kwargs)
    assert name in str(err.value)


@pytest.mark.parametrize("name", WITH_ACTIVATION)
def test_bad_activation_is_named(name):
    with pytest.raises(ValueError, match=r"'activation' must be a callable or one of \[.*'tanh'.*\]; got 'softmax'"):
        CELLS[name](N_IN, N, activation="softmax")
    with pytest.raises(ValueError, match="'activation' must be a string or a callable; got 3"):
        CELLS[name](N_IN, N, activation=3)


@pytest.mark.parametrize("name", WITH_BIAS_INIT)
def test_no_bias_with_b_init_none(name):
    cell = CELLS[name](N_IN, N, b_init=None)
    layers = [v for v in vars(cell).values() if isinstance(v, dt.nn.Linear)]
    assert layers and all(set(layer.weight.value) == {"weight"} for layer in layers)
    with pytest.raises(ValueError, match="'b_init' must be an initializer .* or None; got 'zeros'"):
        CELLS[name](N_IN, N, b_init="zeros")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"r_min": 0.9, "r_max": 0.5}, r"'r_min', 'r_max' must satisfy 0 <= r_min < r_max <= 1; got 0.9, 0.5"),
        ({"r_max": 1.5}, r"'r_min', 'r_max' must satisfy 0 <= r_min < r_max <= 1; got 0.0, 1.5"),
        ({"max_phase": 0.0}, r"'max_phase' must be a finite number in \(0, inf\); got 0.0"),
        ({"r_min": "0"}, "'r_min' must be a finite number; got '0'"),
        ({"d_hidden": 0}, "'d_hidden' must be a positive int; got 0"),
    ],
)
def test_lru_bad_arguments_are_named(kwargs, match):
    args = {"d_model": N_IN, "d_hidden": N, **kwargs}
    with pytest.raises(ValueError, match=match):
        dt.nn.LRUCell(**args)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_input_of_the_wrong_rank_names_x(name):
    cell = CELLS[name](N_IN, N)
    brainstate.nn.init_all_states(cell, batch_size=B)
    with pytest.raises(ValueError, match=rf"'x' must have shape \(B, {N_IN}\) or \({N_IN},\); got \(2, 2, {N_IN}\)"):
        cell(np.ones((2, 2, N_IN), np.float32))
