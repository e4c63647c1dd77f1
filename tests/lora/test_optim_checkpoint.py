"""``wrap_optimizer``: frozen leaves unchanged after 100 steps and without optimizer
state; an adapter-only checkpoint round-trips through Orbax on disk."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from disttrace import lora


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    return {
        "dense": {"w": jax.random.normal(k[0], (6, 5)), "b": jnp.zeros(5)},
        "conv": jax.random.normal(k[1], (3, 2, 4)),
        "emb": jax.random.normal(k[2], (7, 5)),
        "gain": jnp.ones(5),
    }


def _spec(params):
    return lora.make_lora_spec(params, lambda p, leaf: {"gain": lora.FULL}.get(p[0], 2 if leaf.ndim > 1 else lora.FREEZE))


def _loss(tree, x, idx):
    h = lora.matmul(x, tree["dense"]["w"], tree["dense"]["b"]) * tree["gain"]
    c = lora.conv(x[:, :4, None] * jnp.ones((1, 1, 2)), tree["conv"])  # (B, 4 positions, 2 channels)
    e = lora.embedding(idx, tree["emb"])
    return jnp.mean((h + e - 1.0) ** 2) + jnp.mean(jnp.tanh(c) ** 2)


@pytest.mark.usefixtures("optax_promotion")  # steps optax.adam
def test_frozen_leaves_unchanged_after_100_steps_and_hold_no_state():
    params = _params()
    spec = _spec(params)
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(1)), spec)
    opt = lora.wrap_optimizer(optax.adam(1e-2), spec)
    state = opt.init(tree)
    frozen, trainable = lora.split_trainable(tree, spec)
    n_trainable = sum(a.size for a in jax.tree.leaves(trainable))
    state_sizes = [a.size for a in jax.tree.leaves(state)]
    # Adam: mu and nu for every trainable element, one step count; nothing for frozen leaves
    assert sum(state_sizes) == 2 * n_trainable + 1
    # no moment buffer shaped like a frozen leaf ((6, 5), (3, 2, 4), (7, 5), (5,) bias)
    frozen_only = {a.shape for a in jax.tree.leaves(frozen)} - {a.shape for a in jax.tree.leaves(trainable)}
    assert frozen_only == {(6, 5), (3, 2, 4), (7, 5)}
    assert not frozen_only & {a.shape for a in jax.tree.leaves(state)}

    @jax.jit
    def step(tree, state, x, idx):
        grads = jax.grad(_loss)(tree, x, idx)
        updates, state = opt.update(grads, state, tree)
        return optax.apply_updates(tree, updates), state, _loss(tree, x, idx)

    losses = []
    for i in range(100):
        x = jax.random.normal(jax.random.PRNGKey(i), (4, 6))
        tree, state, loss = step(tree, state, x, jnp.arange(4) % 7)
        losses.append(float(loss))
    new_frozen, new_trainable = lora.split_trainable(tree, spec)
    jax.tree.map(np.testing.assert_array_equal, new_frozen, frozen)  # bitwise unchanged
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_trainable, trainable)
    assert min(jax.tree.leaves(moved)) > 0  # every trainable leaf moved
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_wrap_optimizer_on_the_adapter_tree_and_bad_arguments():
    params = _params()
    spec = _spec(params)
    lp = lora.init_lora(params, spec, jax.random.PRNGKey(1))
    opt = lora.wrap_optimizer(optax.sgd(0.1), spec)
    grads = jax.tree.map(jnp.ones_like, lp)
    updates, _ = opt.update(grads, opt.init(lp), lp)
    assert float(updates["dense"]["w"].b.max()) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="'tx'"):
        lora.wrap_optimizer(lambda g: g, spec)
    with pytest.raises(ValueError, match="spec leaf"):
        lora.wrap_optimizer(optax.sgd(0.1), {"w": 0})
    with pytest.raises(ValueError, match="structure of 'spec'"):
        lora.wrap_optimizer(optax.sgd(0.1), spec).init({"other": jnp.ones(3)})


def test_adapter_only_checkpoint_round_trips_through_orbax(tmp_path):
    params = _params()
    spec = _spec(params)
    tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(1), init="gaussian"), spec)
    _, trainable = lora.split_trainable(tree, spec)
    trainable = jax.tree.map(lambda a: a + 0.5, trainable)  # "trained"
    path = tmp_path / "adapter"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, trainable)
        ckptr.wait_until_finished()
    # only the adapter is on disk: no base weight
    on_disk = jax.tree.leaves(ocp.StandardCheckpointer().metadata(path).item_metadata.tree)
    assert sorted(m.shape for m in on_disk) == sorted(a.shape for a in jax.tree.leaves(trainable))
    # a fresh process: base weights + a template adapter (another key) to restore into
    template = lora.init_lora(params, spec, jax.random.PRNGKey(99))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, template))
    again = lora.join(params, restored, spec)
    assert jax.tree.structure(again) == jax.tree.structure(tree)
    jax.tree.map(np.testing.assert_array_equal, lora.split_trainable(again, spec)[1], trainable)
    assert restored["dense"]["w"].scale == tree["dense"]["w"].factors.scale
    np.testing.assert_array_equal(lora.merge(params, restored, spec)["dense"]["w"],
                                  lora.merge(params, trainable, spec)["dense"]["w"])
