"""The graphs compile_etrace_graph builds for a few typical models, field by field: hidden
groups, trace ops (rule, key, groups, feeds), records, parameter kinds, trace keys, bypass
sets and op statics. The expectations were recorded from the compiler before it was
split into phases (issue 10, step 3) and must not drift."""

import brainstate
import jax.numpy as jnp
import pytest

import disttrace as dt
from disttrace.compiler import bypass_groups, bypass_ops, path_str
from tests.algorithms import models as am
from tests.algorithms.test_op_exactness import Leaky
from tests.compiler.test_aux_states import WithAux
from tests.compiler.test_bypass import _stacked


def _lstm():
    return am.Stack(dt.nn.LSTMCell(3, 5), dt.nn.LeakyRateReadout(5, 2, tau=0))


MODELS = {
    "alif": (am.EXACT["alif"], (2, 3)),
    "gru": (am.APPROX["gru"], (2, 3)),
    "aux": (WithAux, (2, 3)),
    "conv": (lambda: Leaky("conv"), (2, 4)),
    "stacked": (_stacked, (2, 3)),
    "lstm": (_lstm, (2, 3)),
}

EXPECTED = {
    "alif": {
        "groups": [("layers.0.V", (0, 1), (2, 6))],
        "ops": [("matmul", "layers.0.weight", (0,), (1,)), ("matmul", "layers.1.weight", (), ())],
        "records": [("non_temporal_param", "layers.1.weight")],
        "kinds": {"layers.0.weight": "trace", "layers.1.weight": "direct"},
        "traces": ["layers.0.weight->layers.0.V"],
        "bypass": ([], []),
        "static": [(), ()],
    },
    "gru": {
        "groups": [("layers.0.h", (0,), (2, 6))],
        "ops": [
            ("matmul_bias", "layers.0.Wrz.weight", (), (2,)),
            ("matmul_bias", "layers.0.Wrz.weight#1", (0,), (3,)),
            ("matmul_bias", "layers.0.Wh.weight", (0,), (3,)),
            ("matmul", "layers.1.weight", (), ()),
        ],
        "records": [("same_step_only", "layers.0.Wrz.weight"), ("non_temporal_param", "layers.1.weight")],
        "kinds": {"layers.0.Wh.weight": "trace", "layers.0.Wrz.weight": "trace", "layers.1.weight": "direct"},
        "traces": ["layers.0.Wrz.weight#1->layers.0.h", "layers.0.Wh.weight->layers.0.h"],
        "bypass": ([], []),
        "static": [(), (), (), ()],
    },
    "aux": {
        "groups": [("h", (0,), (2, 4))],
        "ops": [("matmul", "", (), ()), ("matmul", "w", (0,), ())],
        "records": [("constant_op", "op0"), ("aux_state_written", "count")],
        "kinds": {"w": "trace"},
        "traces": ["w->h"],
        "bypass": ([], []),
        "static": [(), ()],
    },
    "conv": {
        "groups": [("h", (0,), (2, 3, 2))],
        "ops": [("conv", "w", (0,), (1,)), ("matmul", "ro", (), ())],
        "records": [("non_temporal_param", "ro")],
        "kinds": {"ro": "direct", "w": "trace"},
        "traces": ["w->h"],
        "bypass": ([], []),
        "static": [((1,), ((1, 1),), (1,), (1,), 1), ()],  # strides, padding, lhs / rhs dilation, groups
    },
    "stacked": {
        "groups": [("layers.0.V", (0,), (2, 4)), ("layers.1.r", (1,), (2, 2))],
        "ops": [("matmul", "layers.0.w", (0,), ()), ("matmul", "layers.1.weight", (1,), ())],
        "records": [],
        "kinds": {"layers.0.w": "trace", "layers.1.weight": "trace"},
        "traces": ["layers.0.w->layers.0.V", "layers.1.weight->layers.1.r"],
        "bypass": ([0], []),
        "static": [(), ()],
    },
    "lstm": {
        "groups": [("layers.0.c", (0, 1), (2, 5))],
        "ops": [
            ("matmul_bias", "layers.0.W.weight", (0,), (4,)),
            ("matmul_bias", "layers.0.W.weight#1", (0,), (4,)),
            ("matmul_bias", "layers.0.W.weight#2", (0,), (4,)),
            ("matmul_bias", "layers.0.W.weight#3", (0,), (4,)),
            ("matmul", "layers.1.weight", (), ()),
        ],
        "records": [("non_temporal_param", "layers.1.weight")],
        "kinds": {"layers.0.W.weight": "trace", "layers.1.weight": "direct"},
        "traces": [
            "layers.0.W.weight->layers.0.c",
            "layers.0.W.weight#1->layers.0.c",
            "layers.0.W.weight#2->layers.0.c",
            "layers.0.W.weight#3->layers.0.c",
        ],
        "bypass": ([], []),
        "static": [(), (), (), (), ()],
    },
}


def _summary(graph) -> dict:
    return {
        "groups": [(g.name, g.members, g.shape) for g in graph.groups],
        "ops": [(op.name, op.key, op.groups, op.feeds_ops) for op in graph.ops],
        "records": [(r.kind.value, r.path) for r in graph.records],
        "kinds": {path_str(p): k for p, k in graph.param_kinds.items()},
        "traces": [graph.trace_key(op, g) for op in graph.ops for g in op.groups],
        "bypass": (sorted(bypass_groups(graph)), sorted(bypass_ops(graph))),
        "static": [op.rule.static for op in graph.ops],
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_graph_structure_is_unchanged(name):
    make, x_shape = MODELS[name]
    brainstate.random.seed(0)
    model = make()
    brainstate.nn.init_all_states(model, batch_size=x_shape[0])
    graph = dt.compile_etrace_graph(model, jnp.ones(x_shape), warn=False)
    assert _summary(graph) == EXPECTED[name]
    # every op node is consistent with the jaxpr equation it stands for
    eqns = graph.jaxpr.jaxpr.eqns
    for op in graph.ops:
        eqn = eqns[op.eqn_index]
        assert eqn.params["name"] == "dt__" + op.name
        assert tuple(op.out.shape) == tuple(eqn.outvars[0].aval.shape)
        assert [tuple(s.shape) for s in op.operands] == [tuple(v.aval.shape) for v in eqn.invars]
