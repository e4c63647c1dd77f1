"""Test configuration: 8 fake CPU devices (set before jax is imported) and float64
helpers for exactness checks."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import brainstate  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """float64 everywhere (jax and brainstate's default dtype) for exactness tests."""
    jax.config.update("jax_enable_x64", True)
    brainstate.environ.set(precision=64)
    yield
    brainstate.environ.set(precision=32)
    jax.config.update("jax_enable_x64", False)
