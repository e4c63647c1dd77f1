"""The README idiom ``etrace_grad(xs, ys, step_fn=lambda x, y: ...)`` makes a new lambda
every call: it must compile once, not once per call, and memory must stay flat."""

import functools
import resource
import warnings

import jax
import jax.numpy as jnp
import pytest

import disttrace as dt
from disttrace.algorithms._fn_cache import JitCache, function_key
from tests.algorithms.models import APPROX, N_IN, N_OUT

B, T = 2, 6


class _CompileCounter:
    """Counts XLA backend compilations through ``jax.monitoring`` while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if self.active and "backend_compile" in event:
            self.count += 1


_COUNTER = _CompileCounter()


def loss_fn(out, y):
    return jnp.mean((out - y) ** 2)


def _setup(algo):
    learner = dt.compile(APPROX["rec_lif"](), algo, jnp.zeros((B, N_IN)), batch_size=B)
    xs = jax.random.normal(jax.random.PRNGKey(0), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_OUT))
    return learner, xs, ys


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("algo", [dt.D_RTRL, dt.ES_D_RTRL, dt.BPTT])
def test_fresh_lambdas_compile_once(algo):
    learner, xs, ys = _setup(algo)
    _COUNTER.count, _COUNTER.active = 0, True
    try:
        rss = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no retrace warning either
            for i in range(20):
                # the README idiom: a new lambda object on every call (one source line)
                grads = learner.etrace_grad(xs, ys, step_fn=lambda x, y: loss_fn(learner(x), y))
                jax.block_until_ready(grads)
                rss.append(_rss_mib())
                if i == 0:
                    assert _COUNTER.count >= 1  # the counter sees the first call's compilation
                    _COUNTER.count = 0
    finally:
        _COUNTER.active = False
    assert _COUNTER.count == 0, f"{_COUNTER.count} compilations in 19 calls with fresh lambdas after the first"
    assert len(learner._jitted) <= 2  # the etrace entry (and nothing per call)
    # peak RSS flat after the first calls (a leak of one compiled function per call is MiBs)
    assert rss[-1] - rss[4] < 20, rss


def test_a_changed_closure_value_compiles_again():
    learner, xs, ys = _setup(dt.D_RTRL)

    def make(scale):
        return lambda x, y: scale * loss_fn(learner(x), y)

    g1 = learner.etrace_grad(xs, ys, step_fn=make(1.0))
    learner.reset_state()
    g2 = learner.etrace_grad(xs, ys, step_fn=make(2.0))
    for path in g1:
        assert jnp.allclose(2.0 * g1[path], g2[path], rtol=1e-5, atol=1e-7)


def test_function_key_rules():
    a = jnp.zeros(3)
    f = lambda x: x + 1
    same = [lambda x, s=2.0: x * s for _ in range(2)]
    assert function_key(same[0]) == function_key(same[1])
    closures = [(lambda v: (lambda x: x + v))(a) for _ in range(2)]
    assert function_key(closures[0]) == function_key(closures[1])  # same array object
    other = (lambda v: (lambda x: x + v))(jnp.zeros(3))
    assert function_key(other) != function_key(closures[0])  # another array: another key
    assert function_key(functools.partial(f, 1)) == function_key(functools.partial(f, 1))
    assert function_key(functools.partial(f, 1)) != function_key(functools.partial(f, 2))


def test_cache_is_bounded_and_warns_on_runaway_retracing():
    cache = JitCache(max_size=3, warn_after=4)
    for i in range(3):
        cache.get(("k", i), lambda: object())
    assert len(cache) == 3
    with pytest.warns(UserWarning, match="compiled for 4 different functions"):
        cache.get(("k", 3), lambda: object())
    assert len(cache) == 3  # the least recently used entry was dropped
