"""Which Ray cluster a run uses, and shutting down only what the driver started.

Resolution, in order:

1. ``address`` (``host:port`` or ``ray://host:port``) must answer a TCP connection within
   5 s first — ``ray.init`` on an address where nothing listens had not returned after
   200 s (measured, ray 2.60) — then ``ray.init(address=...)``. ``"auto"`` is passed on.
2. Ray is already initialised in this process (a test fixture, a notebook): use it.
3. ``RAY_ADDRESS`` (set by ``ray job submit``): ``ray.init(address=$RAY_ADDRESS)``.
4. Otherwise a new local cluster: ``ray.init(address="local", num_cpus=...,
   include_dashboard=False)`` bound to 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``:
   without it Ray binds the routable IP even when told 127.0.0.1). ``address="local"``
   always starts a new cluster: a bare ``ray.init()`` would attach to whatever cluster
   Ray's temp folder names, and then refuse ``num_cpus``.

Only case 4 starts a cluster, and :func:`disconnect` shuts down only that one; the driver
never runs ``ray stop`` (it stops every Ray process on the machine).
"""

from __future__ import annotations

import os
import socket
import warnings
from urllib.parse import urlsplit

import ray

__all__ = ["TCP_TIMEOUT_S", "connect", "disconnect"]

#: seconds an explicit address has to accept a TCP connection
TCP_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ValueError(f"Ray address {address!r} must be 'host:port', 'ray://host:port' or 'auto'")
    try:
        with socket.create_connection((host, port), timeout=TCP_TIMEOUT_S):
            pass
    except OSError as e:
        raise ConnectionError(
            f"Ray address {address!r} is not reachable: no TCP connection to {host}:{port} within "
            f"{TCP_TIMEOUT_S:.0f} s ({e}); start the cluster (ray start --head) or fix the address"
        ) from None


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connects this process to a Ray cluster (module docstring); returns whether it
    started a new local cluster (then :func:`disconnect` shuts it down).

    Raises:
      ValueError: on a malformed ``address``.
      ConnectionError: if ``address`` does not accept a TCP connection within 5 s (it names
        the address).
    """
    if address is not None and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():  # e.g. a test fixture's cluster: used as it is
        return False
    if address is not None:
        ray.init(address=address)
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return False
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with warnings.catch_warnings():
        # ray.init forks helper processes that only exec Ray's binaries, so JAX's warning about
        # forking its threads (JAX may already run here) does not apply
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    return True


def disconnect(started: bool) -> None:
    """Shuts down the local cluster :func:`connect` started; leaves any other alone."""
    if started and ray.is_initialized():
        ray.shutdown()
