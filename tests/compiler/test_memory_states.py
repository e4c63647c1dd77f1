"""Memory the compiler cannot see is refused (issue 13).

A model may carry values across steps only in its ``HiddenState``s (traced) or in other
``State``s whose old value does not feed the loss. A ``ShortTermState`` (or any other
non-hidden ``State``) that carries memory *and* feeds the output or a hidden state would
have its gradient silently dropped (measured ~72% off BPTT), and a Python attribute
replaced by a traced value during tracing is memory outside every state, left holding a
leaked tracer: both are a ``CompilationError`` naming the path. Running statistics, step
counters and the RNG key stay allowed.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.compiler import DiagnosticKind, compile_etrace_graph
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

B, N_IN, N = 2, 3, 4


class ShortTermMemory(brainstate.nn.Module):
    """A leaky hidden state plus a memory kept in a ``ShortTermState`` (``where`` it is read)."""

    def __init__(self, where="out"):
        super().__init__()
        self.where = where
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(0), (N_IN, N)))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))
        self.m = brainstate.ShortTermState(jnp.zeros((batch_size, N)))

    def update(self, x):
        h = 0.8 * self.h.value + jnp.tanh(dt.ops.matmul(x, self.w.value))
        if self.where == "hidden":  # the memory feeds the next hidden value
            h = h + 0.5 * self.m.value
        self.h.value = h
        m_old = self.m.value
        self.m.value = 0.9 * m_old + h
        return h + m_old if self.where == "out" else h


@pytest.mark.parametrize("where", ["out", "hidden"])
def test_short_term_memory_feeding_the_loss_is_refused(where):
    model = _init(ShortTermMemory(where))
    with pytest.raises(dt.CompilationError) as info:
        compile_etrace_graph(model, jnp.zeros((B, N_IN)))
    assert info.value.kind == "aux_state_memory"
    assert info.value.path == "m"
    assert "ShortTermState" in str(info.value) and "HiddenState" in str(info.value)


def test_short_term_memory_is_refused_by_compile():
    with pytest.raises(dt.CompilationError) as info:
        dt.compile(ShortTermMemory(), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert (info.value.kind, info.value.path) == ("aux_state_memory", "m")


class Relay(brainstate.nn.Module):
    """Memory passed through a second state before it reaches the output: ``a`` carries
    itself and feeds ``b``, whose old value is the output."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((N_IN, N)) * 0.1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))
        self.a = brainstate.ShortTermState(jnp.zeros((batch_size, N)))
        self.b = brainstate.ShortTermState(jnp.zeros((batch_size, N)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + dt.ops.matmul(x, self.w.value)
        out = self.h.value + self.b.value
        self.b.value = self.a.value
        self.a.value = 0.5 * self.a.value + self.h.value
        return out


def test_memory_reaching_the_loss_through_another_state_is_refused():
    with pytest.raises(dt.CompilationError) as info:
        compile_etrace_graph(_init(Relay()), jnp.zeros((B, N_IN)))
    assert (info.value.kind, info.value.path) == ("aux_state_memory", "a")


class AttributeMemory(brainstate.nn.Module):
    """Keeps the last hidden value in a plain Python attribute and reads it next step."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((N_IN, N)) * 0.1)
        self.last_v = jnp.zeros((B, N))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + dt.ops.matmul(x, self.w.value)
        out = self.h.value + self.last_v
        self.last_v = self.h.value
        return out


def test_attribute_memory_is_refused_with_its_path_and_restored():
    model = brainstate.nn.Sequential(AttributeMemory(), dt.nn.LeakyRateReadout(N, 2, tau=0))
    original = model.layers[0].last_v
    brainstate.nn.init_all_states(model, batch_size=B)
    with pytest.raises(dt.CompilationError) as info:
        compile_etrace_graph(model, jnp.zeros((B, N_IN)))
    assert info.value.kind == "leaked_tracer_attribute"
    assert info.value.path == "layers.0.last_v"
    assert model.layers[0].last_v is original  # not left holding the leaked tracer


def test_attribute_leak_is_undone_under_jit_of_the_pure_step():
    model = _init(AttributeMemory())
    original = model.last_v
    binding = dt.compiler.ModuleBinding.of(model)
    with pytest.raises(dt.CompilationError) as info:
        jax.jit(binding.pure())(*binding.values(), jnp.zeros((B, N_IN)))
    assert (info.value.kind, info.value.path) == ("leaked_tracer_attribute", "last_v")
    assert model.last_v is original


class NewAttribute(AttributeMemory):
    """Creates the attribute during the step instead of in ``__init__``."""

    def __init__(self):
        super().__init__()
        del self.last_v

    def update(self, x):
        self.h.value = 0.8 * self.h.value + dt.ops.matmul(x, self.w.value)
        self.cache = [self.h.value]
        return self.h.value


def test_attribute_created_during_tracing_is_refused_and_removed():
    model = _init(NewAttribute())
    with pytest.raises(dt.CompilationError) as info:
        dt.compile(model, dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert (info.value.kind, info.value.path) == ("leaked_tracer_attribute", "cache")
    assert not hasattr(model, "cache")


class Normed(brainstate.nn.Module):
    """LIF -> batch norm (running statistics in a ``BatchState``, fit mode) -> readout."""

    def __init__(self):
        super().__init__()
        self.lif = dt.nn.LIFLayer(N_IN, N)
        self.bn = dt.nn.BatchNorm1d((1, N))
        self.out = dt.nn.LeakyRateReadout(N, 2, tau=0)

    def update(self, x):
        return self.out(self.bn(self.lif(x)[:, None, :])[:, 0, :])


def test_batchnorm_running_statistics_still_compile():
    graph = dt.compile(Normed(), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B).graph
    written = sorted(r.path for r in graph.records if r.kind is DiagnosticKind.AUX_STATE_WRITTEN)
    assert written == ["bn.running_mean", "bn.running_var"]


class Clocked(brainstate.nn.Module):
    """A step counter that drives the output (a time-dependent gain) and an input-only
    running mean subtracted from the input: memory whose evolution does not depend on the
    parameters or the hidden states, so no gradient flows through it."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(4), (N_IN, N)))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))
        self.t = brainstate.ShortTermState(jnp.zeros((), brainstate.environ.dftype()))
        self.mu = brainstate.ShortTermState(jnp.zeros((N_IN,), brainstate.environ.dftype()))

    def update(self, x):
        x_c = x - self.mu.value
        self.mu.value = 0.9 * self.mu.value + 0.1 * jnp.mean(x, axis=0)
        self.h.value = 0.8 * self.h.value + jnp.tanh(dt.ops.matmul(x_c, self.w.value))
        gain = 1.0 + jnp.sin(self.t.value)
        self.t.value = self.t.value + 1.0
        return gain * self.h.value


def test_memory_independent_of_parameters_is_allowed_and_exact(x64):
    graph = compile_etrace_graph(_init(Clocked()), jnp.zeros((B, N_IN)))
    written = sorted(r.path for r in graph.records if r.kind is DiagnosticKind.AUX_STATE_WRITTEN)
    assert written == ["mu", "t"]
    xs = jax.random.normal(jax.random.PRNGKey(5), (9, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(6), (9, B, N))
    ref = gradients(Clocked, dt.BPTT, xs, ys)
    got = gradients(Clocked, dt.D_RTRL, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_the_same_memory_in_a_hidden_state_is_exact(x64):
    """The fix the error message gives: as a ``HiddenState`` the memory is traced and
    D-RTRL equals BPTT."""
    xs = jax.random.normal(jax.random.PRNGKey(7), (9, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(8), (9, B, N))
    ref = gradients(HiddenMemory, dt.BPTT, xs, ys)
    got = gradients(HiddenMemory, dt.D_RTRL, xs, ys)
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


class HiddenMemory(ShortTermMemory):
    """:class:`ShortTermMemory` with its memory in a ``HiddenState``: compiles and is exact."""

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))
        self.m = brainstate.HiddenState(jnp.zeros((batch_size, N)))


def _init(model):
    brainstate.nn.init_all_states(model, batch_size=B)
    return model
