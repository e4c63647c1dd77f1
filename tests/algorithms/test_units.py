"""brainunit quantities through the compiler and the learners (issue: braintrace drop-in,
item 5): a spiking model written in brainpy.state's style (potentials in mV, currents in
µA, conductances in mS, time in ms) compiles, D-RTRL equals BPTT on it, and each weight's
gradient carries the unit loss unit / weight unit, as a unit-aware autodiff of the
unrolled model gives."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL

T, B, N_IN, N = 12, 3, 4, 5
DT = 0.5 * u.ms


class UnitLIF(brainstate.nn.Module):
    """A current-based LIF with an exponential synapse, in physical units.

    ``dI/dt = -I/tau_syn`` plus ``x @ W`` (x in mV, W in mS: µA) at each step and
    ``C dV/dt = g_L (E_L - V) + I``, spikes through a surrogate, a soft reset; the
    readout ``s @ W_out`` is dimensionless. Each neuron's (I, V) only reads its own
    previous values: a diagonal hidden group, where D-RTRL is exact.
    """

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.uniform(0.0, 0.4, (N_IN, N)) * u.mS)
        self.g_leak = brainstate.ParamState(brainstate.random.uniform(0.05, 0.15, (N,)) * u.mS)
        self.w_out = brainstate.ParamState(brainstate.random.normal(0.0, 0.5, (N, 2)))
        self.tau_syn, self.c_m = 5.0 * u.ms, 1.0 * u.uF
        self.e_leak, self.v_th, self.v_reset = -65.0 * u.mV, -60.0 * u.mV, -70.0 * u.mV

    def init_state(self, batch_size=None, **kwargs):
        self.i_syn = brainstate.HiddenState(jnp.zeros((batch_size, N)) * u.uA)
        self.v = brainstate.HiddenState(jnp.full((batch_size, N), -65.0) * u.mV)

    def update(self, x):
        dt_ = brainstate.environ.get_dt()
        i_syn = self.i_syn.value - dt_ / self.tau_syn * self.i_syn.value + dt.matmul(x, self.w.value)
        v = self.v.value
        v = v + dt_ / self.c_m * (dt.element_wise(self.g_leak.value) * (self.e_leak - v) + i_syn)
        s = dt.nn.spike((v - self.v_th) / u.mV)
        self.i_syn.value = i_syn
        self.v.value = v - (self.v_th - self.v_reset) * s
        return dt.matmul(s, self.w_out.value)


@pytest.fixture
def unit_dt():
    with brainstate.environ.context(dt=DT):
        yield


def _data():
    xs = jax.random.uniform(jax.random.PRNGKey(1), (T, B, N_IN), minval=0.0, maxval=60.0) * u.mV
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, 2))
    return xs, ys


def _model(seed=0):
    brainstate.random.seed(seed)
    model = UnitLIF()
    brainstate.nn.init_all_states(model, batch_size=B)
    return model


def _grads(algorithm, xs, ys, loss_unit=None, **kw):
    model = _model()
    learner = dt.compile(model, algorithm, xs[0], batch_size=B)
    scale = 1.0 if loss_unit is None else loss_unit

    def step_fn(x, y):
        return jnp.mean((learner(x) - y) ** 2) * scale

    return learner.etrace_grad(xs, ys, step_fn=step_fn, **kw), model


def _unrolled_oracle(xs, ys):
    """brainstate's unit-aware gradient of the unrolled model: an oracle that knows
    nothing of disttrace's compiler."""
    model = _model()
    weights = model.states(brainstate.ParamState)

    def loss():
        total = 0.0
        for t in range(T):
            total = total + jnp.mean((model(xs[t]) - ys[t]) ** 2)
        return total / T

    return brainstate.transform.grad(loss, weights, unit_aware=True)()


def _assert_close(got, ref):
    for path in ref:
        g, r = got[path], ref[path]
        assert u.get_unit(g) == u.get_unit(r), (path, u.get_unit(g), u.get_unit(r))
        np.testing.assert_allclose(
            np.asarray(u.get_mantissa(g)), np.asarray(u.get_mantissa(r)), rtol=0, atol=EXACT_F64_ATOL, err_msg=str(path)
        )


@pytest.mark.parametrize("chunk", [None, 5])
def test_d_rtrl_equals_bptt_with_units(x64, unit_dt, chunk):
    xs, ys = _data()
    ref, _ = _grads(dt.BPTT, xs, ys)
    got, model = _grads(dt.D_RTRL, xs, ys, chunk_size=chunk)
    _assert_close(got, ref)
    # the gradient of a weight in mS has the unit loss/mS (a dimensionless loss: 1/mS = kohm)
    assert u.get_unit(got[("w",)]) == u.UNITLESS / u.mS == u.kohm
    assert u.get_unit(got[("g_leak",)]) == u.kohm
    assert not isinstance(got[("w_out",)], u.Quantity)
    assert float(jnp.abs(u.get_mantissa(got[("w",)])).max()) > 1e-3  # not a comparison of zeros
    # the model keeps its units after the online run
    assert model.v.value.unit == u.mV and model.i_syn.value.unit == u.uA and model.w.value.unit == u.mS


def test_bptt_equals_unit_aware_autodiff(x64, unit_dt):
    xs, ys = _data()
    got, _ = _grads(dt.BPTT, xs, ys)
    _assert_close(got, _unrolled_oracle(xs, ys))


def test_loss_unit_divides_gradient_unit(x64, unit_dt):
    xs, ys = _data()
    plain, _ = _grads(dt.D_RTRL, xs, ys)
    got, _ = _grads(dt.D_RTRL, xs, ys, loss_unit=u.mV**2, return_value=True)
    grads, losses = got
    assert u.get_unit(losses) == u.mV**2
    assert u.get_unit(grads[("w",)]) == u.mV**2 / u.mS
    assert u.get_unit(grads[("w_out",)]) == u.mV**2
    for path in plain:
        np.testing.assert_allclose(
            np.asarray(u.get_mantissa(grads[path])), np.asarray(u.get_mantissa(plain[path])), rtol=1e-12
        )


def test_es_d_rtrl_runs_with_units(x64, unit_dt):
    xs, ys = _data()
    ref, _ = _grads(dt.BPTT, xs, ys)
    got, _ = _grads(dt.ES_D_RTRL(decay=0.9), xs, ys)
    assert u.get_unit(got[("w",)]) == u.kohm
    a = np.concatenate([np.ravel(u.get_mantissa(got[p])) for p in ref])
    b = np.concatenate([np.ravel(u.get_mantissa(ref[p])) for p in ref])
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.5  # an approximation, pointing the right way


def test_state_written_in_another_unit_is_converted(x64, unit_dt):
    class Volts(UnitLIF):
        def update(self, x):
            out = super().update(x)
            self.v.value = self.v.value.to(u.volt)  # same dimension, another scale
            return out

    xs, ys = _data()
    ref, _ = _grads(dt.D_RTRL, xs, ys)
    brainstate.random.seed(0)
    model = Volts()
    brainstate.nn.init_all_states(model, batch_size=B)
    learner = dt.compile(model, dt.D_RTRL, xs[0], batch_size=B)
    got = learner.etrace_grad(xs, ys, step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2))
    _assert_close(got, ref)
    assert model.v.value.unit == u.mV  # the state keeps the unit it was created with


def test_state_written_in_another_dimension_is_refused(unit_dt):
    class Wrong(UnitLIF):
        def update(self, x):
            out = super().update(x)
            self.v.value = self.v.value / u.mV * u.mA  # a potential written as a current
            return out

    brainstate.random.seed(0)
    model = Wrong()
    brainstate.nn.init_all_states(model, batch_size=B)
    with pytest.raises(ValueError, match=r"state 'v'.*mV"):
        dt.compile(model, dt.D_RTRL, _data()[0][0], batch_size=B)


def test_learner_object_and_jit_loop_with_units(unit_dt):
    """braintrace's spelling on a unit-ful model: the canonical jitted loop, an optax
    step on the mantissas, and the weights keep their units."""
    xs, ys = _data()
    model = _model()
    algo = dt.D_RTRL(model)
    algo.compile_graph(xs[0])
    algo.init_etrace_state()
    weights = model.states(brainstate.ParamState)
    tx = optax.sgd(1e-3)
    opt_state = brainstate.ShortTermState(tx.init(dt.units.mantissas({k: w.value for k, w in weights.items()})))

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(algo, batch_size=B)
        grads, loss = algo.etrace_grad(
            xs, ys, step_fn=lambda x, y: jnp.mean((algo(x) - y) ** 2), return_value=True, loss_output="scalar"
        )
        params = dt.units.mantissas({k: w.value for k, w in weights.items()})
        updates, opt_state.value = tx.update(dt.units.mantissas(grads), opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            weights[k].value = v * u.get_unit(weights[k].value) if isinstance(weights[k].value, u.Quantity) else v
        return loss

    first = float(train_step(xs, ys))
    for _ in range(30):
        last = float(train_step(xs, ys))
    assert last < first
    assert model.w.value.unit == u.mS and model.g_leak.value.unit == u.mS


def test_functional_api_and_trainer_see_mantissas(unit_dt):
    xs, ys = _data()
    model = _model()
    learner = dt.compile(model, dt.D_RTRL, xs[0], batch_size=B, loss_fn=lambda out, y: jnp.mean((out - y) ** 2))
    params = learner.params()
    assert all(not isinstance(v, u.Quantity) for v in jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, u.Quantity)))
    np.testing.assert_array_equal(params[("w",)], u.get_mantissa(model.w.value))
    trainer = dt.train.Trainer(learner, optax.sgd(1e-3))
    before = np.asarray(u.get_mantissa(model.w.value))
    for t in range(T):
        assert np.isfinite(float(trainer.step(xs[t], ys[t])))
    trainer.write_back()
    assert model.w.value.unit == u.mS and model.v.value.unit == u.mV
    assert not np.array_equal(np.asarray(u.get_mantissa(model.w.value)), before)
