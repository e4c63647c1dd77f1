# ruff: noqa: I001  (the braintrace import stays the first import: it is the one line to change)
"""An LSTM learns to recall a cue after a delay, trained online by D-RTRL with the loss
masked to the recall steps: a braintrace 0.2.8 program.

Shows ``braintrace.D_RTRL(model, vjp_method='multi-step')``, ``etrace_evolve`` (a warm-up
that advances the network and its traces with no loss), ``etrace_grad`` with
``mask=`` and ``reduction='sum'``, and ``algo(braintrace.MultiStepData(xs))`` (T steps in one
call, outputs stacked (T, B, 1)) to score held-out trials. Only the first import differs
from the braintrace program.

Task: channel 0 carries a value v ~ U(-1, 1) at step 0, channel 1 is a go cue in the last
R steps; the target is v in those R steps. Prints the held-out recall error before and
after training: ``held-out loss <a> -> <b>``.
"""

import disttrace as braintrace  # the only change from a braintrace 0.2.8 program

import brainstate
import jax.numpy as jnp
import numpy as np
import optax

T, R, WARMUP, B, N_HIDDEN, N_UPDATES = 12, 4, 3, 32, 32, 80


class Recall(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = braintrace.nn.LSTMCell(2, N_HIDDEN)
        self.out = braintrace.nn.Linear(N_HIDDEN, 1)

    def update(self, x):
        return self.out(self.lstm(x))


def batch(rng):
    v = rng.uniform(-1.0, 1.0, (B,)).astype(np.float32)
    xs = np.zeros((T, B, 2), np.float32)
    xs[0, :, 0] = v
    xs[T - R :, :, 1] = 1.0
    ys = np.broadcast_to(v[None, :, None], (T, B, 1))
    return jnp.asarray(xs), jnp.asarray(ys)


def main():
    brainstate.random.seed(0)
    model = Recall()
    brainstate.nn.init_all_states(model, batch_size=B)
    algo = braintrace.D_RTRL(model, vjp_method="multi-step")
    algo.compile_graph(jnp.zeros((B, 2)))
    weights = model.states(brainstate.ParamState)
    tx = optax.adam(1e-3)  # the gradients are sums over the R recall steps (reduction='sum')
    opt_state = brainstate.ShortTermState(tx.init({k: w.value for k, w in weights.items()}))
    mask = (jnp.arange(WARMUP, T) >= T - R).astype(jnp.float32)  # score the recall steps only

    def step_loss(x, y):
        return jnp.mean((algo(x) - y) ** 2)

    @brainstate.transform.jit
    def train_step(xs, ys):
        brainstate.nn.reset_all_states(algo, batch_size=B)
        algo.etrace_evolve(xs[:WARMUP])  # the cue: network and traces advance, no loss
        grads, losses = algo.etrace_grad(
            xs[WARMUP:], ys[WARMUP:], step_fn=step_loss, mask=mask, reduction="sum", weights=weights,
            return_value=True, loss_output="masked",
        )
        params = {k: w.value for k, w in weights.items()}
        updates, opt_state.value = tx.update(grads, opt_state.value, params)
        for k, v in optax.apply_updates(params, updates).items():
            weights[k].value = v
        return losses.sum() / R

    @brainstate.transform.jit
    def held_out_loss(xs, ys):
        brainstate.nn.reset_all_states(algo, batch_size=B)
        outs = algo(braintrace.MultiStepData(xs))  # (T, B, 1)
        return jnp.mean((outs[T - R :] - ys[T - R :]) ** 2)

    rng = np.random.default_rng(0)
    test = batch(np.random.default_rng(123))
    before = float(held_out_loss(*test))
    for i in range(N_UPDATES):
        loss = float(train_step(*batch(rng)))
        if i % 20 == 0:
            print(f"update {i:3d}  recall loss {loss:.4f}")
    after = float(held_out_loss(*test))
    print(f"held-out loss {before:.4f} -> {after:.4f}")
    assert np.isfinite(after) and after < before


if __name__ == "__main__":
    main()
