"""Bad inputs name the culprit at the boundary: a wrong input dtype names ``x`` and the
allowed dtype; a wrong example shape in ``dt.compile`` is one line with what was
expected and what was given (not a module repr)."""

import brainstate
import jax.numpy as jnp
import pytest

import disttrace as dt

B = 2


def _net():
    return brainstate.nn.Sequential(dt.nn.LIFLayer(3, 4, recurrent=True), dt.nn.LeakyRateReadout(4, 2))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.float16])
@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL, dt.BPTT])
def test_wrong_input_dtype_names_x(dtype, algo):
    learner = dt.compile(_net(), algo, jnp.zeros((B, 3)), batch_size=B)
    xs = jnp.zeros((4, B, 3), dtype)
    with pytest.raises(TypeError, match=r"argument 'x' must have dtype float32 \(as compiled\); got " + jnp.dtype(dtype).name):
        learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x)))
    with pytest.raises(TypeError, match="argument 'x' must have dtype float32"):
        learner(xs[0])


def test_wrong_example_shape_in_compile_is_one_line():
    # brainstate wraps an error raised inside a cell in a BrainStateError carrying the module repr
    net = brainstate.nn.Sequential(dt.nn.GRUCell(3, 4), dt.nn.LeakyRateReadout(4, 2))
    with pytest.raises(ValueError) as info:
        dt.compile(net, dt.D_RTRL, jnp.zeros((B, 5)), batch_size=B)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    assert "float32[2, 5]" in msg and "(B, 3)" in msg and "got (2, 5)" in msg


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL, dt.BPTT, dt.RTRL])
def test_non_scalar_loss_is_refused_by_every_learner(algo):
    learner = dt.compile(_net(), algo, jnp.zeros((B, 3)), batch_size=B)
    with pytest.raises(ValueError, match=r"step_fn must return a scalar loss; got shape \(2, 2\)"):
        learner.etrace_grad(jnp.zeros((4, B, 3)), step_fn=lambda x: learner(x))
