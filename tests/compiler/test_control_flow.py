"""Control flow inside a model step (issue #15 item 6): ``cond``/``switch`` are converted to
``select_n``, fixed-length scans and static-trip while loops are unrolled, so the trace ops
and hidden states inside them are found; D-RTRL then equals BPTT on exact models (leaky
element-wise units driven by ``dt.ops.matmul``, no recurrence between neurons), and both
equal a forward-mode gradient of the original, un-rewritten step. A while loop that cannot
be unrolled is refused with ``NotSupportedError`` naming the primitive, the state and why."""

import dataclasses

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.checks import ArgumentTypeError
from disttrace.compiler import ControlFlowPolicy, DiagnosticKind, ModuleBinding, compile_etrace_graph
from disttrace.compiler import _jax_compat as jc
from disttrace.errors import CompilationError, NotSupportedError
from disttrace.testing import EXACT_F64_ATOL, flat, gradients

T, B, N_IN, N = 8, 2, 3, 4


class _Net(brainstate.nn.Module):
    """A leaky layer whose one step runs its update through the control flow ``flow``."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow
        self.w = brainstate.ParamState(0.5 * jax.random.normal(jax.random.PRNGKey(7), (N_IN, N)))
        self.w2 = brainstate.ParamState(0.5 * jax.random.normal(jax.random.PRNGKey(9), (N_IN, N)))
        self.ro = brainstate.ParamState(jax.random.normal(jax.random.PRNGKey(8), (N, 2)))

    def init_state(self, batch_size=None, **kw):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

    def drive(self, x):
        return jnp.tanh(dt.ops.matmul(x, self.w.value))

    def update(self, x):
        h, out_h = self.h.value, None
        if self.flow == "cond":  # predicate from the data: both branches are taken over the sequence
            h = jax.lax.cond(
                jnp.sum(x) > 0,
                lambda h: 0.8 * h + self.drive(x),
                lambda h: 0.5 * h + dt.ops.matmul(x, self.w2.value),
                h,
            )
        elif self.flow == "brainstate_cond":  # brainstate's cond writing the hidden state in its branches
            def fast():
                self.h.value = 0.8 * self.h.value + self.drive(x)

            def slow():
                self.h.value = 0.5 * self.h.value + dt.ops.matmul(x, self.w2.value)

            brainstate.transform.cond(jnp.sum(x) > 0, fast, slow)
            h = self.h.value
        elif self.flow == "cond_on_hidden":  # predicate read from the hidden state (no gradient)
            h = jax.lax.cond(jnp.mean(h) > 0.05, lambda h: 0.9 * h, lambda h: 0.6 * h, h) + self.drive(x)
        elif self.flow == "switch":
            k = jnp.argmax(jnp.sum(x, 0))  # 0, 1 or 2, from the data
            branches = [
                lambda h: 0.8 * h + self.drive(x),
                lambda h: 0.5 * h,
                lambda h: 0.9 * h + jax.nn.sigmoid(dt.ops.matmul(x, self.w2.value)),
            ]
            h = jax.lax.switch(k, branches, h)
        elif self.flow == "scan":  # an inner loop over 3 sub-steps of the input
            subs = jnp.stack([x, x * x, -x])

            def sub_step(h, x_s):
                h = 0.7 * h + jnp.tanh(dt.ops.matmul(x_s, self.w.value))
                return h, h

            h, hs = jax.lax.scan(sub_step, h, subs)
            out_h = h + 0.1 * jnp.mean(hs, 0)  # the stacked sub-step values reach the output
        elif self.flow == "fori":  # lax.fori_loop with static bounds lowers to scan
            h = jax.lax.fori_loop(0, 3, lambda i, v: 0.6 * v + self.drive(x), h)
        elif self.flow == "for_loop":  # brainstate's loop writing the hidden state inside
            def sub_step(scale):
                self.h.value = 0.7 * self.h.value + scale * self.drive(x)

            brainstate.transform.for_loop(sub_step, jnp.array([1.0, 0.5]))
            h = self.h.value
        elif self.flow == "cond_in_scan":  # a cond on the counter (static) and one on data inside
            def sub_step(i, v):
                v = jax.lax.cond(i == 0, lambda v: v + self.drive(x), lambda v: 0.9 * v, v)
                return jax.lax.cond(jnp.sum(x) > 0, lambda v: 0.8 * v, lambda v: v - 0.1 * v * v, v)

            h = jax.lax.fori_loop(0, 2, sub_step, h)
        elif self.flow == "while":  # static trip count: a counter from 0 to 3
            body = lambda c: (c[0] + 1, 0.5 * c[1] + self.drive(x))
            h = jax.lax.while_loop(lambda c: c[0] < 3, body, (0, h))[1]
        elif self.flow == "while_dynamic":  # trip count depends on the hidden state
            h = jax.lax.while_loop(lambda v: jnp.max(v) < 1.0, lambda v: 0.5 * v + 1.0 + self.drive(x), h)
        elif self.flow == "while_on_input":  # data-dependent, but carries no state or parameter
            body = lambda c: (c[0] + 1.0, c[1] * 2.0 + 0.1)
            n = jax.lax.while_loop(lambda c: c[1] < 2.0, body, (0.0, jnp.abs(x[0, 0])))[0]
            h = 0.8 * h + self.drive(x) * (1.0 + 0.0 * n)
        self.h.value = h
        return dt.ops.matmul(h if out_h is None else out_h, self.ro.value)


EXACT_FLOWS = ["cond", "brainstate_cond", "cond_on_hidden", "switch", "scan", "fori", "for_loop", "cond_in_scan", "while"]


def _data():
    xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, N_IN))
    ys = jax.random.normal(jax.random.PRNGKey(3), (T, B, 2))
    return xs, ys


def _graph(flow, **kw):
    net = _Net(flow)
    brainstate.nn.init_all_states(net, batch_size=B)
    return compile_etrace_graph(net, jnp.zeros((B, N_IN)), **kw)


def _forward_mode_reference(flow, xs, ys):
    """d(mean over t of the step MSE)/dθ through the *original* step (its cond, scan and
    while as written, no compiler rewrite), in forward mode (a while loop has no reverse mode)."""
    net = _Net(flow)
    brainstate.nn.init_all_states(net, batch_size=B)
    binding = ModuleBinding.of(net)
    params, hidden, aux = binding.values()
    pure = binding.pure()

    def loss(params):
        h, a, total = hidden, aux, 0.0
        for t in range(T):
            out, h, a = pure(params, h, a, xs[t])
            total = total + jnp.mean((out - ys[t]) ** 2)
        return total / T

    return jax.jacfwd(loss)(params)


@pytest.mark.parametrize("flow", EXACT_FLOWS)
def test_d_rtrl_equals_bptt_through_control_flow(x64, flow):
    xs, ys = _data()
    ref = gradients(lambda: _Net(flow), dt.BPTT, xs, ys)
    got = gradients(lambda: _Net(flow), dt.D_RTRL, xs, ys)
    assert np.abs(flat(ref)).max() > 1e-3
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)
    # and the rewritten step computes the original step's gradient
    original = _forward_mode_reference(flow, xs, ys)
    np.testing.assert_allclose(flat(ref), flat(original), rtol=0, atol=EXACT_F64_ATOL)


@pytest.mark.parametrize("flow", ["cond", "scan"])
def test_chunked_d_rtrl_equals_bptt_through_control_flow(x64, flow):
    xs, ys = _data()
    ref = gradients(lambda: _Net(flow), dt.BPTT, xs, ys)
    got = gradients(lambda: _Net(flow), dt.D_RTRL, xs, ys, chunk_size=3)  # chunks 3, 3 and a tail of 2
    np.testing.assert_allclose(flat(got), flat(ref), rtol=0, atol=EXACT_F64_ATOL)


def test_cond_branches_are_both_taken_by_the_data(x64):
    # the exactness test above would not see a wrong branch if only one were ever taken
    xs, _ = _data()
    signs = {bool(jnp.sum(xs[t]) > 0) for t in range(T)}
    assert signs == {True, False}
    picks = {int(jnp.argmax(jnp.sum(xs[t], 0))) for t in range(T)}
    assert len(picks) >= 2


@pytest.mark.parametrize(
    "flow,kind,ops",
    [
        ("cond", DiagnosticKind.COND_CONVERTED, ["w2", "w"]),
        ("switch", DiagnosticKind.COND_CONVERTED, ["w", "w2"]),
        ("scan", DiagnosticKind.SCAN_UNROLLED, ["w", "w#1", "w#2"]),
        ("while", DiagnosticKind.WHILE_UNROLLED, ["w", "w#1", "w#2"]),
    ],
)
def test_ops_and_hidden_groups_are_found_inside(flow, kind, ops):
    graph = _graph(flow)
    assert [op.key for op in graph.ops if op.groups] == ops
    assert all(op.groups == (0,) for op in graph.ops if op.weight_params != (("ro",),))
    assert [g.members for g in graph.groups] == [(0,)]
    assert [r.path for r in graph.records if r.kind is kind] == ["h"]
    assert not any(jc.is_loop(e) for e in jc.eqns(graph.jaxpr))  # nothing left opaque


def test_static_cond_index_keeps_only_its_branch():
    # inside the unrolled loop the counter is a constant: cond(i == 0, ...) is resolved at
    # compile time, only the data-dependent cond becomes a select
    graph = _graph("cond_in_scan")
    converted = [r for r in graph.records if r.kind is DiagnosticKind.COND_CONVERTED]
    assert len(converted) == 1
    assert len(graph.ops) == 2  # one drive (iteration 0) and the readout


def test_data_dependent_while_is_refused():
    with pytest.raises(NotSupportedError) as info:
        _graph("while_dynamic")
    err = info.value
    assert isinstance(err, CompilationError)
    assert err.kind == "while_dynamic_trip_count"
    assert err.primitive == "while" and err.path == "h"
    assert "hidden state 'h'" in str(err) and "depends on data" in str(err)


def test_data_dependent_while_is_refused_by_compile():
    with pytest.raises(NotSupportedError) as info:
        dt.compile(_Net("while_dynamic"), dt.D_RTRL, jnp.zeros((B, N_IN)), batch_size=B)
    assert info.value.kind == "while_dynamic_trip_count"


def test_while_longer_than_the_limit_is_refused():
    with pytest.raises(NotSupportedError) as info:
        _graph("while", control_flow=ControlFlowPolicy(while_unroll_limit=2))
    assert info.value.kind == "while_trip_count_too_large" and info.value.path == "h"
    assert "while_unroll_limit=2" in str(info.value)
    assert _graph("while", control_flow=ControlFlowPolicy(while_unroll_limit=3)).ops


def test_while_that_carries_no_state_is_left_alone():
    graph = _graph("while_on_input")
    assert sum(jc.is_while(e) for e in jc.eqns(graph.jaxpr)) == 1
    assert not [r for r in graph.records if r.kind is DiagnosticKind.WHILE_UNROLLED]


@pytest.mark.parametrize(
    "flow,policy",
    [("cond", ControlFlowPolicy(cond="opaque")), ("scan", ControlFlowPolicy(scan_unroll_limit=2))],
)
def test_control_flow_left_opaque_is_refused(flow, policy):
    with pytest.raises(NotSupportedError) as info:
        _graph(flow, control_flow=policy)
    assert info.value.kind == "hidden_in_loop" and info.value.primitive in ("cond", "scan")
    assert "ControlFlowPolicy" in str(info.value)


def test_policy_has_braintrace_fields_and_defaults():
    # braintrace 0.2.8's field names in its order; the same defaults where the behaviour is the same
    names = [f.name for f in dataclasses.fields(ControlFlowPolicy)]
    assert names[:6] == [
        "cond", "scan_unroll_limit", "while_hidden", "etp_in_control_flow", "scan_descent", "fixpoint_iteration_limit"
    ]
    policy = ControlFlowPolicy()
    assert (policy.cond, policy.scan_unroll_limit, policy.while_unroll_limit) == ("convert", 16, 16)
    for name, value in [("while_hidden", "opaque-fwd"), ("etp_in_control_flow", "exclude"), ("scan_descent", "auto")]:
        with pytest.raises(NotSupportedError, match=name) as info:
            ControlFlowPolicy(**{name: value})
        assert info.value.kind == "unsupported_option" and isinstance(info.value, NotImplementedError)


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError, match="'cond'.*'opaque'.*got 'select'"):
        ControlFlowPolicy(cond="select")
    with pytest.raises(ArgumentTypeError, match="scan_unroll_limit"):
        ControlFlowPolicy(scan_unroll_limit=True)
    with pytest.raises(ValueError, match="while_unroll_limit"):
        ControlFlowPolicy(while_unroll_limit=-1)
    with pytest.raises(ValueError, match="fixpoint_iteration_limit"):
        ControlFlowPolicy(fixpoint_iteration_limit=0)
    with pytest.raises(ValueError, match="while_hidden"):
        ControlFlowPolicy(while_hidden="ignore")
    with pytest.raises(TypeError, match="control_flow"):
        _graph("cond", control_flow="convert")
