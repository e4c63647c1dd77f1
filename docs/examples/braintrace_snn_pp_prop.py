# ruff: noqa: I001  (the braintrace import stays the first import: it is the one line to change)
"""A recurrent spiking network learns a rate-comparison task online with pp-prop
(ES-D-RTRL): a braintrace 0.2.8 program built from the learner-object API.

``braintrace.pp_prop(model, decay_or_rank)``, ``brainstate.nn.init_all_states`` +
``compile_graph`` (which also allocates the eligibility traces), and a
``brainstate.transform.jit`` training step that resets the network and its traces with
``brainstate.nn.reset_all_states`` and calls ``etrace_grad``, with an optax optimizer.
Only the first import differs from the braintrace program.

The network: ``braintrace.nn.Linear`` (input and recurrent weights in one matrix) ->
leaky integrate-and-fire neurons written on ``brainstate.HiddenState`` (with a
fast-sigmoid surrogate gradient) -> ``braintrace.nn.LeakyRateReadout``.
Task: 20 Poisson inputs; channels 0-9 fire faster than 10-19 for label 0 and the other
way round for label 1; the label is scored (cross-entropy) in the last 10 of 30 steps
(``etrace_grad``'s ``mask``). Prints ``first loss <a> -> final loss <b>`` and the
accuracy of the last updates.
"""

import disttrace as braintrace  # the only change from a braintrace 0.2.8 program

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

T, B, N_IN, N_REC, N_UPDATES = 30, 32, 20, 40, 40


def spike_fn(v):
    """Heaviside forward, fast-sigmoid derivative 1 / (1 + 4|v|)^2 backward."""
    surrogate = v / (1.0 + 4.0 * jnp.abs(v))  # its derivative is the fast sigmoid
    return surrogate + jax.lax.stop_gradient((v > 0).astype(v.dtype) - surrogate)


class LIF(brainstate.nn.Module):
    """V_t = a (V_{t-1} - s_{t-1} v_th) + I_t, s_t = H(V_t - v_th); V is kept before reset."""

    def __init__(self, n, tau=10.0, v_th=1.0):
        super().__init__()
        self.n, self.alpha, self.v_th = n, float(np.exp(-1.0 / tau)), v_th

    def init_state(self, batch_size=None, **kwargs):
        self.V = brainstate.HiddenState(jnp.zeros((self.n,) if batch_size is None else (batch_size, self.n)))

    def reset_state(self, batch_size=None, **kwargs):
        self.V.value = jnp.zeros((self.n,) if batch_size is None else (batch_size, self.n))

    def get_spike(self):
        return spike_fn(self.V.value - self.v_th)

    def update(self, current):
        reset = jax.lax.stop_gradient(self.get_spike()) * self.v_th
        self.V.value = self.alpha * (self.V.value - reset) + current
        return self.get_spike()


class RSNN(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.syn = braintrace.nn.Linear(N_IN + N_REC, N_REC, w_init=brainstate.nn.init.KaimingNormal(scale=2.0))
        self.lif = LIF(N_REC)
        self.readout = braintrace.nn.LeakyRateReadout(N_REC, 2, tau=5.0, w_init=brainstate.nn.init.KaimingNormal())

    def update(self, x):
        spikes = self.lif(self.syn(jnp.concatenate([x, self.lif.get_spike()], axis=-1)))
        return self.readout(spikes)


def batch(rng):
    labels = rng.integers(0, 2, B)
    rates = np.where((np.arange(N_IN) < N_IN // 2)[None, :] == (labels[:, None] == 0), 0.2, 0.1)
    xs = (rng.random((T, B, N_IN)) < rates[None]).astype(np.float32)
    return jnp.asarray(xs), jnp.asarray(np.broadcast_to(labels, (T, B)).astype(np.int32))


def main():
    brainstate.environ.set(dt=1.0)  # braintrace reads the time step for the readout's tau
    brainstate.random.seed(0)
    model = RSNN()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = braintrace.pp_prop(model, decay_or_rank=0.9)
    algo.compile_graph(jnp.zeros((B, N_IN)))
    weights = model.states(brainstate.ParamState)
    tx = optax.adam(2e-3)
    opt_state = brainstate.ShortTermState(tx.init({k: w.value for k, w in weights.items()}))
    mask = (jnp.arange(T) >= T - 10).astype(jnp.float32)

    def step_loss(x, y):
        logits = algo(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(algo, batch_size=B)  # the network's states and the traces
        grads, loss, acc = algo.etrace_grad(
            xs, ys, step_fn=step_loss, mask=mask, weights=weights, has_aux=True, return_value=True,
            loss_output="scalar",
        )
        params = {k: w.value for k, w in weights.items()}
        updates, opt_state.value = tx.update(grads, opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            weights[k].value = v
        return loss, jnp.sum(acc * mask) / jnp.sum(mask)

    rng = np.random.default_rng(0)
    losses, accs = [], []
    for i in range(N_UPDATES):
        loss, acc = train_step(*batch(rng))
        losses.append(float(loss))
        accs.append(float(acc))
        if i % 10 == 0:
            print(f"update {i:3d}  loss {losses[-1]:.4f}  accuracy {accs[-1]:.2f}")
    first, final = losses[0], float(np.mean(losses[-5:]))
    print(f"first loss {first:.4f} -> final loss {final:.4f} (accuracy of the last 5 updates {np.mean(accs[-5:]):.2f})")
    assert np.isfinite(final) and final < first


if __name__ == "__main__":
    main()
