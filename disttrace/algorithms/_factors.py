"""Per-step factors of online learning: learning signals, Jacobian blocks, op inputs.

For one step ``h_t = f(h_{t-1}, x_t; θ)`` with loss ``L_t`` this computes, with one
VJP and one batched JVP (plus extra backward passes only where the compiler finds
bypass paths):

- ``δ^prev_t = ∂L_t/∂h_{t-1}`` per hidden group, (B, K, N...);
- ``δ^new_t``: ``∂L_t/∂h_t`` per group, holding the group's other new values fixed
  (its *partial* form: in an LSTM ``h_t`` is computed from ``c_t``; ``g_t`` and ``D_t``
  below already carry that within-step dependence, so the total would count it twice);
- for IO-dimension ops, the part of ``δ^prev_t`` that bypasses each group's own new
  values, ``δ^prev - J_Gᵀ δ^new`` (an output read before a reset, maybe through a later
  layer), and the same-step signal ``∂L_t/∂y_t`` along paths that skip the op's groups;
- the exact same-step gradient ``∂L_t/∂θ|_{h_{t-1}}`` (the *direct* term), with the
  weights of IO-dimension ops held constant (their gradient comes from their trace);
- per group the per-neuron Jacobian block ``D_t[b,k,k'] = ∂h_t[k]/∂h_{t-1}[k']``,
  (B, K, K, N...), read by JVPs with all-ones tangents while every trace op's
  input is cut (the diagonal approximation);
- per (op, group) ``g_t = ∂h_t/∂y_t`` (B, K, N...), by a JVP of an all-ones
  perturbation of the op output, again with op inputs cut;
- the operands every op was called with.

The previous-hidden form ``dL_t/dθ = δ^prev_t · E_{t-1} + ∂L_t/∂θ|direct`` is exact
wherever the trace ``E`` is (DESIGN.md §2), including outputs taken from values
before a reset.

:func:`step_factors` runs these as named phases: the spatial VJP (:func:`_spatial`),
the cut JVPs along every direction at once (:func:`_cut_jvps`), reading the Jacobian
blocks and ``g`` out of them (:func:`_blocks`), the partial ``δ^new`` of multi-state
groups (:func:`_partial_delta_new`), and the two bypass signals
(:func:`_delta_bypass`, :func:`_y_bypass`). Each forward pass runs the model step
through :func:`run_loss_of` (``loss_of(call, *seq_t)``, ``call`` running the step
exactly once), which the RTRL and BPTT learners share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from disttrace.compiler import ETraceGraph, run_step
from disttrace.units import loss_mantissa

__all__ = ["StepFactors", "step_factors"]


class StepFactors(NamedTuple):
    loss: jax.Array  # ()
    out: Any  # the model output pytree
    hidden: list  # new hidden values, graph order
    aux: list  # new aux leaves
    direct: list  # per param leaf, same-step gradient
    delta_prev: dict  # group -> (B, K, N...)
    delta_new: dict  # group -> (B, K, N...); for IO ops, holding the group's other new values fixed
    delta_bypass: dict  # bypass group -> (B, K, N...): part of δ^prev not through h_t (absent: zero)
    jac: dict  # group -> (B, K, K, N...)
    g: dict  # (op, group) -> (B, K, N...)
    operands: dict  # op -> tuple of operands
    y_bypass: dict  # IO op -> (op output shape): ∂L_t/∂y_t along paths skipping its groups' new values
    y_grad: dict  # op in ``y_grad_ops`` -> (op output shape): ∂L_t/∂y_t, all same-step paths


def _stack_members(arrs, members):
    return jnp.stack([arrs[m] for m in members], axis=1)


def step_factors(
    graph: ETraceGraph,
    io_ops: frozenset[int],
    param_leaves: list,
    hidden: list,
    aux_leaves: list,
    loss_of: Callable,
    seq_t: tuple,
    validate_args: Callable[[list, Any], None],
    bypass_groups: frozenset[int] = frozenset(),
    bypass_ops: frozenset[int] = frozenset(),
    y_grad_ops: frozenset[int] = frozenset(),
) -> StepFactors:
    """Computes :class:`StepFactors` for one step.

    Args:
      graph: the compiled graph.
      io_ops: ops whose weights are held constant in the direct term.
      param_leaves, hidden, aux_leaves: current values (flat, graph order).
      loss_of: ``loss_of(call, *seq_t) -> scalar`` where ``call(*args)`` runs one
        model step and returns its output; it must be called exactly once.
      seq_t: this step's slice of the sequences.
      validate_args: checks the leaves/treedef the model is called with.
      bypass_groups: groups whose previous values may reach the loss other than
        through their own new values (``compiler.bypass_groups``); for the others the
        bypass part of ``δ^prev`` is zero and is not computed.
      bypass_ops: IO ops whose output may reach the loss other than through the new
        values of their groups (``compiler.bypass_ops``); only for these the same-step
        bypass signal ``y_bypass`` is computed (one more forward and backward pass).
      y_grad_ops: ops whose weights are also held constant in the direct term; their
        same-step gradient is returned as ``y_grad = ∂L_t/∂y_t`` instead (from the same
        VJP), to be contracted with the op inputs of a whole chunk at once.

    Raises:
      ValueError: if ``loss_of`` does not call the model exactly once, or calls it
        with inputs of the wrong shape.
    """
    fwd = _Forward(graph, aux_leaves, loss_of, seq_t, validate_args, io_ops | y_grad_ops)
    sp = _spatial(fwd, param_leaves, hidden, y_grad_ops)
    # Groups whose new values feed each other within the step (an LSTM's h_t from c_t):
    # the IO-dimension contraction needs δ^new holding the other new values fixed.
    intra = [grp for grp in graph.groups if io_ops and len(grp.members) > 1]
    cut = _cut_jvps(graph, param_leaves, hidden, aux_leaves, sp.args, intra)
    blocks = _blocks(graph, cut, sp, intra)
    delta_bypass = _delta_bypass(graph, io_ops, bypass_groups, hidden, sp, blocks)
    y_bypass = _y_bypass(fwd, io_ops, bypass_ops, param_leaves, hidden)
    return StepFactors(
        loss=sp.loss,
        out=jax.tree.unflatten(graph.out_tree, sp.out),
        hidden=list(sp.h_new),
        aux=list(sp.a_new),
        direct=list(sp.direct),
        delta_prev=blocks.delta_prev,
        delta_new=blocks.delta_new,
        delta_bypass=delta_bypass,
        jac=blocks.jac,
        g=blocks.g,
        operands=sp.records,
        y_bypass=y_bypass,
        y_grad=sp.y_grad,
    )


# ---- the model step as the loss sees it -------------------------------------------------
class StepCall(NamedTuple):
    """What the one model step inside ``loss_of`` computed (flat leaves, graph order)."""

    out: list  # model output leaves
    hidden: list  # new hidden values
    aux: list  # new aux leaves
    records: dict  # op -> operands
    args: list  # the argument leaves the model was called with


def run_loss_of(
    graph: ETraceGraph, loss_of: Callable, seq_t: tuple, validate_args: Callable[[list, Any], None],
    theta: list, hidden: list, aux_leaves: list, **run_options,
) -> tuple[Any, StepCall]:
    """``loss_of(call, *seq_t)``, where ``call(*args)`` runs one model step and returns
    its output pytree: the one place every learner (online, RTRL, BPTT) turns a
    ``step_fn`` into a model step.

    Args:
      graph: the compiled graph.
      loss_of: ``loss_of(call, *seq_t) -> loss``; it must call ``call`` exactly once.
      seq_t: this step's slice of the sequences.
      validate_args: checks the leaves/treedef ``call`` is called with.
      theta, hidden, aux_leaves: parameter leaves, previous hidden values, aux leaves
        (flat, graph order).
      run_options: passed on to ``compiler.run_step`` (perturbations, cuts, held weights).

    Returns:
      ``(loss, StepCall)``: the loss, a scalar array (a quantity's mantissa), and what
      the step computed.

    Raises:
      ValueError: if ``loss_of`` calls ``call`` twice or never, returns a loss that is
        not a scalar, or (from ``validate_args``) calls it with inputs of the wrong
        structure or shape.
    """
    box: dict[str, StepCall] = {}

    def call(*args):
        if box:
            raise ValueError("step_fn must call the learner exactly once per step; it called it twice")
        arg_leaves, arg_tree = jax.tree.flatten(args)
        validate_args(arg_leaves, arg_tree)
        out, h_new, a_new, records = run_step(graph, theta, hidden, aux_leaves, arg_leaves, **run_options)
        box["step"] = StepCall(out, h_new, a_new, records, arg_leaves)
        return jax.tree.unflatten(graph.out_tree, out)

    loss = loss_of(call, *seq_t)
    if not box:
        raise ValueError("step_fn must call the learner exactly once per step; it never called it")
    loss = loss_mantissa(loss)
    if loss.shape != ():
        raise ValueError(f"step_fn must return a scalar loss; got shape {loss.shape}")
    return loss, box["step"]


def loss_fn_loss_of(loss_fn: Callable | None) -> Callable:
    """The ``loss_of`` of a learner's pure ``step(state, params, x, y)``:
    ``(call, x, y) -> loss_fn(call(x), y)``.

    Raises:
      ValueError: if ``loss_fn`` is None (the learner was compiled without one).
    """
    if loss_fn is None:
        raise ValueError("step: this learner has no loss_fn; pass loss_fn=... to disttrace.compile")
    return lambda call, x, y: loss_fn(call(x), y)


@dataclasses.dataclass(frozen=True)
class _Forward:
    """``loss_of`` around one model step: ``(loss, h_new), (aux_new, operands, args, out)``.

    ``__call__(theta, h_prev, p_new, detach, perturb)``: ``p_new`` is added to each new
    hidden value (``run_step``'s ``hidden_perturb``), ``perturb`` to op outputs.
    """

    graph: ETraceGraph
    aux_leaves: list
    loss_of: Callable
    seq_t: tuple
    validate_args: Callable
    stop_weights: frozenset

    def __call__(self, theta, h_prev, p_new, detach=False, perturb=None):
        loss, s = run_loss_of(
            self.graph, self.loss_of, self.seq_t, self.validate_args, theta, h_prev, self.aux_leaves,
            stop_weights=self.stop_weights, hidden_perturb=p_new, detach_hidden=detach, perturb=perturb,
        )
        return (loss, s.hidden), (s.aux, s.records, s.args, s.out)


# ---- phase 1: the spatial VJP ------------------------------------------------------------
class _Spatial(NamedTuple):
    """One forward pass and its VJP: the learning signals and the direct term."""

    loss: jax.Array  # ()
    h_new: list  # new hidden values
    a_new: list  # new aux leaves
    records: dict  # op -> operands
    args: list  # the argument leaves the model was called with
    out: list  # model output leaves
    vjp: Callable  # (loss cotangent, new-hidden cotangents) -> (d params, d h_prev, d p_new)
    direct: list  # per param leaf: ∂L_t/∂θ with IO and y_grad weights held
    d_prev: list  # per hidden: ∂L_t/∂h_{t-1}
    d_new: list  # per hidden: ∂L_t/∂h_t (all paths)
    y_grad: dict  # op -> ∂L_t/∂y_t


def _spatial(fwd: _Forward, param_leaves, hidden, y_grad_ops) -> _Spatial:
    graph = fwd.graph
    zeros = [jnp.zeros_like(h) for h in hidden]
    y_pert = {j: jnp.zeros(graph.ops[j].out.shape, graph.ops[j].out.dtype) for j in sorted(y_grad_ops)}
    f = lambda th, hp, pn, py: fwd(th, hp, pn, perturb=py)
    (loss, h_new), vjp_all, (a_new, records, args, out) = jax.vjp(f, param_leaves, hidden, zeros, y_pert, has_aux=True)
    vjp = lambda cot: vjp_all(cot)[:3]
    direct, d_prev, d_new, y_grad = vjp_all((jnp.ones_like(loss), zeros))
    return _Spatial(loss, h_new, a_new, records, args, out, vjp, direct, d_prev, d_new, y_grad)


# ---- phase 2: Jacobian blocks and ∂h/∂y through one batched JVP with op inputs cut -------
class _CutJVPs(NamedTuple):
    """The cut step's tangents along every direction: ``tan_out[m][d]`` is hidden ``m``'s
    tangent (B, N...) along direction ``d``. Directions, in order: one per member of
    each group (``h_{t-1}``), one per traced op (its output), one per member of each
    ``intra`` group (its new value where written)."""

    tan_out: list
    traced_ops: list


def _cut_jvps(graph: ETraceGraph, param_leaves, hidden, aux_leaves, args, intra) -> _CutJVPs:
    traced_ops = [op for op in graph.ops if op.groups]
    y_zero = {op.index: jnp.zeros(op.out.shape, op.out.dtype) for op in traced_ops}

    def cut_step(h_prev, p_y, p_w):
        return run_step(graph, param_leaves, h_prev, aux_leaves, args, perturb=p_y, cut=True, hidden_perturb=p_w)[1]

    zeros_h = lambda: [jnp.zeros_like(h) for h in hidden]
    ones_at = lambda m: [jnp.ones_like(h) if i == m else jnp.zeros_like(h) for i, h in enumerate(hidden)]
    y_dir = lambda k: {j: (jnp.ones_like(v) if j == k else jnp.zeros_like(v)) for j, v in y_zero.items()}
    dirs = []  # (h_prev tangent, op-output tangent, new-value tangent)
    for grp in graph.groups:
        dirs += [(ones_at(m), y_dir(None), zeros_h()) for m in grp.members]
    dirs += [(zeros_h(), y_dir(op.index), zeros_h()) for op in traced_ops]
    for grp in intra:
        dirs += [(zeros_h(), y_dir(None), ones_at(m)) for m in grp.members]
    stack = lambda i: jax.tree.map(lambda *xs: jnp.stack(xs), *[d[i] for d in dirs])
    tan_h, tan_w = stack(0), stack(2)
    tan_y = stack(1) if y_zero else {}
    jvp_one = lambda th, ty, tw: jax.jvp(cut_step, (hidden, y_zero, zeros_h()), (th, ty, tw))[1]
    tan_out = jax.vmap(jvp_one)(tan_h, tan_y, tan_w)  # per hidden: (n_dirs, B, N...)
    return _CutJVPs(tan_out, traced_ops)


# ---- phase 3: reading the blocks out of the tangents --------------------------------------
class _Blocks(NamedTuple):
    jac: dict  # group -> (B, K, K', N...)
    g: dict  # (op, group) -> (B, K, N...)
    delta_prev: dict  # group -> (B, K, N...)
    delta_new: dict  # group -> (B, K, N...), partial for ``intra`` groups


def _blocks(graph: ETraceGraph, cut: _CutJVPs, sp: _Spatial, intra) -> _Blocks:
    tan_out = cut.tan_out
    jac, g, delta_prev, delta_new = {}, {}, {}, {}
    d = 0
    for grp in graph.groups:
        cols = []
        for _ in grp.members:
            cols.append(jnp.stack([tan_out[m][d] for m in grp.members], axis=1))  # (B, K, N...)
            d += 1
        jac[grp.index] = jnp.stack(cols, axis=2)  # (B, K, K', N...)
        delta_prev[grp.index] = _stack_members(sp.d_prev, grp.members)
        delta_new[grp.index] = _stack_members(sp.d_new, grp.members)
    for op in cut.traced_ops:
        for gi in op.groups:
            g[(op.index, gi)] = jnp.stack([tan_out[m][d] for m in graph.groups[gi].members], axis=1)
        d += 1
    for grp in intra:
        cols = []
        for _ in grp.members:
            cols.append(jnp.stack([tan_out[m][d] for m in grp.members], axis=1))
            d += 1
        delta_new[grp.index] = _partial_delta_new(cols, delta_new[grp.index])
    return _Blocks(jac, g, delta_prev, delta_new)


def _partial_delta_new(cols: list, delta_new: jax.Array) -> jax.Array:
    """``δ^partial`` of one group from its total ``δ^new`` (B, K, N...) and the columns
    ``cols[k]`` (B, K', N...) of ``M[k', k] = ∂h_t[k'] / ∂(h_t[k] where written)``.

    ``M = I + (paths inside the step)``; δ^new holds every path, so δ^new = Mᵀ δ^partial
    per neuron.
    """
    m_block = jnp.moveaxis(jnp.stack(cols, axis=2), (1, 2), (-2, -1))  # (B, N..., K', K)
    rhs = jnp.moveaxis(delta_new, 1, -1)[..., None]  # (B, N..., K, 1)
    partial = jnp.linalg.solve(jnp.swapaxes(m_block, -1, -2), rhs)[..., 0]
    return jnp.moveaxis(partial, -1, 1)


# ---- phase 4: the bypass signals ----------------------------------------------------------
def _delta_bypass(graph: ETraceGraph, io_ops, bypass_groups, hidden, sp: _Spatial, blocks: _Blocks) -> dict:
    """The part of δ^prev that bypasses each group's own new values (an output read
    before a reset, possibly through a later layer): δ^prev minus the chain through the
    group's new values, J_Gᵀ δ^partial_G (last-write decomposition), from the same VJP."""
    io_groups = {g for j in io_ops for g in graph.ops[j].groups}
    delta_bypass = {}
    for grp in graph.groups:
        if grp.index not in io_groups or grp.index not in bypass_groups:
            continue  # structurally zero, or read by no IO op: no pass is spent on it
        cot = [jnp.zeros_like(h) for h in hidden]
        for k, m in enumerate(grp.members):
            cot[m] = blocks.delta_new[grp.index][:, k]
        through = sp.vjp((jnp.zeros_like(sp.loss), cot))[1]
        delta_bypass[grp.index] = blocks.delta_prev[grp.index] - _stack_members(through, grp.members)
    return delta_bypass


def _y_bypass(fwd: _Forward, io_ops, bypass_ops, param_leaves, hidden) -> dict:
    """Same-step paths from an IO op's output that skip its groups' new values: ``∂L_t/∂y_t``
    with those new values detached (one more forward and backward pass per op)."""
    graph = fwd.graph
    zeros = [jnp.zeros_like(h) for h in hidden]
    y_bypass = {}
    for op in graph.ops:
        if not op.groups or op.index not in io_ops or op.index not in bypass_ops:
            continue
        own = frozenset(m for gi in op.groups for m in graph.groups[gi].members)
        y0 = jnp.zeros(op.out.shape, op.out.dtype)
        y_loss = lambda p_y, op=op, own=own: fwd(param_leaves, hidden, zeros, own, {op.index: p_y})[0][0]
        y_bypass[op.index] = jax.grad(y_loss)(y0)
    return y_bypass
