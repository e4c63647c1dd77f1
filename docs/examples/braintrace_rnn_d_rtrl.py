# ruff: noqa: I001  (the braintrace import stays the first import: it is the one line to change)
"""A GRU learns the integrator task online with D-RTRL: a braintrace 0.2.8 program.

``braintrace.compile`` + ``etrace_grad`` in a ``brainstate.transform.jit`` training step,
with an optax optimizer. Only the first import differs from the braintrace program; run it
under braintrace 0.2.8 by writing ``import braintrace`` there instead.

Task: x_t ~ N(0, 1) (B, 1); target y_t = (x_1 + ... + x_t) / sqrt(T) (B, 1); loss: the mean
over time of the squared error. Prints the loss every 10 updates, then
``first loss <a> -> final loss <b>``.
"""

import disttrace as braintrace  # the only change from a braintrace 0.2.8 program

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

T, B, N_HIDDEN, N_UPDATES = 20, 32, 24, 60


class Integrator(brainstate.nn.Module):
    def __init__(self, n_hidden):
        super().__init__()
        self.rnn = braintrace.nn.GRUCell(1, n_hidden)
        self.out = braintrace.nn.Linear(n_hidden, 1)

    def update(self, x):
        return self.out(self.rnn(x))


def batch(rng):
    xs = rng.standard_normal((T, B, 1)).astype(np.float32)
    return jnp.asarray(xs), jnp.asarray(np.cumsum(xs, axis=0) / np.sqrt(T))


def main():
    brainstate.random.seed(0)
    model = Integrator(N_HIDDEN)
    learner = braintrace.compile(model, braintrace.D_RTRL, jnp.zeros((B, 1)), batch_size=B)
    weights = model.states(brainstate.ParamState)
    tx = optax.adam(1e-2)
    opt_state = brainstate.ShortTermState(tx.init({k: w.value for k, w in weights.items()}))

    def step_loss(x, y):
        return jnp.mean((learner(x) - y) ** 2)

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(model, batch_size=B)  # a new trial: fresh hidden states ...
        learner.reset_state(batch_size=B)  # ... and fresh eligibility traces
        grads, losses = learner.etrace_grad(xs, ys, step_fn=step_loss, weights=weights, return_value=True)
        params = {k: w.value for k, w in weights.items()}
        updates, opt_state.value = tx.update(grads, opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            weights[k].value = v
        return losses.mean()

    rng = np.random.default_rng(0)
    losses = []
    for i in range(N_UPDATES):
        losses.append(float(train_step(*batch(rng))))
        if i % 10 == 0:
            print(f"update {i:3d}  loss {losses[-1]:.4f}")
    first, final = losses[0], float(np.mean(losses[-5:]))
    print(f"first loss {first:.4f} -> final loss {final:.4f}")
    assert jax.numpy.isfinite(final) and final < first


if __name__ == "__main__":
    main()
