"""The non-finite policy: a step whose input, target, loss or gradient is not finite is
not applied.

One NaN in one input value of one trial used to turn every recurrent weight into NaN
through the optimizer update, silently (issue 13). Under a policy other than
``"ignore"`` every step computes, inside the jitted step, one flag per checked leaf,

.. math::
    f = \\big(\\mathrm{finite}(x),\\ \\mathrm{finite}(y),\\ \\mathrm{finite}(L),\\
          \\mathrm{finite}(g_{θ_1}), \\dots, \\mathrm{finite}(g_{θ_P})\\big),

and applies the step only if all are true (``jnp.where`` on every leaf of the state, so a
skipped step leaves parameters, optimizer state *and* the learner's hidden states and
traces bitwise as they were: the stream continues as if the record had never come).
The step counter advances either way (it counts steps taken; a checkpoint is numbered by
it). :class:`~disttrace.train.NonFiniteCounts` in the state counts skipped steps, the
current run of consecutive ones, the run's first step and that step's first non-finite
leaf (``argmin`` of ``f``: the input before the target, the loss and the gradients, so
the cause is named rather than its consequences).

Once the run reaches the limit (``max_skips`` for ``"skip"``, 1 for ``"raise"``) the
state is *halted*: every later step is skipped too, whatever its values, until the host
notices (:func:`check_counts`) and raises :class:`~disttrace.errors.NonFiniteError`. No
step reads anything on the host: a stream checks the counters every few steps and a
trial at its end, and whatever ran in between changed nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from disttrace import checks
from disttrace.errors import NonFiniteError
from disttrace.train._state import NonFiniteCounts, TrainState

__all__ = ["POLICIES", "check_counts", "check_policy", "counts_dict", "finite_flags", "guard", "nonfinite_leaf_names"]

POLICIES = ("skip", "raise", "ignore")


def check_policy(who: str, nonfinite, max_skips) -> int:
    """Validates the policy arguments; returns the run length that halts (0: never)."""
    checks.one_of(who, "nonfinite", nonfinite, POLICIES)
    checks.positive_int(who, "max_skips", max_skips)
    return {"skip": max_skips, "raise": 1, "ignore": 0}[nonfinite]


def _all_finite(tree) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def finite_flags(x, y, loss, grads) -> jax.Array:
    """Per-leaf finiteness of one step, in the order of :func:`nonfinite_leaf_names`.

    Args:
      x, y: the step's (or the trial's) input and target pytrees (integer leaves count
        as finite).
      loss: the loss (any shape).
      grads: the gradient, a pytree like the parameters.

    Returns:
      (3 + P,) bool: x, y, the loss, then each parameter's gradient (P parameters).
    """
    flags = [_all_finite(x), _all_finite(y), _all_finite(loss)]
    flags += [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
    return jnp.stack(flags)


def nonfinite_leaf_names(rules) -> list[str]:
    """What each flag of :func:`finite_flags` checks, for messages.

    Args:
      rules: the state's ``PartitionRules``: the parameters' paths are its ``params/...``
        leaves (state order, the gradient's leaf order), e.g. ``layers.0.weight``.
    """
    params = [leaf.path.removeprefix("params/") for leaf in rules.leaves[: rules.n_state] if leaf.path.startswith("params/")]
    return ["the input x", "the target y", "the loss", *(f"the gradient of {p}" for p in params)]


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def guard(old: TrainState, new: TrainState, flags: jax.Array, limit: int) -> TrainState:
    """The state after one step under the policy (jit-able).

    Args:
      old: the state before the step.
      new: the state the step computed (params, optimizer and learner state updated).
      flags: from :func:`finite_flags`.
      limit: consecutive skipped steps that halt (from :func:`check_policy`; 0: never
        check, ``new`` is returned with the step counter advanced).

    Returns:
      ``new`` if every flag is true and the state is not halted; otherwise ``old``. The
      step counter advances by one either way; the counters record a skip.
    """
    step = old.step.increment()
    if limit == 0:
        return new._replace(step=step)
    c = old.nonfinite
    halted = c.run >= limit
    finite = jnp.all(flags)
    ok = finite & ~halted
    starts = (c.run == 0) & ~ok  # the first skipped step of a run (the limit is >= 1, so not halted)
    counts = NonFiniteCounts(
        skipped=_select(ok, c.skipped, c.skipped.increment()),
        run=jnp.where(halted, c.run, jnp.where(finite, jnp.zeros_like(c.run), c.run + 1)),
        first=_select(starts, step, c.first),
        leaf=jnp.where(starts, jnp.argmin(flags).astype(jnp.int32), c.leaf),
    )
    kept = _select(ok, (new.params, new.opt_state, new.learner_state), (old.params, old.opt_state, old.learner_state))
    return new._replace(
        params=kept[0], opt_state=kept[1], learner_state=kept[2], step=step, nonfinite=counts
    )


def check_counts(counts: NonFiniteCounts, names: list[str], limit: int, nonfinite: str) -> None:
    """Raises :class:`~disttrace.errors.NonFiniteError` if ``counts`` are halted (reads
    them on the host).

    Args:
      counts: the state's :class:`~disttrace.train.NonFiniteCounts`.
      names: from :func:`nonfinite_leaf_names`.
      limit: from :func:`check_policy`.
      nonfinite: the policy, for the message.
    """
    if limit == 0:
        return
    run = int(counts.run)
    if run < limit:
        return
    first, index = int(counts.first), int(counts.leaf)
    leaf = names[index] if 0 <= index < len(names) else f"checked leaf #{index}"
    if nonfinite == "raise":
        raise NonFiniteError(
            first, leaf, "its update was not applied and training stopped (nonfinite='raise'); "
            "use nonfinite='skip' to skip such steps",
        )
    last = first + run - 1
    raise NonFiniteError(
        first, leaf, f"this step and the {run - 1} after it (to step {last}) had non-finite values; their "
        f"updates were skipped and training stopped after max_skips={limit} consecutive skips",
    )


def counts_dict(counts: NonFiniteCounts, names: list[str]) -> dict:
    """The counters as host values: ``{"skipped", "consecutive", "first", "leaf"}``."""
    skipped, run = int(counts.skipped), int(counts.run)
    first = int(counts.first)
    index = int(counts.leaf)
    return {
        "skipped": skipped,
        "consecutive": run,
        "first": first if first else None,
        "leaf": (names[index] if 0 <= index < len(names) else None) if first else None,
    }

