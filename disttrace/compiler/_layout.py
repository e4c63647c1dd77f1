"""The flat order of a compiled step: which position holds which input or output.

The step jaxpr of an :class:`~disttrace.compiler.ETraceGraph` is a function of flat
leaves. :class:`StepLayout` owns their order, and it is the only code that knows it:
everything else (tracing, analysis, execution, bypass search) slices through it.

- invars: ``[*param_leaves, *hidden, *aux_leaves, *arg_leaves]``;
- outvars: ``[*out_leaves, *hidden_new, *aux_new_leaves]``.

Output slices are taken from the end (``out`` is whatever precedes the new hidden and
aux values), so a layout can be built before the model's output structure is known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

from disttrace import checks

__all__ = ["StepInputs", "StepLayout", "StepOutputs"]


class StepInputs(NamedTuple):
    """A step's inputs split by kind (each a list, graph order)."""

    params: list  # one per parameter leaf
    hidden: list  # one per hidden state, (B, ...)
    aux: list  # one per aux leaf
    args: list  # one per argument leaf


class StepOutputs(NamedTuple):
    """A step's outputs split by kind (each a list, graph order)."""

    out: list  # one per model-output leaf
    hidden_new: list  # one per hidden state, (B, ...)
    aux_new: list  # one per aux leaf


@dataclasses.dataclass(frozen=True)
class StepLayout:
    """How many flat leaves of each kind a step takes and returns, and where they sit.

    Attributes:
      n_params: parameter leaves (first invars).
      n_hidden: hidden states (one leaf each).
      n_aux: aux-state leaves (read, and returned as new values).
      n_args: argument leaves (last invars).

    Example:
      >>> lay = StepLayout(n_params=2, n_hidden=1, n_aux=1, n_args=1)
      >>> flat = lay.flat_inputs(["w", "b"], ["h"], ["c"], ["x"])
      >>> flat
      ['w', 'b', 'h', 'c', 'x']
      >>> lay.hidden(flat), lay.args(flat)
      (['h'], ['x'])
      >>> lay.hidden_new(["y0", "y1", "h'", "c'"])
      ["h'"]
    """

    n_params: int
    n_hidden: int
    n_aux: int
    n_args: int

    def __post_init__(self):
        for f in dataclasses.fields(self):
            checks.non_negative_int("StepLayout", f.name, getattr(self, f.name))

    @property
    def n_inputs(self) -> int:
        return self.n_params + self.n_hidden + self.n_aux + self.n_args

    # ---- inputs ----------------------------------------------------------------
    def params(self, seq: Sequence) -> list:
        return list(seq[: self.n_params])

    def hidden(self, seq: Sequence) -> list:
        return list(seq[self.n_params : self.n_params + self.n_hidden])

    def aux(self, seq: Sequence) -> list:
        start = self.n_params + self.n_hidden
        return list(seq[start : start + self.n_aux])

    def args(self, seq: Sequence) -> list:
        start = self.n_params + self.n_hidden + self.n_aux
        return list(seq[start : start + self.n_args])

    def split_inputs(self, seq: Sequence) -> StepInputs:
        """``seq`` (one item per invar) split into :class:`StepInputs`."""
        self._check_inputs(len(seq))
        return StepInputs(self.params(seq), self.hidden(seq), self.aux(seq), self.args(seq))

    def flat_inputs(self, params: Sequence, hidden: Sequence, aux: Sequence, args: Sequence) -> list:
        """The invar-ordered list of a step's inputs.

        Raises:
          ValueError: if a part has the wrong number of items.
        """
        parts = (("params", params, self.n_params), ("hidden", hidden, self.n_hidden), ("aux", aux, self.n_aux),
                 ("args", args, self.n_args))
        for name, part, n in parts:
            if len(part) != n:
                raise ValueError(f"StepLayout.flat_inputs: {name} must have {n} leaves; got {len(part)}")
        return [*params, *hidden, *aux, *args]

    # ---- outputs ---------------------------------------------------------------
    def out(self, outs: Sequence) -> list:
        return list(outs[: self._n_out(len(outs))])

    def hidden_new(self, outs: Sequence) -> list:
        start = self._n_out(len(outs))
        return list(outs[start : start + self.n_hidden])

    def aux_new(self, outs: Sequence) -> list:
        return list(outs[self._n_out(len(outs)) + self.n_hidden :])

    def split_outputs(self, outs: Sequence) -> StepOutputs:
        """``outs`` (one item per outvar) split into :class:`StepOutputs`."""
        return StepOutputs(self.out(outs), self.hidden_new(outs), self.aux_new(outs))

    def flat_outputs(self, out: Sequence, hidden_new: Sequence, aux_new: Sequence) -> list:
        """The outvar-ordered list of a step's outputs.

        Raises:
          ValueError: if ``hidden_new`` or ``aux_new`` has the wrong number of items.
        """
        if len(hidden_new) != self.n_hidden or len(aux_new) != self.n_aux:
            raise ValueError(
                f"StepLayout.flat_outputs: expected {self.n_hidden} hidden and {self.n_aux} aux leaves; "
                f"got {len(hidden_new)} and {len(aux_new)}"
            )
        return [*out, *hidden_new, *aux_new]

    # ---- checks ------------------------------------------------------------------
    def _n_out(self, n_outs: int) -> int:
        n_out = n_outs - self.n_hidden - self.n_aux
        if n_out < 0:
            raise ValueError(
                f"StepLayout: a step returns at least {self.n_hidden + self.n_aux} leaves "
                f"({self.n_hidden} hidden, {self.n_aux} aux); got {n_outs}"
            )
        return n_out

    def _check_inputs(self, n: int) -> None:
        if n != self.n_inputs:
            raise ValueError(f"StepLayout: a step takes {self.n_inputs} input leaves; got {n}")
