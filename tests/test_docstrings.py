"""Every docstring example in the package runs (doctest), and every public layer in
``disttrace.nn`` documents itself with a runnable example."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import disttrace
import disttrace.nn

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(disttrace.__path__, "disttrace.")
    if not m.name.startswith(("disttrace.lora", "disttrace.distributed"))  # their own doctest suites
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("name", sorted(disttrace.nn.__all__))
def test_every_layer_has_an_example(name):
    obj = getattr(disttrace.nn, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert ">>>" in (obj.__doc__ or ""), f"disttrace.nn.{name} has no runnable example"
