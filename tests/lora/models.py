"""Small models for the LoRA tests: leaky units driven by a LoRA weight.

``h_t = 0.8 h_{t-1} + tanh(drive(x_t))`` with no recurrent weight and a memoryless
readout, so the true hidden Jacobian is diagonal and D-RTRL must equal BPTT. The base
weights live in a :class:`disttrace.lora.FrozenState` and the adapter in a
``ParamState``; the step applies the joined tree with the ``disttrace.lora`` helpers.
"""

import brainstate
import jax
import jax.numpy as jnp

import disttrace as dt
from disttrace import lora

B, N_IN, N, VOCAB, RANK = 2, 4, 6, 5, 2
CONV_POS, CONV_OUT = 3, 2  # conv: 3 positions x 2 channels = N neurons
KINDS = ("dense", "transpose", "conv", "embedding")


def base_params(kind: str) -> dict:
    """The base weights of each kind (float of the current precision)."""
    k = jax.random.PRNGKey(7)
    dtype = jnp.zeros(()).dtype
    if kind == "conv":
        return {"w": jax.random.normal(k, (3, 1, CONV_OUT), dtype)}  # window 3, 1 -> 2 channels
    if kind == "embedding":
        return {"w": jax.random.normal(k, (VOCAB, N), dtype)}
    if kind == "transpose":
        return {"w": jax.random.normal(k, (N, N_IN), dtype)}  # used as x @ w.T
    return {"w": jax.random.normal(k, (N_IN, N), dtype), "b": 0.1 * jnp.ones(N, dtype)}


def make_spec(kind: str, tune_bias: bool = False):
    decide = lambda path, leaf: (lora.FULL if tune_bias else lora.FREEZE) if leaf.ndim == 1 else RANK
    return lora.make_lora_spec(base_params(kind), decide)


def drive(kind: str, tree: dict, x):
    """The op of each kind applied to a joined tree (or a plain merged tree)."""
    if kind == "dense":
        return lora.matmul(x, tree["w"], tree["b"])
    if kind == "transpose":
        return lora.matmul(x, tree["w"], transpose=True)
    if kind == "embedding":
        return lora.embedding(jnp.argmax(x, -1), tree["w"])
    return lora.conv(x[:, :CONV_POS, None], tree["w"], padding="SAME")  # (B, 3, 2): a neuron per position


class LeakyLoRA(brainstate.nn.Module):
    """Leaky units driven by ``drive(kind, W + s·A·B)``; a trainable memoryless readout."""

    def __init__(self, kind: str = "dense", init: str = "gaussian", tune_bias: bool = False, alpha: float = 2.0):
        super().__init__()
        self.kind = kind
        spec = make_spec(kind, tune_bias)
        self._spec = (jax.tree.leaves(spec), jax.tree.structure(spec))
        params = base_params(kind)
        lp = lora.init_lora(params, spec, jax.random.PRNGKey(11), alpha=alpha, init=init)
        frozen, trainable = lora.split_trainable(lora.join(params, lp, spec), spec)
        self.base = lora.FrozenState(frozen)
        self.adapter = brainstate.ParamState(trainable)
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (N, 2), jnp.zeros(()).dtype))

    @property
    def spec(self):
        leaves, tree = self._spec
        return jax.tree.unflatten(tree, leaves)

    def init_state(self, batch_size=None, **kw):
        shape = (batch_size, CONV_POS, CONV_OUT) if self.kind == "conv" else (batch_size, N)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        tree = lora.join(self.base.value, self.adapter.value, self.spec)
        self.h.value = 0.8 * self.h.value + jnp.tanh(drive(self.kind, tree, x))
        return dt.ops.matmul(self.h.value.reshape(x.shape[0], N), self.ro.value)


class LeakyMerged(LeakyLoRA):
    """The same model computing with the merged dense weights (the reference)."""

    def update(self, x):
        tree = lora.merge(self.base.value, self.adapter.value, self.spec)
        self.h.value = 0.8 * self.h.value + jnp.tanh(drive(self.kind, tree, x))
        return dt.ops.matmul(self.h.value.reshape(x.shape[0], N), self.ro.value)
