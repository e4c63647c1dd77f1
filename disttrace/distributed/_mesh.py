"""The device mesh: axes ``('data', 'model')`` over every device of every process.

``data`` splits the batch (independent streams); ``model`` splits neurons (the output
axis of weights, hidden states and traces). Both axes are ``AxisType.Auto``: the step
is written for the global arrays and XLA's SPMD partitioner inserts the collectives
(JAX 0.10's ``jax.make_mesh`` defaults to ``Explicit`` axes, under which every
ambiguous contraction inside the learner would need an explicit output sharding).

Multi-host: call :func:`initialize` (or ``jax.distributed.initialize``) once per
process first; ``jax.devices()`` then lists the devices of all processes and the same
mesh, rules and step run unchanged (one controller per host, SPMD).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

from disttrace.checks import non_negative_int, positive_int

__all__ = ["AXES", "initialize", "make_mesh"]

AXES = ("data", "model")


def _check_count(who: str, name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    positive_int(who, name, value)


def make_mesh(data: int | None = None, model: int = 1, *, devices: Sequence | None = None) -> Mesh:
    """A 2-D ``('data', 'model')`` mesh over all devices (of all processes).

    Args:
      data: size of the ``data`` axis (batch split); ``None``: all devices / ``model``.
      model: size of the ``model`` axis (neuron split).
      devices: the devices to use (default ``jax.devices()``, which after
        ``jax.distributed.initialize`` spans every process). ``data * model`` must
        equal their number.

    Returns:
      A ``jax.sharding.Mesh`` of shape (data, model) with ``AxisType.Auto`` axes.

    Raises:
      ValueError: if ``data`` or ``model`` is not a positive int, or
        ``data * model`` is not the number of devices.

    Example:
      >>> import jax, disttrace.distributed as dd
      >>> mesh = dd.make_mesh(data=1, model=1, devices=jax.devices()[:1])
      >>> dict(mesh.shape)
      {'data': 1, 'model': 1}
    """
    _check_count("make_mesh", "model", model)
    _check_count("make_mesh", "data", data, allow_none=True)
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if n == 0:
        raise ValueError("make_mesh: argument 'devices' is empty; give at least one device")
    if data is None:
        if n % model:
            raise ValueError(
                f"make_mesh: argument 'model'={model} must divide the number of devices ({n}) when 'data' is "
                f"None; allowed: one of {[d for d in range(1, n + 1) if n % d == 0]}"
            )
        data = n // model
    if data * model != n:
        raise ValueError(
            f"make_mesh: arguments 'data'={data} and 'model'={model} give {data * model} devices, but there are "
            f"{n}; data * model must equal the device count (e.g. data={n // model if n % model == 0 else n}, "
            f"model={model if n % model == 0 else 1}), or pass devices=... with {data * model} devices"
        )
    return jax.make_mesh((data, model), AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def initialize(coordinator_address: str, num_processes: int, process_id: int, **kwargs) -> None:
    """Joins a multi-process JAX job (one process per host); a no-op for one process.

    A thin, validating wrapper of ``jax.distributed.initialize``. Call it before any
    other JAX call. On CPU, cross-process collectives use gloo (the JAX 0.10 default
    of ``jax_cpu_collectives_implementation``).

    Args:
      coordinator_address: ``"host:port"`` of process 0.
      num_processes: number of processes in the job.
      process_id: this process's rank, ``0 <= process_id < num_processes``.
      **kwargs: passed to ``jax.distributed.initialize`` (``local_device_ids``,
        ``initialization_timeout``, ...).

    Raises:
      ValueError: on a bad argument (named in the message).

    Example:
      >>> import disttrace.distributed as dd
      >>> dd.initialize("localhost:1234", num_processes=1, process_id=0)  # single process: nothing to join
    """
    _check_count("initialize", "num_processes", num_processes)
    if non_negative_int("initialize", "process_id", process_id) >= num_processes:
        raise ValueError(
            f"initialize: argument 'process_id' must be an int in [0, {num_processes}); got {process_id!r}"
        )
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"initialize: argument 'coordinator_address' must be 'host:port'; got {coordinator_address!r}")
    if num_processes == 1 or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id, **kwargs)
