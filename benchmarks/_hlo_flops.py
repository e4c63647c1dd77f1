"""Matrix-product FLOPs of one call of a compiled XLA program, loops counted by their trips
(stdlib only, so both interpreters can import it).

XLA's own ``cost_analysis()`` counts a ``while`` body once, whatever its trip count, so it
cannot compare a scan over T steps with another. This reads the optimised HLO text
(``jax.stages.Compiled.as_text()``) instead: every ``dot`` instruction contributes
``2 · prod(result dims) · prod(lhs contracting dims)``, a computation called from a
fusion or ``call`` contributes its own count, and a ``while`` contributes its body's and
condition's counts times its ``known_trip_count`` (XLA annotates every ``lax.scan`` and
``fori_loop`` with one). Only ``dot`` is counted: element-wise work, reductions and
convolutions are not (the benchmarked models have no convolution; a program with one is
refused rather than under-counted). Products that XLA rewrote to element-wise
multiplies (an outer product with no contracted axis) are not counted either.
"""

from __future__ import annotations

import math
import re

__all__ = ["dot_flops"]

_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"^\s*([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"^\w+\[([\d,]*)\]$")
_CALLEE = re.compile(r"\b(?:calls|to_apply|body|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")


def _dims(shape: str) -> tuple[int, ...]:
    m = _SHAPE.match(shape)
    if m is None:
        raise ValueError(f"dot_flops: not an array shape: {shape!r}")
    return tuple(int(d) for d in m.group(1).split(",") if d)


def _split_shape(text: str) -> tuple[str, str]:
    """``"f32[8,64]{1,0} dot(...)"`` -> ``("f32[8,64]", "dot(...)")``; a tuple shape
    ``"(s32[], f32[2]{0}) while(...)"`` is kept whole (it is never a dot's operand)."""
    if text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return text[: i + 1], text[i + 1 :].lstrip()
        return text, ""
    token, _, tail = text.partition(" ")
    return re.sub(r"\{[^}]*\}$", "", token), tail


def _parse(text: str) -> tuple[dict, str]:
    """``({computation: [(result shape, opcode, rest of line), ...]}, entry name)``."""
    comps: dict[str, list] = {}
    entry, current = None, None
    for line in text.splitlines():
        head = _HEADER.match(line)
        if head is not None:
            current = head.group(1)
            comps[current] = []
            if line.startswith("ENTRY"):
                entry = current
            continue
        m = _INSTR.match(line)
        if m is not None and current is not None:
            shape, tail = _split_shape(m.group(2))
            op = _OPCODE.match(tail)
            if op is not None:
                comps[current].append((m.group(1), shape, op.group(1), op.group(2)))
    if entry is None:
        raise ValueError("dot_flops: no ENTRY computation in the HLO text")
    return comps, entry


def dot_flops(hlo_text: str) -> float:
    """FLOPs of the ``dot`` instructions one call of the program executes.

    Args:
      hlo_text: ``compiled.as_text()`` of a ``jax.jit(...).lower(...).compile()``.

    Returns:
      ``2 · multiply-adds`` of every matrix product, each ``while`` body counted
      ``known_trip_count`` times; a ``conditional`` counts its most expensive branch.

    Raises:
      ValueError: if a ``while`` has no known trip count, the program has a
        ``convolution``, or the text is not an HLO module.
    """
    comps, entry = _parse(text=hlo_text)
    shapes = {name: shape for instrs in comps.values() for name, shape, _, _ in instrs}
    memo: dict[str, float] = {}

    def count(comp: str) -> float:
        if comp in memo:
            return memo[comp]
        total = 0.0
        for name, shape, opcode, rest in comps.get(comp, ()):
            if opcode == "convolution":
                raise ValueError(f"dot_flops: {name} is a convolution, which this count does not cover")
            if opcode == "dot":
                lhs = re.match(r"\s*%([\w.\-]+)", rest).group(1)
                contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
                lhs_dims = _dims(shapes[lhs])
                k = math.prod(lhs_dims[int(i)] for i in contracting.split(",") if i)
                total += 2.0 * math.prod(_dims(shape)) * k
                continue
            if opcode == "conditional":
                branches = _BRANCHES.search(rest)
                names = [] if branches is None else [b.strip().lstrip("%") for b in branches.group(1).split(",")]
                total += max((count(b) for b in names), default=0.0)
                continue
            callees = _CALLEE.findall(rest)
            if opcode == "while":
                trips = re.search(r"\"known_trip_count\":\{\"n\":\"(\d+)\"\}", rest)
                if trips is None:
                    raise ValueError(f"dot_flops: while loop {name} has no known trip count")
                total += int(trips.group(1)) * sum(count(c) for c in callees)
            elif opcode in ("fusion", "call", "async-start", "custom-call"):
                total += sum(count(c) for c in callees)
        memo[comp] = total
        return total

    return count(entry)

