"""Where each worker actor runs: its ``.options(...)``, and TPU-slice placement.

CPU workers get their own ``XLA_FLAGS`` (``devices_per_worker`` fake devices) because
actors inherit the driver's environment, where a test's 8 fake devices would be wrong
and ``jax.distributed`` deadlocks with 2+ CPU devices per process. With a ``tpu_slice``
(``{topology, accelerator_version}``), the driver reserves the slice with
``ray.util.tpu.slice_placement_group`` (alpha in Ray 2.60) and pins worker ``r`` to
bundle ``r``: one worker per TPU host, which is what ``jax.distributed`` on a TPU pod
expects.
"""

from __future__ import annotations

from disttrace.streaming.ray._spec import WorkerSpec

__all__ = ["placed_options", "reserve_tpu_slice", "worker_options"]


def worker_options(spec: WorkerSpec) -> dict:
    """The ``.options(...)`` of each worker actor: ``resources_per_worker`` (default one
    CPU), a threaded actor, no Ray-level restarts (the driver restarts), and the
    environment. ``XLA_FLAGS`` is always overridden: on CPU to ``devices_per_worker``
    fake devices (with ``JAX_PLATFORMS=cpu``), on an accelerator to nothing."""
    options = dict(spec.resources_per_worker or {"num_cpus": 1})
    resources = options.get("resources") or {}
    accelerated = "num_gpus" in options or "TPU" in resources or spec.tpu_slice is not None
    if accelerated:  # the accelerator's own devices; only the driver's fake CPU devices are dropped
        env = {"XLA_FLAGS": ""}
    else:
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={spec.devices_per_worker}",
               "JAX_PLATFORMS": "cpu"}
    options.update(max_concurrency=4, max_restarts=0, runtime_env={"env_vars": env})
    return options


def placed_options(options: dict, placement_group, *, num_workers: int, num_bundles: int,
                   chips_per_host: int) -> list[dict]:
    """Each rank's options on a TPU slice's placement group: worker ``r`` on bundle ``r``
    with the host's chips (``{"TPU": chips_per_host}``).

    Raises:
      ValueError: if ``num_workers`` is not the slice's host count (one worker per host).
    """
    if num_workers != num_bundles:
        raise ValueError(
            f"stream.tpu_slice: the slice has {num_bundles} hosts, and a sync or async run places one worker per "
            f"host; set stream.num_workers to {num_bundles}, got {num_workers}"
        )
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    placed = []
    for rank in range(num_workers):
        opts = {k: v for k, v in options.items() if k not in ("num_cpus", "num_gpus", "resources")}
        opts["resources"] = {"TPU": chips_per_host}
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=rank, placement_group_capture_child_tasks=True,
        )
        placed.append(opts)
    return placed


def reserve_tpu_slice(spec: WorkerSpec):
    """Reserves ``spec.tpu_slice`` and returns ``(slice handle, [options of each rank])``;
    ``(None, [worker_options] * W)`` without a slice. The caller shuts the handle down."""
    base = worker_options(spec)
    if spec.tpu_slice is None:
        return None, [base] * spec.num_workers
    import ray.util.tpu

    handle = ray.util.tpu.slice_placement_group(
        topology=spec.tpu_slice["topology"], accelerator_version=spec.tpu_slice["accelerator_version"],
    )
    try:
        placed = placed_options(base, handle.placement_group, num_workers=spec.num_workers,
                                num_bundles=handle.num_bundles, chips_per_host=handle.chips_per_host)
    except BaseException:
        handle.shutdown()
        raise
    return handle, placed
