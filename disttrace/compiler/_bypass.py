"""Which learning-signal paths skip the new hidden values? (structural, from the jaxpr)

ES-D-RTRL splits the step's loss gradient into paths through the new hidden values of
a group, which meet the eligibility traces, and paths that *bypass* them, e.g. an output
spike read from the potential before its reset, or read and passed on to a later
layer. Bypass paths need extra backward work each step, so the learner does it only
where this module finds they can exist:

- :func:`bypass_groups`: groups G whose previous values reach the output (or another
  group's new values) other than through G's own new values;
- :func:`bypass_ops`: trace ops whose output reaches the output (or another group's
  new values) other than through the new values of the groups the op drives.

Conservative: any equation with a tainted input taints all its outputs.
"""

from __future__ import annotations

from disttrace.compiler import _jax_compat as jc
from disttrace.compiler._graph import ETraceGraph

__all__ = ["bypass_groups", "bypass_ops"]


def _step_vars(graph: ETraceGraph):
    """The step's equations, its output vars, new-hidden vars (``None`` for a literal), old-hidden vars."""
    outvars = jc.outvars(graph.jaxpr)
    outs = [v for v in graph.layout.out(outvars) if not jc.is_literal(v)]
    new = [None if jc.is_literal(v) else v for v in graph.layout.hidden_new(outvars)]
    prev = graph.layout.hidden(jc.invars(graph.jaxpr))
    return jc.eqns(graph.jaxpr), outs, new, prev


def _reaches(eqns, sources, blockers, targets) -> bool:
    """Whether a value in ``sources`` reaches ``targets`` without passing a ``blockers`` var."""
    tainted = set(sources)
    for eqn in eqns:
        if any(not jc.is_literal(v) and v in tainted and v not in blockers for v in jc.eqn_invars(eqn)):
            tainted.update(jc.eqn_outvars(eqn))
    return any(v in tainted and v not in blockers for v in targets)


def bypass_groups(graph: ETraceGraph) -> frozenset[int]:
    """Indices of the hidden groups whose previous values can reach the loss other than
    through the group's own new values."""
    eqns, outs, new, prev = _step_vars(graph)
    found = set()
    for grp in graph.groups:
        own = {new[m] for m in grp.members if new[m] is not None}
        others = [v for i, v in enumerate(new) if v is not None and i not in grp.members]
        if _reaches(eqns, [prev[m] for m in grp.members], own, outs + others):
            found.add(grp.index)
    return frozenset(found)


def bypass_ops(graph: ETraceGraph) -> frozenset[int]:
    """Indices of the traced ops whose output can reach the loss other than through the
    new values of the groups the op drives."""
    eqns, outs, new, _ = _step_vars(graph)
    found = set()
    for op in graph.ops:
        if not op.groups:
            continue
        members = {m for g in op.groups for m in graph.groups[g].members}
        own = {new[m] for m in members if new[m] is not None}
        others = [v for i, v in enumerate(new) if v is not None and i not in members]
        if _reaches(eqns, jc.eqn_outvars(eqns[op.eqn_index]), own, outs + others):
            found.add(op.index)
    return frozenset(found)
