"""braintrace 0.2.8's learner-object API, unbatched compile and etrace_grad options
(issue #15 items 1-3), each checked against disttrace's existing path."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace.algorithms import _d_rtrl, _es_d_rtrl
from disttrace.testing import EXACT_F64_ATOL

N_IN, N, T, B = 3, 4, 6, 2


class Leaky(brainstate.nn.Module):
    """A leaky rate layer that works batched and unbatched (braintrace-style states)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(N_IN, N) * 0.5)
        self.b = brainstate.ParamState(jnp.zeros(N))

    def _zeros(self, batch_size):
        return jnp.zeros((N,) if batch_size is None else (batch_size, N))

    def init_state(self, batch_size=None, **kw):
        self.v = brainstate.HiddenState(self._zeros(batch_size))

    def reset_state(self, batch_size=None, **kw):
        self.v.value = self._zeros(batch_size)

    def update(self, x):
        self.v.value = 0.8 * self.v.value + jnp.tanh(dt.matmul(x, self.w.value, self.b.value))
        return self.v.value


def _model(seed=0):
    brainstate.random.seed(seed)
    return Leaky()


def _data(batch=(B,)):
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, *batch, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, *batch, N))
    return xs, ys


def _mse(learner):
    return lambda x, y: jnp.mean((learner(x) - y) ** 2)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=EXACT_F64_ATOL)


def _compiled(algo=dt.D_RTRL, **options):
    learner = dt.compile(_model(), algo, jnp.zeros((B, N_IN)), batch_size=B, **options)
    return learner


# ---- item 1: names and objects ------------------------------------------------------------------
def test_spec_names_keep_working():
    assert type(dt.D_RTRL()) is _d_rtrl.D_RTRL
    es = dt.ES_D_RTRL(decay=0.5)
    assert type(es) is _es_d_rtrl.ES_D_RTRL and es.f_decay == 0.5
    assert dt.pp_prop(decay_or_rank=3) == dt.ES_D_RTRL(0.5)
    assert isinstance(dt.D_RTRL(), dt.D_RTRL) and isinstance(es, dt.D_RTRL | dt.ES_D_RTRL)
    assert isinstance(_compiled(dt.ES_D_RTRL, decay=0.9), dt.algorithms.OnlineLearner)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("make", [lambda m: dt.D_RTRL(m), lambda m: dt.pp_prop(m, 0.9), lambda m: dt.ES_D_RTRL(m, (0.9, 0.8))])
def test_object_equals_compiled_learner(make):
    xs, ys = _data()
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = make(model)
    assert isinstance(algo, dt.ETraceVjpAlgorithm | dt.ETraceAlgorithm) and isinstance(algo, brainstate.nn.Module)
    algo.compile_graph(xs[0])
    spec = algo._spec()
    ref = dt.compile(_model(), spec, xs[0], batch_size=B)
    got = algo.etrace_grad(xs, ys, step_fn=_mse(algo))
    want = ref.etrace_grad(xs, ys, step_fn=_mse(ref))
    _close(got, want)
    assert set(algo.param_states) == {("w",), ("b",)} and set(algo.hidden_states) == {("v",)}
    assert algo.graph is algo.learner.graph and algo.is_compiled


@pytest.mark.usefixtures("x64")
def test_multi_step_data_runs_t_steps():
    xs, _ = _data()
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = dt.D_RTRL(model, vjp_method="multi-step")
    algo.compile_graph(xs[0])
    ref = _compiled()
    outs = algo(dt.MultiStepData(xs))
    _close(outs, ref.predict(xs))
    _close(algo(dt.SingleStepData(xs[0])), ref.predict(jnp.concatenate([xs, xs[:1]]))[-1])


def test_refusals_say_why():
    model = _model()
    with pytest.raises(dt.NotSupportedError, match="braintrace mode disttrace does not implement"):
        dt.ControlFlowPolicy(while_hidden="opaque-fwd")
    assert dt.ControlFlowPolicy() == dt.ControlFlowPolicy(cond="convert", scan_descent="off")  # braintrace's defaults
    with pytest.raises(dt.NotSupportedError, match="config"):
        dt.D_RTRL(model, config=object())
    with pytest.raises(dt.NotSupportedError, match="trace_dtype"):
        dt.D_RTRL(model, trace_dtype=jnp.float16)
    with pytest.raises(ValueError, match="vjp_method"):
        dt.D_RTRL(model, vjp_method="two-step")
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = dt.D_RTRL(model, vjp_method="multi-step", control_flow=dt.ControlFlowPolicy())
    algo.compile_graph(jnp.zeros((B, N_IN)))
    xs, ys = _data()
    with pytest.raises(dt.NotSupportedError, match="window mode"):
        algo.etrace_grad(xs, ys, step_fn=_mse(algo), chunk_size=2)
    with pytest.raises(RuntimeError, match="not compiled"):
        _ = dt.D_RTRL(_model()).graph


@pytest.mark.usefixtures("x64")
def test_single_step_chunk_size_is_the_chunked_contraction():
    xs, ys = _data()
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = dt.D_RTRL(model)
    algo.compile_graph(xs[0])
    ref = _compiled()
    _close(algo.etrace_grad(xs, ys, step_fn=_mse(algo), chunk_size=4), ref.etrace_grad(xs, ys, step_fn=_mse(ref)))


# ---- item 2: unbatched --------------------------------------------------------------------------
@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
def test_unbatched_equals_batch_of_one(algo):
    xs, ys = _data(batch=())
    un_model = _model()
    un = dt.compile(un_model, algo, xs[0])
    assert un.unbatched and un_model.v.value.shape == (N,)
    one = dt.compile(_model(), algo, xs[:1], batch_size=1)
    g_un, l_un = un.etrace_grad(xs, ys, step_fn=_mse(un), return_value=True)
    g_one, l_one = one.etrace_grad(xs[:, None], ys[:, None], step_fn=_mse(one), return_value=True)
    _close((g_un, l_un), (g_one, l_one))
    assert un_model.v.value.shape == (N,)
    _close(un_model.v.value, one.model.v.value[0])
    assert un(xs[0]).shape == (N,) and un.predict(xs).shape == (T, N)
    un.reset_state()
    assert un_model.v.value.shape == (N,)


@pytest.mark.usefixtures("x64")
def test_unbatched_object_and_vmap():
    xs, ys = _data(batch=())
    model = _model()
    brainstate.nn.init_all_states(model)
    algo = dt.D_RTRL(model)
    algo.compile_graph(xs[0])
    assert algo.learner.unbatched
    one = dt.compile(_model(), dt.D_RTRL, xs[:1], batch_size=1, vmap=True)
    _close(algo.etrace_grad(xs, ys, step_fn=_mse(algo)), one.etrace_grad(xs[:, None], ys[:, None], step_fn=_mse(one)))
    with pytest.raises(ValueError, match="vmap=True needs batch_size"):
        dt.compile(_model(), dt.D_RTRL, xs[0], vmap=True)


# ---- item 3: etrace_grad options, etrace_evolve, jit --------------------------------------------
@pytest.mark.usefixtures("x64")
def test_mask_is_a_hand_weighted_loss():
    xs, ys = _data()
    mask = jnp.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0])
    a, ref = _compiled(), _compiled()
    got, masked = a.etrace_grad(xs, ys, step_fn=_mse(a), mask=mask, reduction="sum", loss_output="masked", return_value=True)
    weighted = lambda x, y, w: w * _mse(ref)(x, y)
    want, want_losses = ref.etrace_grad(xs, ys, mask, step_fn=weighted, return_value=True)
    _close((got, masked), (jax.tree.map(lambda g: g * T, want), want_losses))
    b = _compiled()
    mean = b.etrace_grad(xs, ys, step_fn=_mse(b), mask=mask)
    _close(mean, jax.tree.map(lambda g: g / jnp.sum(mask), got))


@pytest.mark.usefixtures("x64")
def test_reduction_sum_is_t_times_mean_and_weights_select():
    xs, ys = _data()
    a, ref = _compiled(), _compiled()
    subset = {"the weight": a.param_states[("w",)]}
    total = a.etrace_grad(xs, ys, step_fn=_mse(a), reduction="sum", weights=subset)
    mean = ref.etrace_grad(xs, ys, step_fn=_mse(ref))
    assert list(total) == ["the weight"]
    _close(total["the weight"], mean[("w",)] * T)
    with pytest.raises(ValueError, match="not a ParamState of this model"):
        a.etrace_grad(xs, ys, step_fn=_mse(a), weights={"x": brainstate.ParamState(jnp.zeros(2))})


@pytest.mark.usefixtures("x64")
def test_loss_outputs_and_aux():
    xs, ys = _data()
    mask = jnp.array([0.0, 1.0, 1.0, 3.0, 1.0, 0.0])
    a, ref, outs = _compiled(), _compiled(), _compiled()
    predicted = outs.predict(xs)
    raw = ref.etrace_grad(xs, ys, step_fn=_mse(ref), return_value=True)[1]

    def with_aux(x, y):
        out = a(x)
        return jnp.mean((out - y) ** 2), out

    _, per_step, aux = a.etrace_grad(xs, ys, step_fn=with_aux, mask=mask, has_aux=True, return_value=True)
    _close((per_step, aux), (raw, predicted))
    for output, want in (("masked", raw * mask), ("scalar", jnp.sum(raw * mask) / jnp.sum(mask))):
        b = _compiled()
        _close(b.etrace_grad(xs, ys, step_fn=_mse(b), mask=mask, loss_output=output, return_value=True)[1], want)
    with pytest.raises(ValueError, match="'reduction'"):
        a.etrace_grad(xs, ys, step_fn=_mse(a), reduction="max")
    with pytest.raises(ValueError, match="'mask' must have shape"):
        a.etrace_grad(xs, ys, step_fn=_mse(a), mask=jnp.ones(T + 1))


@pytest.mark.usefixtures("x64")
def test_etrace_evolve_advances_like_etrace_grad():
    xs, ys = _data()
    a, ref = _compiled(), _compiled()
    outs = a.etrace_evolve(xs, return_outputs=True)
    ref.etrace_grad(xs, ys, step_fn=_mse(ref))
    _close(outs, _compiled().predict(xs))
    _close(a.model.v.value, ref.model.v.value)
    # the traces advanced too: the next gradients agree
    _close(a.etrace_grad(xs, ys, step_fn=_mse(a)), ref.etrace_grad(xs, ys, step_fn=_mse(ref)))
    assert a.etrace_evolve(xs) is None
    assert a.etrace_evolve(xs, chunk_size=3, return_outputs=True).shape == (2, 3, B, N)


@pytest.mark.usefixtures("x64")
def test_etrace_grad_and_evolve_inside_brainstate_jit():
    xs, ys = _data()
    a, ref = _compiled(), _compiled()
    a.init_etrace_state()

    @brainstate.transform.jit
    def run(xs, ys, mask):
        a.etrace_evolve(xs[:2])
        return a.etrace_grad(xs, ys, step_fn=_mse(a), mask=mask, return_value=True)

    mask = jnp.ones(T).at[0].set(0.0)
    got = run(xs, ys, mask)
    ref.etrace_evolve(xs[:2])
    _close(got, ref.etrace_grad(xs, ys, step_fn=_mse(ref), mask=mask, return_value=True))
    _close(a.model.v.value, ref.model.v.value)


@pytest.mark.usefixtures("x64")
def test_braintrace_canonical_loop_only_import_changed():
    """braintrace's training loop (jitted step: reset_all_states, etrace_grad, an optax
    update) with ``braintrace`` replaced by ``dt``, against the same loop run eagerly
    through disttrace.compile's learner."""
    xs, ys = _data()
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    learner = dt.D_RTRL(model)
    learner.compile_graph(xs[0])
    tx = optax.sgd(0.1)
    opt_state = brainstate.ShortTermState(tx.init({k: v.value for k, v in learner.param_states.items()}))

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(learner, batch_size=B)
        grads, losses = learner.etrace_grad(xs, ys, step_fn=_mse(learner), return_value=True)
        params = {k: v.value for k, v in learner.param_states.items()}
        updates, opt_state.value = tx.update(grads, opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            learner.param_states[k].value = v
        return losses.mean()

    ref = _compiled()
    ref_opt = tx.init(ref.params())
    for _ in range(3):
        loss = train_step(xs, ys)
        ref.reset_state()
        grads, losses = ref.etrace_grad(xs, ys, step_fn=_mse(ref), return_value=True)
        updates, ref_opt = tx.update(grads, ref_opt, ref.params())
        for k, v in optax.apply_updates(ref.params(), updates).items():
            ref.param_states[k].value = v
        _close(loss, losses.mean())
    _close({k: v.value for k, v in learner.param_states.items()}, ref.params())


def test_autodiff_through_learner_x_is_refused_not_silently_wrong():
    # braintrace routes jax/brainstate grad through learner(x) with its own VJP; here it would give the
    # recurrent weights only their one-step gradient, so it is refused at the backward pass
    model = _model()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = dt.D_RTRL(model)
    algo.compile_graph(jnp.zeros((B, N_IN)))
    params = model.states(brainstate.ParamState)
    x = jnp.ones((B, N_IN))
    with pytest.raises(dt.NotSupportedError, match=r"autodiff through learner\(x\).*learner.etrace_grad"):
        brainstate.transform.grad(lambda: algo(x).sum(), grad_states=params)()
    # (raw jax.grad is refused earlier, by brainstate: it cannot track the state writes of a step)
    assert algo(x).shape == (B, N)  # the learner is still usable
