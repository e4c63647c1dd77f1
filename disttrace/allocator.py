"""The host's C allocator: keep the memory XLA frees instead of faulting it back in at every call.

On Linux, glibc's ``malloc`` serves a request above 32 MiB (its largest dynamic
``mmap`` threshold) with a fresh ``mmap`` and returns it to the kernel when freed. XLA on
CPU allocates each call's working set (its temp buffer) anew, so a jitted call whose
working set is above that size pays a first-touch page fault per 4 KiB page at *every*
call: 27,000 faults, about 20 % of the wall time, for one BPTT call of a 512-neuron
recurrent LIF layer over 200 steps at batch 64 (``benchmarks/README.md``, "The
allocator"). :func:`keep_freed_memory` makes glibc serve such requests from its heap and
keep freed memory for the next call; every algorithm then runs 20–30 % faster there.

The cost: the process's resident memory no longer shrinks after its peak (freed memory is
kept for reuse, not returned). The setting is process-wide and applies to allocations
made after the call; it changes no result. On a loaded machine a call now and then still
faults its working set in once more: when the previous call's buffer is freed late, the
heap grows instead of reusing it.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# the largest trim threshold mallopt takes (a C int): a free top of the heap above 2 GiB
# is still returned to the kernel
_TRIM_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Sets this process's glibc ``malloc`` to keep freed memory: no ``mmap`` for large
    blocks (``M_MMAP_MAX = 0``), no return of freed heap below 2 GiB to the kernel
    (``M_TRIM_THRESHOLD``), and one arena for threads started from now on (``M_ARENA_MAX = 1``,
    so that a large block freed by one thread is reused by the next call on another).

    The same as starting the process with
    ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``,
    but callable from Python after start-up. Safe to call more than once.

    Returns:
      True if glibc took the settings; False where the process's C library is not glibc
      (macOS, Windows, musl) or has no ``mallopt``: nothing is changed there. (Under a
      preloaded jemalloc or tcmalloc glibc takes the settings but no longer serves
      ``malloc``: harmless, and such allocators keep freed memory by their own options.)
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success
    return all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_MAX), (_M_ARENA_MAX, 1)))
