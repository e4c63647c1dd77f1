"""Nets, data and the single-device reference shared by the sharded-step tests and
the multi-process worker (``multihost_worker.py``).

Sizes are divisible by 8 so that every default rule fits every mesh of 8 devices:
batch 16 (``data`` up to 8), 32 neurons and 8 outputs (``model`` up to 8).
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

import disttrace as dt

B, N_IN, N, N_OUT, T = 16, 8, 32, 8, 20
ALGOS = {"d_rtrl": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL}
# Plain SGD: its update is linear in the gradient, so a last-bit difference in a
# gradient stays a last-bit difference in the parameters (Adam's first steps are
# ~lr·sign(g) and would amplify rounding noise in near-zero gradients).
OPTIMIZER = optax.sgd(0.05)


class GRUNet(brainstate.nn.Module):
    """GRU cell + memoryless readout."""

    def __init__(self):
        super().__init__()
        self.cell = dt.nn.GRUCell(N_IN, N)
        self.readout = dt.nn.LeakyRateReadout(N, N_OUT, tau=0)

    def update(self, x):
        return self.readout(self.cell(x))


NETS = {
    # recurrent LIF layer + leaky readout (tau 5: the readout keeps a hidden state and a trace too)
    "lif": lambda: dt.nn.SpikingNet(N_IN, N, N_OUT, recurrent=True, tau_out=5.0),
    "gru": GRUNet,
}


def mse(out, y):
    return jnp.mean((out - y) ** 2)


def build(net: str, algo: str):
    """A compiled learner with fixed initial parameters (seed 0)."""
    brainstate.random.seed(0)
    kw = {"decay": 0.9} if algo == "es_d_rtrl" else {}
    return dt.compile(NETS[net](), ALGOS[algo], jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse, **kw)


def data():
    """(T, B, N_IN) input spikes (amplitude 2) and (T, B, N_OUT) targets, as numpy."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(42))
    xs = (jax.random.uniform(k1, (T, B, N_IN)) < 0.3).astype(jnp.float32) * 2.0
    ys = jax.random.normal(k2, (T, B, N_OUT))
    return np.asarray(xs), np.asarray(ys)


def reference(learner, xs, ys):
    """T online steps on one device, written independently of disttrace.distributed.

    Returns:
      (params, learner state, losses (T,)) as numpy.
    """

    @jax.jit
    def step(params, opt_state, state, x, y):
        state, out, grads = learner.step(state, params, x, y)
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, mse(out, y)

    params = learner.params()
    opt_state, state, losses = OPTIMIZER.init(params), learner.init(), []
    for t in range(xs.shape[0]):
        params, opt_state, state, loss = step(params, opt_state, state, xs[t], ys[t])
        losses.append(loss)
    return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, state), np.asarray(losses)
