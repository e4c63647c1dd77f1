"""Sequences laid out on a mesh of ``Explicit`` axes (``jax.make_mesh``'s default) run
through ``etrace_grad`` and ``etrace_evolve``, step by step and chunked, and give the
gradients of the same sequences on one device (tolerance: ``test_step.TOL``, the order of
float additions across devices)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import disttrace as dt
from tests.distributed.test_step import TOL

T, B, N_IN, N_OUT = 20, 8, 5, 3

pytestmark = pytest.mark.skipif(
    jax.device_count() < 2 or B % jax.device_count() != 0,
    reason=f"needs 2+ devices dividing the batch {B} (XLA_FLAGS=--xla_force_host_platform_device_count=8)",
)


def _learner():
    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(N_IN, 8, N_OUT, n_layers=1, neuron="lif", recurrent=True, tau_out=0.0)
    return dt.compile(net, dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)


def _data():
    xs = (jax.random.uniform(jax.random.PRNGKey(1), (T, B, N_IN)) < 0.5).astype(jnp.float32)
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_OUT))
    return xs, ys


def _explicit(*arrays):
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Explicit,))
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
    return tuple(jax.device_put(a, sharding) for a in arrays)


@pytest.mark.parametrize("chunk_size", [None, 4, 7])  # 7: a tail chunk of 6
def test_etrace_grad_on_explicit_axes_equals_one_device(chunk_size):
    xs, ys = _data()
    grads = []
    for seqs in ((xs, ys), _explicit(xs, ys)):
        learner = _learner()
        step_fn = lambda x, y, learner=learner: jnp.mean((learner(x) - y) ** 2)
        grads.append(learner.etrace_grad(*seqs, step_fn=step_fn, chunk_size=chunk_size))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), **TOL), *grads)


def test_etrace_evolve_on_explicit_axes_equals_one_device():
    xs, _ = _data()
    outs = []
    for (seq,) in ((xs,), _explicit(xs)):
        learner = _learner()
        outs.append(learner.etrace_evolve(seq, return_outputs=True))
    np.testing.assert_allclose(np.asarray(outs[1]), np.asarray(outs[0]), **TOL)
