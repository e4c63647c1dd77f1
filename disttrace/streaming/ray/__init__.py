"""Ray workers for streaming runs: the only part of disttrace that imports ray.

- :class:`WorkerSpec`: a run, as one frozen picklable value (mode, workers, partitions,
  the counting stream, averaging and checkpoint intervals, Ray address, failures);
- :class:`StreamWorker`: one worker, a Ray actor running
  :func:`~disttrace.streaming.run_worker` in a thread;
- :func:`run`: the driver, ``local`` (no Ray), ``sync`` (one ``jax.distributed`` job
  across the workers, restarted as a group on any failure) or ``async`` (W learners
  averaging their parameters every K steps, rolling back together on a failure);
- :class:`RayDataStream`: Ray Data datasets (one per partition) as an ordered,
  resumable stream source;
- :func:`connect` / :func:`disconnect`: which cluster (an explicit address after a 5 s TCP
  check, else ``RAY_ADDRESS``, else a new local cluster on 127.0.0.1), and shutting down
  only what the driver started.

``import disttrace`` and ``import disttrace.streaming`` never import this package.
"""

import os

# read by Ray when it starts a local cluster: bind 127.0.0.1, not the routable IP
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from disttrace.streaming.ray._actor import StreamWorker as StreamWorker  # noqa: E402
from disttrace.streaming.ray._address import connect as connect  # noqa: E402
from disttrace.streaming.ray._address import disconnect as disconnect  # noqa: E402
from disttrace.streaming.ray._data import RayDataStream as RayDataStream  # noqa: E402
from disttrace.streaming.ray._driver import RunResult as RunResult  # noqa: E402
from disttrace.streaming.ray._driver import StreamRunError as StreamRunError  # noqa: E402
from disttrace.streaming.ray._driver import run as run  # noqa: E402
from disttrace.streaming.ray._placement import worker_options as worker_options  # noqa: E402
from disttrace.streaming.ray._spec import WorkerSpec as WorkerSpec  # noqa: E402
from disttrace.streaming.ray._spec import worker_directory as worker_directory  # noqa: E402

__all__ = [
    "RayDataStream",
    "RunResult",
    "StreamRunError",
    "StreamWorker",
    "WorkerSpec",
    "connect",
    "disconnect",
    "run",
    "worker_directory",
    "worker_options",
]
