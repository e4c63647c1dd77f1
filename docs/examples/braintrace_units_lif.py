# ruff: noqa: I001  (the braintrace import stays the first import: it is the one line to change)
"""Spiking neurons in physical units learn online with D-RTRL: a braintrace 0.2.8 program
in the brainpy.state style (potentials in mV, currents in µA, synaptic weights in mS, time
in ms).

Each input spike drives an exponential synaptic current ``x @ W`` (x: 1 mV per spike, W
in mS: µA); the membrane follows ``C dV/dt = g_L (E_L - V) + I`` with a learnable leak
conductance (``element_wise``), spikes through a surrogate and resets softly; a
``LeakyRateReadout`` reads the spikes. ``D_RTRL(model)``, ``compile_graph``, and a jitted
step with ``reset_all_states`` and ``etrace_grad(mask=)``. The optimizer works on numbers:
the step strips the units off the gradients and parameters (``u.get_mantissa``) and puts
the weights' units back. (Drop-in libraries differ in a gradient's unit, the weight's or
loss unit / weight unit, not in its number, which is all the step reads.)
Only the first import differs from the braintrace program.

Task: 20 Poisson inputs; channels 0-9 fire faster than 10-19 for label 0 and the other
way round for label 1; the label is scored in the last 10 of 30 steps. Prints
``first loss <a> -> final loss <b>``.
"""

import disttrace as braintrace  # the only change from a braintrace 0.2.8 program

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import optax

T, B, N_IN, N, N_UPDATES = 30, 32, 20, 40, 40


def spike_fn(v):
    """Heaviside forward, fast-sigmoid derivative 1 / (1 + 4|v|)^2 backward (v dimensionless)."""
    surrogate = v / (1.0 + 4.0 * jnp.abs(v))
    return surrogate + jax.lax.stop_gradient((v > 0).astype(v.dtype) - surrogate)


class LIF(brainstate.nn.Module):
    """Current-based LIF neurons with an exponential synapse, in physical units."""

    def __init__(self, n_in, n):
        super().__init__()
        self.n = n
        self.w = brainstate.ParamState(brainstate.random.uniform(0.0, 1.0, (n_in, n)) * u.mS)
        self.g_leak = brainstate.ParamState(jnp.full((n,), 0.1) * u.mS)
        self.tau_syn, self.c_m = 5.0 * u.ms, 1.0 * u.uF
        self.e_leak, self.v_th, self.v_reset = -65.0 * u.mV, -55.0 * u.mV, -65.0 * u.mV

    def init_state(self, batch_size=None, **kwargs):
        self.i_syn = brainstate.HiddenState(jnp.zeros((batch_size, self.n)) * u.uA)
        self.v = brainstate.HiddenState(jnp.full((batch_size, self.n), -65.0) * u.mV)

    def reset_state(self, batch_size=None, **kwargs):
        self.i_syn.value = jnp.zeros((batch_size, self.n)) * u.uA
        self.v.value = jnp.full((batch_size, self.n), -65.0) * u.mV

    def update(self, x):
        dt = brainstate.environ.get_dt()
        i_syn = self.i_syn.value - dt / self.tau_syn * self.i_syn.value + braintrace.matmul(x, self.w.value)
        v = self.v.value
        v = v + dt / self.c_m * (braintrace.element_wise(self.g_leak.value) * (self.e_leak - v) + i_syn)
        s = spike_fn((v - self.v_th) / (self.v_th - self.v_reset))
        self.i_syn.value = i_syn
        self.v.value = v - (self.v_th - self.v_reset) * jax.lax.stop_gradient(s)
        return s


class Net(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.lif = LIF(N_IN, N)
        self.readout = braintrace.nn.LeakyRateReadout(N, 2, tau=5.0 * u.ms, w_init=brainstate.nn.init.KaimingNormal())

    def update(self, x):
        return self.readout(self.lif(x))


def batch(rng):
    labels = rng.integers(0, 2, B)
    rates = np.where((np.arange(N_IN) < N_IN // 2)[None, :] == (labels[:, None] == 0), 0.2, 0.1)
    spikes = (rng.random((T, B, N_IN)) < rates[None]).astype(np.float32)
    return jnp.asarray(spikes) * u.mV, jnp.asarray(np.broadcast_to(labels, (T, B)).astype(np.int32))


def is_quantity(v):
    return isinstance(v, u.Quantity)


def numbers(tree):
    """The mantissas of a tree of quantities and arrays (what optax works on)."""
    return jax.tree.map(u.get_mantissa, tree, is_leaf=is_quantity)


def main():
    brainstate.environ.set(dt=1.0 * u.ms)
    brainstate.random.seed(0)
    model = Net()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = braintrace.D_RTRL(model)
    algo.compile_graph(jnp.zeros((B, N_IN)) * u.mV)
    weights = model.states(brainstate.ParamState)
    units = {k: jax.tree.map(u.get_unit, w.value, is_leaf=is_quantity) for k, w in weights.items()}
    tx = optax.adam(1e-2)
    opt_state = brainstate.ShortTermState(tx.init({k: numbers(w.value) for k, w in weights.items()}))
    mask = (jnp.arange(T) >= T - 10).astype(jnp.float32)

    def step_loss(x, y):
        return optax.softmax_cross_entropy_with_integer_labels(algo(x), y).mean()

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(algo, batch_size=B)
        grads, loss = algo.etrace_grad(
            xs, ys, step_fn=step_loss, mask=mask, weights=weights, return_value=True, loss_output="scalar"
        )
        params = {k: numbers(w.value) for k, w in weights.items()}
        updates, opt_state.value = tx.update(numbers(grads), opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            weights[k].value = jax.tree.map(lambda m, unit: u.maybe_decimal(u.Quantity(m, unit=unit)), v, units[k])
        return loss

    rng = np.random.default_rng(0)
    losses = []
    for i in range(N_UPDATES):
        losses.append(float(train_step(*batch(rng))))
        if i % 10 == 0:
            print(f"update {i:3d}  loss {losses[-1]:.4f}")
    first, final = losses[0], float(np.mean(losses[-5:]))
    print(f"first loss {first:.4f} -> final loss {final:.4f}; weight unit {model.lif.w.value.unit}")
    assert np.isfinite(final) and final < first


if __name__ == "__main__":
    main()
