"""Measurement helpers shared by the disttrace and braintrace benchmark workers
(stdlib + jax only, so both interpreters can import it)."""

import jax


def device_peak(out: dict) -> dict:
    """Replaces ``out['peak_mib']`` by the device's peak bytes in use where the backend reports it (GPU)."""
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement memory_stats
        pass
    if isinstance(stats, dict) and "peak_bytes_in_use" in stats:
        out["peak_mib"] = stats["peak_bytes_in_use"] / 2**20
        out["mem_source"] = "device peak_bytes_in_use"
    return out
