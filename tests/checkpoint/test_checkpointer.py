"""Checkpointer: the whole online state on disk with real Orbax checkpoints. A resumed
stream run equals the uninterrupted one bit for bit, a checkpoint restores onto another
mesh, retention follows the policy, bad input is refused before anything is written,
and a process killed mid-save loses no committed step."""

import json
import os
import subprocess
import sys
import textwrap

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

B, N_IN, N, N_OUT = 8, 4, 16, 2
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _trainer(mesh, algo=dt.D_RTRL, n=N):
    brainstate.random.seed(0)
    net = Stack(dt.nn.ALIFLayer(N_IN, n, recurrent=True, w_scale=3.0), dt.nn.LeakyRateReadout(n, N_OUT, tau=5.0))
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    learner = dt.compile(net, algo, jnp.zeros((B, N_IN)), batch_size=B, loss_fn=mse)
    return dt.train.Trainer(learner, optax.adam(1e-2), (jnp.zeros((B, N_IN)), jnp.zeros((B, N_OUT))), mesh)


def _batch(t):  # the stream: step t's batch depends on t alone, so an offset resumes it
    x = jax.random.normal(jax.random.PRNGKey(t), (B, N_IN))
    return x, jnp.tanh(x[:, :N_OUT])


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL])
@pytest.mark.usefixtures("optax_promotion")  # Adam in the trainer (see tests/conftest.py)
def test_resumed_run_equals_uninterrupted(tmp_path, algo):
    mesh = dd.make_mesh(data=2, model=2, devices=jax.devices()[:4])
    straight = _trainer(mesh, algo)
    for t in range(10):
        straight.step(*_batch(t))

    first = _trainer(mesh, algo)
    with Checkpointer(tmp_path) as ckpt:
        for t in range(6):
            first.step(*_batch(t))
        assert first.save(ckpt, meta={"offset": 6})
    del first  # the "crash": a fresh process builds everything anew

    resumed = _trainer(mesh, algo)
    with Checkpointer(tmp_path) as ckpt:
        meta = resumed.restore(ckpt)
    assert meta == {"offset": 6} and int(resumed.state.step) == 6
    for t in range(meta["offset"], 10):
        resumed.step(*_batch(t))
    # params, optimizer moments, hidden states, traces and ES step count: all identical
    _leaves_equal(resumed.state, straight.state)
    assert int(resumed.state.learner_state.t) == 10


@pytest.mark.usefixtures("optax_promotion")  # Adam in the trainer (see tests/conftest.py)
def test_restores_onto_another_mesh(tmp_path):
    saver = _trainer(dd.make_mesh(data=2, model=2, devices=jax.devices()[:4]))
    for t in range(3):
        saver.step(*_batch(t))
    with Checkpointer(tmp_path) as ckpt:
        saver.save(ckpt)
        for mesh in (dd.make_mesh(data=4, model=1, devices=jax.devices()[4:8]), None):
            other = _trainer(mesh)
            other.restore(ckpt)
            _leaves_equal(other.state, saver.state)
            for got, want in zip(jax.tree.leaves(other.state), jax.tree.leaves(other.rules.state_shardings()),
                                 strict=True):
                assert got.sharding.is_equivalent_to(want, got.ndim)


@pytest.mark.usefixtures("optax_promotion")  # Adam in the trainer (see tests/conftest.py)
def test_restore_target_may_be_a_tree_of_sharded_arrays(tmp_path):
    trainer = _trainer(None)
    trainer.step(*_batch(0))
    with Checkpointer(tmp_path) as ckpt:
        trainer.save(ckpt, meta={"a": [1, 2]})
        ckpt.wait()
        state, meta = ckpt.restore(trainer.state)
    _leaves_equal(state, trainer.state)
    assert meta == {"a": [1, 2]}


def test_retention_and_interval(tmp_path):
    state = {"w": jnp.arange(3.0)}
    with Checkpointer(tmp_path / "keep", max_to_keep=2, async_save=False) as ckpt:
        for s in range(1, 6):
            ckpt.save(s, {"w": state["w"] + s})
        assert ckpt.steps() == [4, 5] and ckpt.latest_step() == 5
        np.testing.assert_array_equal(ckpt.restore({"w": state["w"]})[0]["w"], state["w"] + 5)
    with Checkpointer(tmp_path / "every", save_interval_steps=3, max_to_keep=None) as ckpt:
        saved = [s for s in range(1, 8) if ckpt.save(s, state)]
        assert ckpt.save(8, state, force=True)
        ckpt.wait()
        assert saved == [3, 6] and ckpt.steps() == [3, 6, 8]
    with Checkpointer(tmp_path / "period", max_to_keep=1, keep_period=2) as ckpt:
        for s in range(1, 6):
            ckpt.save(s, state)
        ckpt.wait()
        assert ckpt.steps() == [2, 4, 5]


def test_bad_arguments_name_themselves(tmp_path):
    for kw in ({"max_to_keep": 0}, {"save_interval_steps": None}, {"keep_period": 1.5}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            Checkpointer(tmp_path, **kw)
    state = {"w": jnp.ones(3)}
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            ckpt.restore(state)
        with pytest.raises(ValueError, match="'meta' must be JSON-serialisable"):
            ckpt.save(1, state, meta={"x": object()})
        with pytest.raises(ValueError, match="'step' must be an int >= 0"):
            ckpt.save(-1, state)
        assert ckpt.steps() == []  # nothing written by the refused saves
        ckpt.save(2, state)
        ckpt.wait()
        with pytest.raises(ValueError, match="newer than the latest saved step 2"):
            ckpt.save(2, state)
        with pytest.raises(FileNotFoundError, match=r"has steps \[2\]"):
            ckpt.restore(state, step=7)
        with pytest.raises(ValueError, match="sharding"):
            ckpt.restore({"w": np.ones(3)})


@pytest.mark.usefixtures("optax_promotion")  # Adam in the trainer (see tests/conftest.py)
def test_a_state_of_another_model_is_refused_by_leaf(tmp_path):
    small = _trainer(None)
    with Checkpointer(tmp_path) as ckpt:
        small.save(ckpt)
        ckpt.wait()
        big = _trainer(None, n=2 * N)
        before = big.state
        with pytest.raises(ValueError) as err:
            big.restore(ckpt)
        assert "learner_state.hidden.('layers', 0, 'V'): saved float32[8, 16], target float32[8, 32]" in str(err.value)
        # a trace (its key spells the (weight, hidden group) relation): (B, K, I, O) with K=2, I=N_IN+N
        assert ": saved float32[8, 2, 20, 16], target float32[8, 2, 36, 32]" in str(err.value)
        assert big.state is before  # unchanged


_KILLED_SAVE = textwrap.dedent(
    """
    import os, sys
    import jax.numpy as jnp
    from disttrace.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"w": jnp.full((4,), 1.0)})
    ckpt.wait()
    # a big second state, then die while its asynchronous write is under way
    ckpt.save(2, {"w": jnp.full((4,), 2.0), "big": jnp.ones((64, 1024, 1024))})
    os._exit(17)
    """
)


def test_a_process_killed_mid_save_keeps_the_committed_steps(tmp_path):
    r = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 17, r.stderr[-2000:]
    with Checkpointer(tmp_path) as ckpt:
        steps = ckpt.steps()
        assert steps and steps[0] == 1
        # whatever is listed is complete: the newest listed step restores
        target = {"w": jnp.zeros(4)} if steps[-1] == 1 else {"w": jnp.zeros(4), "big": jnp.zeros((64, 1024, 1024))}
        state, _ = ckpt.restore(target)
        np.testing.assert_array_equal(state["w"], np.full(4, float(steps[-1])))
        ckpt.save(steps[-1] + 1, {"w": jnp.full((4,), 3.0)})  # and training goes on
        ckpt.wait()
        assert ckpt.latest_step() == steps[-1] + 1
    assert json.loads((tmp_path / str(steps[0]) / "meta" / "metadata").read_text()) == {}
