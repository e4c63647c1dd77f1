"""Built-in streaming tasks, generated on the fly (no downloads).

Every task is a frozen dataclass of plain parameters with one interface
(:class:`TrialTask`): ``length`` (T), ``n_in``, ``n_out``, ``kind``
("classification" | "regression"), ``sample(key, batch) -> (xs (T, B, n_in), targets,
mask (T,))``, ``trials`` (the form ``Trainer.train_trial`` takes), ``stream(batch_size,
seed, partition)`` (a seekable :class:`TrialStream`), ``held_out`` and ``metric``.

- :class:`EvidenceAccumulation`: report the side with more cues (labels (B,));
- :class:`DelayedMatchToSample`: match / non-match of two stimuli across a delay (labels (B,));
- :class:`CopyTask`: recall a symbol sequence after a delimiter (labels (T, B));
- :class:`Integrator`: the running (leaky) integral of a noisy input (regression, (T, B, n_out));
- :class:`DriftingTask`: a mapping that switches every ``switch_every`` steps (labels (T, B)
  or regression targets).
"""

from disttrace.tasks._copy import CopyTask as CopyTask
from disttrace.tasks._dms import DelayedMatchToSample as DelayedMatchToSample
from disttrace.tasks._drifting import DriftingTask as DriftingTask
from disttrace.tasks._evidence import EvidenceAccumulation as EvidenceAccumulation
from disttrace.tasks._integrator import Integrator as Integrator
from disttrace.tasks._trial_task import TrialStream as TrialStream
from disttrace.tasks._trial_task import TrialTask as TrialTask
from disttrace.tasks._trial_task import per_step_targets as per_step_targets
from disttrace.tasks._trial_task import trial_sampler as trial_sampler

__all__ = [
    "CopyTask",
    "DelayedMatchToSample",
    "DriftingTask",
    "EvidenceAccumulation",
    "Integrator",
    "TrialStream",
    "TrialTask",
    "per_step_targets",
    "trial_sampler",
]
