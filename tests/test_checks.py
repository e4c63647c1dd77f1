"""``disttrace.checks``: each helper returns a good value, rejects ``bool`` where a number
is meant, raises ``ArgumentTypeError`` (a ``TypeError`` that is also a ``ValueError``)
for a wrong type and ``ValueError`` for a bad value, and names the caller, the argument
and the value in its message."""

import math
import re

import numpy as np
import pytest

from disttrace import checks
from disttrace.checks import ArgumentTypeError


def _raises(exc, *parts):
    """``pytest.raises(exc)`` whose message must contain every one of ``parts`` literally."""
    return pytest.raises(exc, match="".join(f"(?=[\\s\\S]*{re.escape(p)})" for p in parts))


def test_argument_type_error_is_both_type_and_value_error():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


# ---- positive_int / non_negative_int ------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 7, np.int32(3), np.int64(10**12)])
def test_positive_int_accepts_ints(value):
    got = checks.positive_int("f", "n", value)
    assert got == value and type(got) is int


@pytest.mark.parametrize("value", [0, 5, np.uint8(0)])
def test_non_negative_int_accepts_zero_and_up(value):
    got = checks.non_negative_int("f", "n", value)
    assert got == value and type(got) is int


@pytest.mark.parametrize("helper", [checks.positive_int, checks.non_negative_int])
@pytest.mark.parametrize("value", [True, False])
def test_int_helpers_reject_bool_as_a_type_error(helper, value):
    with _raises(ArgumentTypeError, "Trainer: argument 'steps'", f"got {value!r} (bool)"):
        helper("Trainer", "steps", value)


@pytest.mark.parametrize("helper", [checks.positive_int, checks.non_negative_int])
@pytest.mark.parametrize("value", [2.0, "3", None, [1]])
def test_int_helpers_reject_other_types(helper, value):
    with _raises(TypeError, "Trainer: argument 'steps'", f"got {value!r} ({type(value).__name__})"):
        helper("Trainer", "steps", value)


@pytest.mark.parametrize("value", [0, -3])
def test_positive_int_rejects_values_below_one(value):
    with pytest.raises(ValueError) as err:
        checks.positive_int("Trainer", "batch_size", value)
    assert not isinstance(err.value, TypeError)  # a bad value, not a bad type
    assert str(err.value) == f"Trainer: argument 'batch_size' must be a positive int; got {value}"


def test_non_negative_int_rejects_negatives():
    with pytest.raises(ValueError) as err:
        checks.non_negative_int("Task", "delay", -1)
    assert not isinstance(err.value, TypeError)
    assert str(err.value) == "Task: argument 'delay' must be an int >= 0; got -1"


# ---- number / unit_interval ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 2.5, -1e300, np.float32(0.5), np.int16(4)])
def test_number_accepts_finite_reals_as_float(value):
    got = checks.number("f", "x", value)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize("value", [True, "1.0", None, 1j, np.ones(2)])
def test_number_rejects_non_reals_as_a_type_error(value):
    with pytest.raises(ArgumentTypeError, match=re.escape("f: argument 'x' must be a finite number; got ")):
        checks.number("f", "x", value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_number_rejects_non_finite_values(value):
    with pytest.raises(ValueError, match=re.escape(f"f: argument 'x' must be a finite number; got {value!r}")) as err:
        checks.number("f", "x", value)
    assert not isinstance(err.value, TypeError)


@pytest.mark.parametrize(
    "bounds, ok, bad, what",
    [
        ({"low": 0.0}, [0.0, 3.0], [-0.1], "in [0, inf)"),
        ({"low": 0.0, "low_open": True}, [1e-9], [0.0, -1.0], "in (0, inf)"),
        ({"high": 2.0}, [-5.0, 2.0], [2.5], "in (-inf, 2]"),
        ({"low": -1.0, "high": 1.0, "high_open": True}, [-1.0, 0.99], [1.0, -1.5], "in [-1, 1)"),
    ],
)
def test_number_bounds(bounds, ok, bad, what):
    for v in ok:
        assert checks.number("f", "x", v, **bounds) == v
    for v in bad:
        with pytest.raises(ValueError, match=re.escape(f"f: argument 'x' must be a finite number {what}; got {v!r}")):
            checks.number("f", "x", v, **bounds)


def test_unit_interval():
    assert checks.unit_interval("ES_D_RTRL", "decay", 0.0) == 0.0
    assert checks.unit_interval("ES_D_RTRL", "decay", 0.9) == 0.9
    assert checks.unit_interval("Task", "rate", 1, high_open=False) == 1.0
    with _raises(ValueError, "ES_D_RTRL: argument 'decay'", "[0, 1)", "got 1.0"):
        checks.unit_interval("ES_D_RTRL", "decay", 1.0)
    with _raises(ValueError, "argument 'decay'", "got -0.1"):
        checks.unit_interval("ES_D_RTRL", "decay", -0.1)
    with _raises(ArgumentTypeError, "argument 'decay'", "got True (bool)"):
        checks.unit_interval("ES_D_RTRL", "decay", True)


# ---- boolean ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_boolean_accepts_bools(value):
    assert checks.boolean("f", "flag", value) is value


@pytest.mark.parametrize("value", [0, 1, "True", None, np.bool_(True)])
def test_boolean_rejects_everything_else_as_a_type_error(value):
    with _raises(ArgumentTypeError, "f: argument 'flag' must be True or False", f"got {value!r}"):
        checks.boolean("f", "flag", value)


# ---- one_of -------------------------------------------------------------------------------------


def test_one_of_accepts_allowed_values():
    assert checks.one_of("SpikingNet", "neuron", "alif", ("lif", "alif")) == "alif"
    assert checks.one_of("f", "mode", None, {None, "x"}) is None


@pytest.mark.parametrize("value", ["LIF", "", 3, ["lif"]])  # a list: unhashable, still a clear ValueError
def test_one_of_names_the_value_and_what_is_allowed(value):
    with pytest.raises(ValueError) as err:
        checks.one_of("SpikingNet", "neuron", value, ("lif", "alif"))
    assert str(err.value) == f"SpikingNet: argument 'neuron' must be one of ['alif', 'lif']; got {value!r}"


# ---- path_str -----------------------------------------------------------------------------------


def test_path_str():
    assert checks.path_str(("layers", 0, "weight")) == "layers.0.weight"
    assert checks.path_str(["V"]) == "V"
    assert checks.path_str(()) == ""
    assert checks.path_str("already.a.string") == "already.a.string"
