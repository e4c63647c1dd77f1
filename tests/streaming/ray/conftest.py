"""One local Ray cluster for the whole test session (started on first use, shut down at
the end), with the environment the Ray pass of CI exports, set before ray is imported:
no token auth, loopback binding, no usage stats."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import warnings  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """A fresh local cluster of 2 CPUs on 127.0.0.1; never ``ray stop`` (it would stop every
    Ray process on the machine): only this cluster is shut down."""
    import ray

    assert not ray.is_initialized(), "a Ray connection already exists in this test process"
    with warnings.catch_warnings():
        # ray.init forks helper processes once, in this process where JAX already runs; the
        # child only execs Ray's binaries, so JAX's warning about forking its threads does
        # not apply (and the suite turns warnings into errors)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()
