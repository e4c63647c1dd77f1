"""The docstring examples of disttrace.distributed run (doctest)."""

import doctest

import pytest

import disttrace.distributed as dd
from disttrace.distributed import _mesh, _rules, _state, _step


@pytest.mark.parametrize("module", [dd, _mesh, _rules, _state, _step], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
