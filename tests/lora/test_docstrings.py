"""Every docstring example of the LoRA modules runs and prints what it shows."""

import doctest
import importlib

import pytest

MODULES = [
    "disttrace.lora",
    "disttrace.lora._spec",
    "disttrace.lora._factors",
    "disttrace.lora._merge",
    "disttrace.lora._apply",
    "disttrace.lora._optim",
    "disttrace.lora._modules",
    "disttrace.nn._lora",
    "disttrace.ops._lora",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
