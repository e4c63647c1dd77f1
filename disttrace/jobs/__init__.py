"""The jobs a config describes: trials (``train_trials``) and streams (``run_stream``).

The top of the library, above ``disttrace.config``: the command line
(``disttrace.cli``, ``python -m launch.train``) runs a ``TrainConfig`` through here.
``run_stream`` imports Ray only when it runs (``import disttrace.jobs`` does not).
"""

from disttrace.jobs._stream import run_stream as run_stream
from disttrace.jobs._stream import worker_spec as worker_spec
from disttrace.jobs._trial import train_trials as train_trials

__all__ = ["run_stream", "train_trials", "worker_spec"]
