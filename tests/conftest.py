"""Test configuration (STYLE §9): 8 fake CPU devices (set before jax is imported), strict
JAX for the whole suite, and the float64 fixture of the exactness checks.

Strict JAX: ``jax_numpy_dtype_promotion="strict"`` makes every implicit promotion between
two different dtypes (float32 + float64, int32 * float32, ...) an error, so a test fails
where library code silently mixes dtypes instead of computing in a wider type than it
meant. Python scalars stay weakly typed and are allowed. The one relaxation is the
``optax_promotion`` fixture below. Rank promotion is left at JAX's default (see below).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import brainstate  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
# Rank promotion stays "allow": "raise" is not feasible, brainstate's own initializers
# broadcast by rank (brainstate 0.5.4, nn/init.py:991: Orthogonal multiplies a (12, 9)
# matrix by a (9,) vector) and so does every bias add ``x @ w + b``.


@pytest.fixture
def x64():
    """float64 everywhere (jax and brainstate's default dtype) for exactness tests."""
    jax.config.update("jax_enable_x64", True)
    brainstate.environ.set(precision=64)
    yield
    brainstate.environ.set(precision=32)
    jax.config.update("jax_enable_x64", False)


@pytest.fixture
def optax_promotion():
    """Standard dtype promotion for one test: the suite's only relaxation of strict JAX.

    optax's Adam family cannot run under strict promotion: ``scale_by_adam``'s bias
    correction computes ``1 - b1 ** count`` with ``count`` an int32 array and ``b1`` a
    Python float, which has no implicit promotion path (optax 0.2.8). Use it, with
    ``@pytest.mark.usefixtures("optax_promotion")``, only on tests that step such an
    optimizer; the library's own code paths stay under strict promotion everywhere else.
    """
    with jax.numpy_dtype_promotion("standard"):
        yield


_SLOW_IDS = Path(__file__).with_name("slow_tests.txt")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection reads the marks
def pytest_collection_modifyitems(config, items):
    """Marks the measured heaviest default cases ``slow`` (see ``tests/slow_tests.txt``)."""
    lines = _SLOW_IDS.read_text().splitlines()
    ids = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for item in items:
        if item.nodeid in ids:
            item.add_marker(pytest.mark.slow)
