"""Issue 14, item 1: a block of K stream steps in one dispatch (``Trainer.step_block``) is
K calls of ``Trainer.step``: bitwise on CPU, on one device and on a 2x2 mesh of fake CPU
devices, and a checkpoint after a block equals one after the K steps."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import disttrace as dt
import disttrace.distributed as dd
from disttrace.checkpoint import Checkpointer
from tests.nn.layer_case import Stack

# Adam cannot run under the suite's strict dtype promotion (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("optax_promotion")

B, N_IN, N, N_OUT, K = 8, 4, 16, 2, 6


def _trainer(algo=dt.D_RTRL, mesh=None, example=True, **options):
    brainstate.random.seed(0)
    net = Stack(dt.nn.LeakyRate(N_IN, N), dt.nn.LeakyRateReadout(N, N_OUT, tau=0))
    learner = dt.compile(net, algo, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=dt.train.mse)
    batch = (jnp.zeros((B, N_IN)), jnp.zeros((B, N_OUT))) if example else None
    return dt.train.Trainer(learner, optax.adam(1e-2), batch, mesh, **options)


def _block(k=K, seed=0):
    xs = jax.random.normal(jax.random.PRNGKey(seed), (k, B, N_IN))
    return xs, 0.5 * xs[..., :N_OUT]


def _same(a, b) -> None:
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
def test_a_block_is_k_single_steps_bitwise(algo):
    block, single = _trainer(algo), _trainer(algo)
    for seed in range(2):  # two blocks: the second starts from a state a block left
        xs, ys = _block(seed=seed)
        losses = block.step_block(xs, ys)
        singles = [single.step(xs[t], ys[t]) for t in range(K)]
        _same(losses, jnp.stack(singles))
    _same(block.state, single.state)
    assert block.step_count == single.step_count == int(block.state.step) == 2 * K


def test_a_block_on_a_2x2_mesh_is_k_single_steps_there():
    mesh = dd.make_mesh(data=2, model=2, devices=jax.devices()[:4])
    block, single, one_device = _trainer(mesh=mesh), _trainer(mesh=mesh), _trainer()
    xs, ys = _block()
    block.step_block(xs, ys)
    for t in range(K):
        single.step(xs[t], ys[t])
        one_device.step(xs[t], ys[t])
    _same(block.state, single.state)
    # against one device: the same sums in another order (tolerance as tests/distributed/test_step.py)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6),
                 block.state.params, one_device.state.params)
    h = block.state.learner_state.hidden[("layers", 0, "h")]
    assert h.sharding.spec[0] == "data"  # the batch stays split over data inside the scan
    specs = jax.tree.map(lambda a: a.sharding.spec, block.state)
    assert specs == jax.tree.map(lambda s: s.spec, block.rules.state_shardings())  # the layout is kept


def test_a_checkpoint_after_a_block_equals_one_after_k_steps(tmp_path):
    block, single = _trainer(dt.ES_D_RTRL), _trainer(dt.ES_D_RTRL)
    xs, ys = _block()
    block.step_block(xs, ys)
    for t in range(K):
        single.step(xs[t], ys[t])
    for name, trainer in (("block", block), ("single", single)):
        with Checkpointer(tmp_path / name) as ckpt:
            assert trainer.save(ckpt, meta={"offset": K})
    restored = {}
    for name in ("block", "single"):
        with Checkpointer(tmp_path / name, read_only=True) as ckpt:
            assert ckpt.steps() == [K]
            restored[name] = ckpt.restore(block.rules)
    _same(restored["block"][0], restored["single"][0])
    assert restored["block"][1] == restored["single"][1] == {"offset": K}
    # and a resumed block stream goes on exactly as the uninterrupted one
    resumed = _trainer(dt.ES_D_RTRL)
    with Checkpointer(tmp_path / "block", read_only=True) as ckpt:
        resumed.restore(ckpt)
    xs2, ys2 = _block(seed=1)
    resumed.step_block(xs2, ys2)
    block.step_block(xs2, ys2)
    _same(resumed.state, block.state)


def test_block_rules_come_from_its_first_step_and_steps_mix_with_blocks():
    trainer, reference = _trainer(example=False, mesh=dd.make_mesh(2, 2, devices=jax.devices()[:4])), _trainer(
        mesh=dd.make_mesh(2, 2, devices=jax.devices()[:4]))
    xs, ys = _block()
    trainer.step_block(xs[:3], ys[:3])
    trainer.step(xs[3], ys[3])
    trainer.step_block(xs[4:], ys[4:])
    reference.step_block(xs, ys)
    assert trainer.rules.specs["x"] == jax.sharding.PartitionSpec("data")
    _same(trainer.state, reference.state)


def test_a_block_of_the_wrong_shape_is_refused_naming_the_leaf():
    trainer = _trainer()
    xs, ys = _block()
    with pytest.raises(ValueError, match=r"leaf 'y' must have shape \(6, 8, 2\).*got \(5, 8, 2\)"):
        trainer.step_block(xs, ys[:5])
    with pytest.raises(ValueError, match=r"leaf 'x' must have shape \(K, 8, 4\).*got \(8, 4\)"):
        trainer.step_block(xs[0], ys[0])
    with pytest.raises(ValueError, match="at least one step"):
        trainer.step_block(xs[:0], ys[:0])
    with pytest.raises(ValueError, match="must have the structure"):
        trainer.step_block(xs, (ys,))
    assert trainer.step_count == 0
    fresh = _trainer(example=False)
    with pytest.raises(ValueError, match=r"Trainer.step_block: every leaf of \(xs, ys\) must be \(K, ...\)"):
        fresh.step_block(xs[:0], ys[:0])


def test_a_block_already_on_the_device_is_used_as_it_is():
    trainer, reference = _trainer(), _trainer()
    xs, ys = _block()
    on_device = dt.train.shard_block(trainer.rules, xs, ys)
    again = dt.train.shard_block(trainer.rules, *on_device)
    assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(on_device)))
    trainer.step_block(*on_device)
    reference.step_block(xs, ys)
    _same(trainer.state, reference.state)
