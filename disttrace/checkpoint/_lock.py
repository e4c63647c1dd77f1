"""One writer per checkpoint directory: a file lock that names its owner.

Two processes saving into one directory interleave steps, delete each other's steps by
retention and can clean up each other's temporary directories mid-write. A writing
:class:`~disttrace.checkpoint.Checkpointer` therefore holds ``<directory>/.disttrace-writer.lock``
for its lifetime:

- The lock is an exclusive ``flock`` on that file, and the file records the owner
  (pid, host, time) so that a refused writer is told who holds it.
- The stale-lock rule comes from the kernel: a ``flock`` belongs to the open file and is
  released when its process exits, however it dies (``SIGKILL`` included). A lock whose
  owner is dead is therefore free, and the next writer takes it over (and is told whose it was).
- Within one process, a second writer on the same directory is refused too (each open
  file has its own ``flock``).
- Once the lock is held, every Orbax temporary directory in the directory belongs to a
  dead writer: :func:`remove_stale_temporaries` deletes them.

Limits: ``flock`` is local to one host unless the file system shares it (NFSv4 and
Lustre do; some FUSE mounts do not). A file system without ``flock`` support gets a
warning and no lock; URLs (object stores) get no lock at all (see ``Checkpointer``).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import socket
import warnings
import weakref

from disttrace.checkpoint._integrity import MARKER, is_temporary
from disttrace.errors import CheckpointError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

__all__ = ["LOCK_NAME", "WriterLock", "remove_stale_temporaries"]

LOCK_NAME = ".disttrace-writer.lock"
_log = logging.getLogger(__name__)


def _close(fd: int) -> None:
    try:
        os.close(fd)  # closing the file releases its flock
    except OSError:
        pass


def _owner_text(raw: str) -> str:
    try:
        owner = json.loads(raw)
        return f"pid {owner['pid']} on host {owner['host']} (since {owner['since']})"
    except (ValueError, KeyError, TypeError):
        return "an unknown process (the lock file names no owner)"


class WriterLock:
    """An exclusive writer lock on a local checkpoint directory.

    Use :meth:`acquire`; :meth:`release` (idempotent) frees it, as does the process's exit
    or the garbage collection of the lock.
    """

    def __init__(self, path: str, fd: int | None):
        self.path = path
        self._fd = fd
        # released with the object, and at interpreter exit, if release() is never called
        self._finalizer = weakref.finalize(self, _close, fd) if fd is not None else None

    @classmethod
    def acquire(cls, directory: str) -> WriterLock:
        """Takes the lock of ``directory`` (an existing local directory).

        Returns:
          The held lock (or, where the file system has no ``flock``, an empty lock and a
          ``UserWarning``).

        Raises:
          CheckpointError: if another live writer holds it (``step`` is ``None``, ``path``
            the lock file, ``reason`` names the owner's pid and host).
        """
        path = os.path.join(directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is None:
                raise OSError(errno.ENOSYS, "fcntl.flock is not available on this platform")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner_text(os.pread(fd, 4096, 0).decode(errors="replace"))
            _close(fd)
            raise CheckpointError(
                None,
                path,
                f"another writer holds this directory's lock: {owner}. Only one Checkpointer may write a "
                "directory at a time; stop that process, give this one another directory, or open it with "
                "read_only=True to restore only",
            ) from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP...: a file system without flock
            _close(fd)
            warnings.warn(
                f"Checkpointer: cannot lock {path} ({e}); this file system has no flock, so a second writer "
                "on this directory would not be refused and no temporary directories are cleaned up",
                UserWarning,
                stacklevel=3,
            )
            return cls(path, None)
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:  # a lock file with an owner but no flock: that owner died without releasing
            _log.warning("Checkpointer: took over the writer lock %s from a dead writer, %s", path,
                         _owner_text(previous))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (``False`` after :meth:`release`, or without flock)."""
        return self._fd is not None

    def release(self) -> None:
        """Clears the owner record and releases the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a released lock names no owner
        except OSError:
            pass
        self._finalizer()  # closes fd, which releases the flock


def remove_stale_temporaries(directory: str) -> list[str]:
    """Deletes what a dead writer left half-written in a locked local directory.

    Call only while holding the :class:`WriterLock`: then no live process is writing here,
    so every Orbax temporary step directory (``*.orbax-checkpoint-tmp*``) and every
    half-written commit marker (``<step>/disttrace_commit.json.tmp-<pid>``) is garbage.

    Returns:
      The paths removed.
    """
    removed = []
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False) and is_temporary(entry.name):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        elif entry.name.isdigit() and entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                if inner.name.startswith(MARKER + ".tmp"):
                    os.unlink(inner.path)
                    removed.append(inner.path)
    if removed:
        _log.warning("Checkpointer: removed %d temporary entries left by a dead writer in %s: %s", len(removed),
                     directory, ", ".join(sorted(removed)))
    return removed
