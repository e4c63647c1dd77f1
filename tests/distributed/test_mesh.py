"""make_mesh and initialize: shapes, axis types and argument errors."""

import jax
import pytest
from jax.sharding import AxisType

import disttrace.distributed as dd


@pytest.mark.parametrize("shape", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_make_mesh_shapes(shape):
    mesh = dd.make_mesh(*shape)
    assert mesh.axis_names == ("data", "model")
    assert dict(mesh.shape) == {"data": shape[0], "model": shape[1]}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


def test_make_mesh_infers_data_and_takes_devices():
    assert dict(dd.make_mesh(model=2).shape) == {"data": 4, "model": 2}
    assert dict(dd.make_mesh().shape) == {"data": 8, "model": 1}
    mesh = dd.make_mesh(2, 1, devices=jax.devices()[:2])
    assert list(mesh.devices.flat) == jax.devices()[:2]


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"data": 4, "model": 4}, ("'data'=4", "'model'=4", "16 devices", "8")),
        ({"data": 3, "model": 1}, ("'data'=3", "8")),
        ({"data": 0, "model": 8}, ("'data'", "positive int", "0")),
        ({"data": 8, "model": 0}, ("'model'", "positive int", "0")),
        ({"data": 8, "model": -1}, ("'model'", "-1")),
        ({"data": True, "model": 8}, ("'data'", "True")),
        ({"data": 2.0, "model": 4}, ("'data'", "2.0")),
        ({"model": 3}, ("'model'=3", "divide", "8")),
    ],
)
def test_make_mesh_errors_name_the_argument(kwargs, names):
    with pytest.raises(ValueError) as err:
        dd.make_mesh(**kwargs)
    for name in names:
        assert name in str(err.value), (name, str(err.value))


def test_make_mesh_device_subset_must_match():
    with pytest.raises(ValueError, match=r"'data'=2 and 'model'=2 give 4 devices, but there are 2"):
        dd.make_mesh(2, 2, devices=jax.devices()[:2])
    with pytest.raises(ValueError, match="'devices' is empty"):
        dd.make_mesh(1, 1, devices=[])


@pytest.mark.parametrize(
    "args, match",
    [
        (("localhost:1", 0, 0), "'num_processes'"),
        (("localhost:1", 2, 2), r"'process_id' must be an int in \[0, 2\); got 2"),
        (("localhost:1", 2, -1), "'process_id'"),
        (("localhost", 2, 0), "'coordinator_address' must be 'host:port'; got 'localhost'"),
    ],
)
def test_initialize_errors(args, match):
    with pytest.raises(ValueError, match=match):
        dd.initialize(*args)


def test_initialize_single_process_is_a_no_op():
    dd.initialize("localhost:1", num_processes=1, process_id=0)
    assert not jax.distributed.is_initialized()
    assert jax.process_count() == 1
