"""Hidden groups: hidden states that update each other element-wise.

The analysis finds element-wise links ``new h_i <- old h_j``; the groups are the
connected components of those links (union-find), numbered by their smallest member,
members in hidden-state order. Within a group the per-neuron Jacobian is a K×K block,
so every member must share one shape and dtype. A group's stable name is the path of
its first state; it names the group's traces (:class:`~disttrace.compiler.TraceKey`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from disttrace.compiler._graph import HiddenGroup
from disttrace.errors import CompilationError

__all__ = ["Grouping", "group_hidden"]


@dataclasses.dataclass(frozen=True)
class Grouping:
    """The hidden groups of a step.

    Attributes:
      groups: the groups, in order of their smallest member.
      group_of: hidden index -> group index.
    """

    groups: tuple[HiddenGroup, ...]
    group_of: tuple[int, ...]


def _components(n: int, links: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Connected components of ``range(n)`` under ``links``, ordered by smallest member."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[root(i)] = root(j)
    roots = sorted({root(i) for i in range(n)}, key=lambda r: min(i for i in range(n) if root(i) == r))
    return [tuple(i for i in range(n) if root(i) == r) for r in roots]


def group_hidden(links: Sequence[tuple[int, int]], hidden: Sequence, names: Sequence[str]) -> Grouping:
    """Groups the hidden states along their element-wise links.

    Args:
      links: ``(i, j)`` pairs: new ``h_i`` depends element-wise on old ``h_j``.
      hidden: the hidden values (arrays), graph order.
      names: their readable paths.

    Raises:
      CompilationError: (kind ``"group_shape_mismatch"``) if linked states differ in
        shape or dtype.
    """
    groups, group_of = [], [0] * len(hidden)
    for gi, members in enumerate(_components(len(hidden), links)):
        shapes = {tuple(hidden[m].shape) for m in members}
        dtypes = {hidden[m].dtype for m in members}
        if len(shapes) > 1 or len(dtypes) > 1:
            desc = ", ".join(f"{names[m]}: {hidden[m].dtype}{list(hidden[m].shape)}" for m in members)
            raise CompilationError(
                f"hidden states that update each other element-wise must share shape and dtype; got {desc}",
                kind="group_shape_mismatch",
                path=names[members[0]],
            )
        for m in members:
            group_of[m] = gi
        groups.append(HiddenGroup(gi, members, shapes.pop(), dtypes.pop(), names[members[0]]))
    return Grouping(tuple(groups), tuple(group_of))
