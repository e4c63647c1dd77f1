"""Partition rules: defaults for every leaf role, overrides, validation, the table."""

import functools
import re
from typing import NamedTuple

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

import disttrace as dt
import disttrace.distributed as dd
from tests.distributed import cases

ADAM = optax.adam(1e-3)


@functools.cache
def _learner(net="lif", algo="d_rtrl"):
    return cases.build(net, algo)


def _batch(b=cases.B, n_out=cases.N_OUT):
    return (jax.ShapeDtypeStruct((b, cases.N_IN), jnp.float32), jax.ShapeDtypeStruct((b, n_out), jnp.float32))


def _mesh(data, model):
    return AbstractMesh((data, model), ("data", "model"))


def _trace_paths(rules):
    """The rule paths of the D-RTRL traces, in state order (trace keys are opaque strings)."""
    return [leaf.path for leaf in rules.leaves if leaf.path.startswith("learner_state/traces/")]


def test_defaults_d_rtrl_every_leaf():
    rules = dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch())
    layer_trace, readout_trace = _trace_paths(rules)
    assert rules.specs == {
        "params/layers.0.weight": P(None, "model"),
        "params/readout.weight": P(None, "model"),
        "opt_state/0/count": P(),
        "opt_state/0/mu/layers.0.weight": P(None, "model"),
        "opt_state/0/mu/readout.weight": P(None, "model"),
        "opt_state/0/nu/layers.0.weight": P(None, "model"),
        "opt_state/0/nu/readout.weight": P(None, "model"),
        "learner_state/hidden/layers.0.V": P("data", "model"),
        "learner_state/hidden/readout.r": P("data", "model"),
        layer_trace: P("data", None, None, "model"),  # (B, K, I+N, N)
        readout_trace: P("data", None, None, "model"),  # readout (B, K, N, O)
        "learner_state/t": P(),
        "step/hi": P(),
        "step/lo": P(),
        "rng": P(),
        "nonfinite/skipped/hi": P(),
        "nonfinite/skipped/lo": P(),
        "nonfinite/run": P(),
        "nonfinite/first/hi": P(),
        "nonfinite/first/lo": P(),
        "nonfinite/leaf": P(),
        "x": P("data"),
        "y": P("data"),
    }
    # every leaf of the real state has a rule, in tree order
    state = jax.eval_shape(lambda: dt.train.init_train_state(_learner(), ADAM))
    assert len(rules.leaves) == len(jax.tree.leaves(state)) + 2
    assert rules.leaves[2].source == "default: opt"
    assert rules.leaves[3].source == "follows params/layers.0.weight"
    shapes = {leaf.path: leaf.shape for leaf in rules.leaves}
    assert shapes[layer_trace] == (cases.B, 1, cases.N_IN + cases.N, cases.N)
    assert shapes[readout_trace] == (cases.B, 1, cases.N, cases.N_OUT)
    sources = {leaf.path: leaf.source for leaf in rules.leaves}
    assert sources[layer_trace] == "default: trace" and sources["step/lo"] == "default: count"
    assert sources["rng"] == "default: rng"


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # GRU's reset gate: expected, recorded
def test_defaults_es_d_rtrl():
    rules = dt.train.partition_rules(_learner("gru", "es_d_rtrl"), optax.sgd(0.1), _mesh(2, 4), _batch())
    specs = rules.specs
    roles = {leaf.path: leaf.source for leaf in rules.leaves}
    traces = {p: s for p, s in specs.items() if roles[p] == "default: trace"}
    x_traces = {p: s for p, s in specs.items() if roles[p] == "default: x_trace"}
    assert traces and x_traces
    assert all(p.startswith("learner_state/traces/") for p in [*traces, *x_traces])
    assert set(traces.values()) == {P("data", None, "model")}  # ε^f (B, K, N)
    assert set(x_traces.values()) == {P("data")}  # ε^x (B, I)
    assert specs["learner_state/hidden/cell.h"] == P("data", "model")


def test_defaults_multi_state_groups_and_element_wise():
    """ALIF (a 2-state group: K = 2 is never split) and LeakyRate's element-wise decay."""
    brainstate.random.seed(0)
    net = brainstate.nn.Sequential(dt.nn.ALIFLayer(8, 16, recurrent=True), dt.nn.LeakyRate(16, 8))
    learner = dt.compile(net, dt.D_RTRL, jnp.zeros((8, 8)), batch_size=8, loss_fn=cases.mse)
    rules = dt.train.partition_rules(learner, optax.sgd(0.1), _mesh(2, 4), (jnp.zeros((8, 8)), jnp.zeros((8, 8))))
    for leaf in rules.leaves:
        if leaf.path.startswith("learner_state/traces/"):
            assert leaf.spec[0] == "data" and leaf.spec[-1] == "model" and set(leaf.spec[1:-1]) <= {None}, leaf
    shapes = {leaf.path: leaf.shape for leaf in rules.leaves}
    assert (8, 2, 24, 16) in shapes.values()  # the ALIF trace (B, K=2, I+N, N)
    assert (8, 1, 8) in shapes.values()  # element-wise trace (B, K, N)
    assert rules.specs["params/layers.1.decay"] == P("model")


def test_replicated_params_and_optimizer_follows():
    rules = dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch(), params="replicated")
    for path, spec in rules.specs.items():
        if path.startswith(("params/", "opt_state/")):
            assert spec == P(), path
    assert rules.specs[_trace_paths(rules)[0]] == P("data", None, None, "model")


def test_overrides_param_moves_its_optimizer_state():
    readout_trace = _trace_paths(dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch()))[1]
    rules = dt.train.partition_rules(
        _learner(), ADAM, _mesh(2, 4), _batch(),
        overrides={r"params/readout\..*": P(), re.escape(readout_trace): P("data")},
    )
    specs = rules.specs
    assert specs["params/readout.weight"] == P()
    assert specs["opt_state/0/mu/readout.weight"] == P() == specs["opt_state/0/nu/readout.weight"]
    assert specs["opt_state/0/mu/layers.0.weight"] == P(None, "model")
    assert specs[readout_trace] == P("data")
    sources = {leaf.path: leaf.source for leaf in rules.leaves}
    assert sources["params/readout.weight"] == "override 'params/readout\\\\..*'"
    assert sources["opt_state/0/mu/readout.weight"] == "follows params/readout.weight"
    # first match wins
    rules = dt.train.partition_rules(
        _learner(), ADAM, _mesh(2, 4), _batch(), overrides={r"params/readout\.weight": P(), "params/.*": P(None, None)}
    )
    assert rules.specs["params/readout.weight"] == P()
    assert rules.specs["params/layers.0.weight"] == P(None, None)
    assert {leaf.path: leaf.source for leaf in rules.leaves}["params/readout.weight"].startswith("override 'params/readout")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"params/nothing": P()}, r"overrides' key\(s\) \['params/nothing'\] apply to no leaf"),
        ({"params/.*": P(), r"params/readout\.weight": P()}, r"\['params/readout\\\\.weight'\] apply to no leaf.*earlier key"),
        ({"params/.*": ("data",)}, r"'overrides'\['params/\.\*'\] must be a jax.sharding.PartitionSpec"),
        ({"params/(": P()}, "not a valid regex"),
        ([("params/.*", P())], "must be a mapping"),
        ({3: P()}, "keys must be regex strings"),
    ],
)
def test_override_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch(), overrides=overrides)


def test_indivisible_output_names_path_shape_mesh():
    """n_out = 10 cannot be split 4-way: the error names the leaf, its shape and the mesh."""
    brainstate.random.seed(0)
    learner = dt.compile(dt.nn.SpikingNet(8, 32, 10), dt.D_RTRL, jnp.zeros((16, 8)), batch_size=16)
    with pytest.raises(ValueError) as err:
        dt.train.partition_rules(learner, ADAM, _mesh(2, 4), _batch(n_out=10))
    msg = str(err.value)
    for part in ("'params/readout.weight'", "(32, 10)", "{'data': 2, 'model': 4}", "axis 1 has size 10", "overrides="):
        assert part in msg, (part, msg)
    # the fix the message suggests works
    readout_trace = _trace_paths(dt.train.partition_rules(learner, ADAM, _mesh(1, 1), _batch(n_out=10)))[1]
    rules = dt.train.partition_rules(learner, ADAM, _mesh(2, 4), _batch(n_out=10), overrides={
        r"params/readout\.weight": P(), r"learner_state/hidden/readout\.r|" + re.escape(readout_trace): P("data")})
    assert rules.specs["params/readout.weight"] == P()


def test_indivisible_batch_names_path_shape_mesh():
    brainstate.random.seed(0)
    learner = dt.compile(dt.nn.LIFLayer(8, 32), dt.D_RTRL, jnp.zeros((12, 8)), batch_size=12)
    with pytest.raises(ValueError) as err:
        dt.train.partition_rules(learner, optax.sgd(0.1), _mesh(8, 1), _batch(b=12))
    msg = str(err.value)
    for part in ("'learner_state/hidden/V'", "(12, 32)", "{'data': 8, 'model': 1}", "axis 0 has size 12"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize(
    "spec, match",
    [
        (P("data", None, None, "model", None), "5 entries for 4 axes"),
        (P("batch"), r"unknown mesh axis 'batch'; allowed: \['data', 'model'\]"),
        (P("data", None, "data"), "mesh axis 'data' is used twice"),
        (P(("data", "model")), r"axis 0 has size 16, which mesh axes \('data', 'model'\) \(size 32\)"),
    ],
)
def test_bad_override_specs(spec, match):
    trace = _trace_paths(dt.train.partition_rules(_learner(), ADAM, _mesh(1, 1), _batch()))[0]
    with pytest.raises(ValueError, match=match) as err:
        dt.train.partition_rules(_learner(), ADAM, _mesh(4, 8), _batch(), overrides={re.escape(trace): spec})
    assert repr(trace) in str(err.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"params": "sharded"}, r"'params' must be one of \('model', 'replicated'\); got 'sharded'"),
        ({"mesh": "2x4"}, "'mesh' must be a jax.sharding.Mesh; got str"),
        ({"mesh": AbstractMesh((8,), ("x",))}, r"'mesh' must have axes \('data', 'model'\).*\('x',\)"),
        ({"batch": jnp.zeros((16, 8))}, r"'batch' must be one step's \(x, y\)"),
    ],
)
def test_argument_errors(kwargs, match):
    args = {"mesh": _mesh(2, 4), "batch": _batch()} | kwargs
    params = args.pop("params", "model")
    with pytest.raises(ValueError, match=match):
        dt.train.partition_rules(_learner(), ADAM, args["mesh"], args["batch"], params=params)


def test_table_and_bytes_per_device():
    rules = dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch())
    table = rules.table()
    assert str(rules) == table
    for leaf in rules.leaves:
        assert re.search(rf"^{re.escape(leaf.path)}\s+{re.escape(str(leaf.shape))}\s+\w+\s+{re.escape(str(leaf.spec))}",
                         table, re.M), leaf.path
    trace = next(leaf for leaf in rules.leaves if leaf.path == _trace_paths(rules)[0])
    full = 4 * np.prod(trace.shape)
    assert rules.leaf_bytes_per_device(trace) == full // 8  # B over data=2, N over model=4
    param = next(leaf for leaf in rules.leaves if leaf.path == "params/layers.0.weight")
    assert rules.leaf_bytes_per_device(param) == 4 * (cases.N_IN + cases.N) * cases.N // 4
    assert rules.bytes_per_device() == sum(rules.leaf_bytes_per_device(leaf) for leaf in rules.leaves)
    assert rules.bytes_per_device("learner_state/traces/") < rules.bytes_per_device()
    assert f"total per device: {rules.bytes_per_device() / 2**20:.3f} MiB" in table


def test_state_and_batch_shardings_on_a_device_mesh():
    mesh = dd.make_mesh(4, 2)
    rules = dt.train.partition_rules(_learner(), ADAM, mesh, _batch())
    shardings = rules.state_shardings()
    assert isinstance(shardings, dt.train.TrainState)
    trace = jax.tree.leaves(shardings.learner_state.traces)[0]
    assert trace.spec == P("data", None, None, "model")
    assert trace.mesh == mesh
    x_sh, y_sh = rules.batch_shardings()
    assert x_sh.spec == P("data") and y_sh.spec == P("data")


def test_abstract_rules_cannot_run():
    rules = dt.train.partition_rules(_learner(), ADAM, _mesh(2, 4), _batch())
    for fn, args in ((dt.train.init_train_state, (_learner(), ADAM, rules)), (dt.train.make_train_step, (_learner(), ADAM, rules))):
        with pytest.raises(ValueError, match="'rules' was built on an AbstractMesh"):
            fn(*args)
    with pytest.raises(ValueError, match="'rules' must be a PartitionRules"):
        dd.shard_batch({"x": P()}, jnp.zeros((16, 8)), jnp.zeros((16, 8)))


def test_shard_batch_checks_shapes_and_process_local():
    mesh = dd.make_mesh(8, 1)
    rules = dt.train.partition_rules(_learner(), ADAM, mesh, _batch())
    xs, ys = cases.data()
    with pytest.raises(ValueError, match=r"leaf 'x' must have shape \(16, 8\); got \(8, 8\)"):
        dd.shard_batch(rules, xs[0][:8], ys[0])
    with pytest.raises(ValueError, match="must have the structure"):
        dd.shard_batch(rules, (xs[0],), ys[0])
    x, y = dd.shard_batch(rules, xs[0], ys[0])
    # one process: its local rows are the whole batch
    xl, yl = dd.shard_batch(rules, xs[0], ys[0], process_local=True)
    assert x.sharding == xl.sharding == rules.batch_shardings()[0]
    np.testing.assert_array_equal(np.asarray(xl), xs[0])
    np.testing.assert_array_equal(np.asarray(y), np.asarray(yl))


def test_train_step_needs_loss_fn():
    brainstate.random.seed(0)
    learner = dt.compile(dt.nn.LIFLayer(8, 32), dt.D_RTRL, jnp.zeros((16, 8)), batch_size=16)
    rules = dt.train.partition_rules(learner, ADAM, dd.make_mesh(8, 1), (jnp.zeros((16, 8)), jnp.zeros((16, 32))))
    with pytest.raises(ValueError, match="'learner' has no loss_fn"):
        dt.train.make_train_step(learner, ADAM, rules)


@pytest.mark.filterwarnings("ignore:disttrace.*same-step:UserWarning")  # zcell.W feeds the LIF's op: expected
def test_optimizer_leaf_follows_its_own_param_not_a_suffix_namesake():
    """A top-level param ``weight`` and a nested ``zcell.W/weight`` of the same shape: Adam's
    moments of the nested one follow the nested one (the longest matching key path)."""

    class Cell(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = brainstate.ParamState({"weight": brainstate.random.normal(0.0, 0.3, (32, 32))})

        def update(self, x):
            return dt.ops.matmul(x, self.W.value["weight"])

    class Net(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.zcell = Cell()
            self.lif = dt.nn.LIFLayer(32, 32)
            self.weight = brainstate.ParamState(brainstate.random.normal(0.0, 0.3, (32, 32)))

        def update(self, x):
            return dt.ops.matmul(self.lif(self.zcell(x)), self.weight.value)

    brainstate.random.seed(0)
    learner = dt.compile(Net(), dt.D_RTRL, jnp.zeros((16, 32)), batch_size=16, loss_fn=cases.mse)
    batch = (jnp.zeros((16, 32)), jnp.zeros((16, 32)))
    rules = dt.train.partition_rules(learner, ADAM, _mesh(2, 4), batch, overrides={"params/weight": P()})
    sources = {leaf.path: leaf.source for leaf in rules.leaves}
    assert rules.specs["opt_state/0/mu/weight"] == P()
    assert sources["opt_state/0/mu/zcell.W/weight"] == "follows params/zcell.W/weight"
    assert rules.specs["opt_state/0/mu/zcell.W/weight"] == P(None, "model")


class _Inner(NamedTuple):
    h: object
    n: object
    sharding_roles = {"h": "hidden", "n": "count"}


class _Outer(NamedTuple):
    w: object
    inner: object
    extra: object
    sharding_roles = {"w": "param", "inner": "replicated"}  # inner declares its own; extra is not listed


def test_rules_over_any_pytree_read_roles_from_the_state_types():
    """Roles come from ``sharding_roles`` of each node's type (deeper declarations win, fields
    not listed are replicated), or from ``roles=`` for a root that declares none; no field
    name is special."""
    state = _Outer(jnp.zeros((4, 8)), _Inner(jnp.zeros((16, 8)), jnp.zeros(())), {"hidden": jnp.zeros((16, 8))})
    rules = dd.partition_rules(state, _mesh(2, 4))
    assert rules.specs == {"w": P(None, "model"), "inner/h": P("data", "model"), "inner/n": P(), "extra/hidden": P()}
    assert [leaf.source for leaf in rules.leaves] == [
        "default: param", "default: hidden", "default: count", "default: replicated"]
    assert rules.batch_shardings() == () and rules.batch_specs() == ()
    plain = {"params": {"w": jnp.zeros((4, 8))}, "opt": {"mu": {"w": jnp.zeros((4, 8))}}, "trace": jnp.zeros((16, 2, 8))}
    rules = dd.partition_rules(plain, _mesh(2, 4), roles={"params": "param", "opt": "opt", "trace": "trace"})
    assert rules.specs == {"opt/mu/w": P(None, "model"), "params/w": P(None, "model"), "trace": P("data", None, "model")}
    assert {leaf.path: leaf.source for leaf in rules.leaves}["opt/mu/w"] == "follows params/w"
    assert dd.leaf_roles(state)[0] == (("w",), "param", 1)


def test_unknown_roles_are_errors():
    class Bad(NamedTuple):
        w: object
        sharding_roles = {"w": "weights"}

    with pytest.raises(ValueError, match=r"Bad.sharding_roles\['w'\] must be one of \('param'.*got 'weights'"):
        dd.partition_rules(Bad(jnp.zeros((4, 8))), _mesh(2, 4))
    with pytest.raises(ValueError, match=r"argument 'roles'\['w'\] must be one of"):
        dd.partition_rules({"w": jnp.zeros((4, 8))}, _mesh(2, 4), roles={"w": "weights"})
    with pytest.raises(ValueError, match="argument 'state' must hold arrays"):
        dd.partition_rules({"w": "not an array"}, _mesh(2, 4))
