"""Commit markers and content checksums of checkpoint steps.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when every item
is on disk, so a step directory that exists was once complete. That says nothing about
the bytes still being the ones written: a truncated file, a flipped bit or a deleted
metadata file either makes Orbax fail with whatever its readers raise (``AttributeError``,
``FileNotFoundError``, a TensorStore ``DATA_LOSS``) or, worse, restores wrong numbers
without a word (a flipped bit in a compressed chunk did exactly that in a test).

So after Orbax has finalised a step, the writer hashes every file of the step directory
(SHA-256, on the host, in the background thread of an asynchronous save) and writes a
*commit marker*, :data:`MARKER`, last and atomically (temporary file, ``fsync``, rename)::

    {"format": "disttrace.checkpoint.commit", "version": 1, "step": 5,
     "files": {"state/_METADATA": {"size": 439, "sha256": "…"}, …}}

A step is *committed* when its marker exists, and *verified* when every file it lists
exists with the recorded size and checksum. ``sha256sum`` checks the same numbers by hand.

Cost: hashing reads every byte once more (SHA-256 runs at 0.5–2 GB/s per core and
releases the GIL, so a background hash barely slows the training thread). A
:class:`VerificationCache` remembers each result together with the ``stat`` of every file
(size, mtime in ns, inode), so asking again about an unchanged step only ``stat``-s its
files; a restore always hashes afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from etils import epath

__all__ = [
    "MARKER",
    "VerificationCache",
    "has_marker",
    "is_temporary",
    "step_directories",
    "verify",
    "write_marker",
]

MARKER = "disttrace_commit.json"
_FORMAT, _VERSION = "disttrace.checkpoint.commit", 1
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's temporary step (and item) directories
_CHUNK = 1 << 22  # 4 MiB reads: large enough that hashing, not Python, sets the pace


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary entry: an unfinished Orbax step or a marker being written."""
    return _TMP_SUFFIX in name or name.startswith(MARKER + ".tmp")


def step_directories(root: epath.Path) -> dict[int, epath.Path]:
    """``step -> directory`` of every finished Orbax step directory (``<root>/<digits>``).

    Temporary directories are not steps; whether a step is committed is :func:`has_marker`.
    """
    if not root.exists():
        return {}
    out = {}
    for child in root.iterdir():
        if child.name.isdigit() and child.is_dir():
            out[int(child.name)] = child
    return out


def has_marker(step_dir: epath.Path) -> bool:
    """Whether the step's commit marker exists (its save finished)."""
    return (step_dir / MARKER).exists()


def _files(step_dir: epath.Path) -> list[str]:
    """Relative paths (``/``-separated, sorted) of the step's files, markers excluded."""
    out = []
    for folder, _, names in step_dir.walk():
        rel = os.path.relpath(os.fspath(folder), os.fspath(step_dir))
        for name in names:
            if name == MARKER or is_temporary(name):
                continue
            out.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(out)


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)  # releases the GIL for large buffers
    return digest.hexdigest()


def _size(path: epath.Path, local: bool) -> int:
    return os.stat(os.fspath(path)).st_size if local else path.stat().length


def write_marker(step_dir: epath.Path, step: int, *, local: bool) -> None:
    """Hashes every file of a finalised step directory and writes its commit marker last.

    On a local file system the marker is written to a temporary file, ``fsync``-ed and
    renamed, so a crash leaves either no marker or a whole one; on an object store the
    single ``write`` is atomic.
    """
    files = {rel: {"size": _size(step_dir / rel, local), "sha256": _sha256(step_dir / rel)} for rel in _files(step_dir)}
    text = json.dumps({"format": _FORMAT, "version": _VERSION, "step": step, "files": files}, indent=1, sort_keys=True)
    marker = step_dir / MARKER
    if not local:
        marker.write_text(text)
        return
    tmp = os.fspath(marker) + f".tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.fspath(marker))
    fd = os.open(os.fspath(step_dir), os.O_RDONLY)
    try:  # the rename itself is durable only once the directory is synced
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_marker(step_dir: epath.Path, step: int) -> tuple[dict | None, str | None]:
    """(files recorded in the marker, None), or (None, why the marker cannot be used)."""
    marker = step_dir / MARKER
    if not marker.exists():
        return None, (
            f"incomplete: no commit marker {MARKER} (its save did not finish: the writer was killed or is "
            "still writing it, or it was written by disttrace before commit markers existed)"
        )
    try:
        record = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"commit marker {MARKER} is unreadable ({type(e).__name__}: {e})"
    files = record.get("files") if isinstance(record, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("format") != _FORMAT
        or record.get("step") != step
        or not isinstance(files, dict)
        or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values())
    ):
        return None, f"commit marker {MARKER} is malformed or belongs to another step"
    if record.get("version") != _VERSION:
        return None, f"commit marker {MARKER} has version {record.get('version')!r}; this disttrace reads {_VERSION}"
    return files, None


def verify(step_dir: epath.Path, step: int, *, local: bool) -> str | None:
    """Checks a step against its commit marker.

    Returns:
      ``None`` if the step is complete and every recorded file has its recorded size and
      SHA-256; otherwise why not (the first few problems, each naming its file).
    """
    files, problem = _read_marker(step_dir, step)
    if problem is not None:
        return problem
    problems = []
    for rel, want in sorted(files.items()):
        path = step_dir / rel
        try:
            size = _size(path, local)
            if size != want["size"]:
                problems.append(f"{rel}: {size} bytes, {want['size']} at save (truncated or overwritten)")
            elif _sha256(path) != want["sha256"]:
                problems.append(f"{rel}: content checksum (sha256) differs from the one taken at save (corrupted)")
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
        except OSError as e:
            problems.append(f"{rel}: unreadable ({type(e).__name__}: {e})")
        if len(problems) >= 4:
            problems.append("…")
            break
    return "; ".join(problems) or None


def _signature(step_dir: epath.Path, local: bool) -> tuple | None:
    """What changes when any file of the step changes (without reading contents), or None."""
    try:
        entries = []
        for rel in [MARKER, *_files(step_dir)]:
            path = step_dir / rel
            if local:
                st = os.stat(os.fspath(path))
                entries.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
            else:
                st = path.stat()
                entries.append((rel, st.length, st.mtime))
        return tuple(entries)
    except OSError:  # the marker or a file is missing: nothing to cache, verify() says why
        return None


@dataclass
class VerificationCache:
    """Results of :func:`verify` per step, valid while the step's files are unchanged.

    Keyed by step and checked against :func:`_signature` (every file's size, mtime and
    inode), so a rewritten, truncated or replaced file invalidates the entry. It cannot
    see a change that keeps size and mtime (bit rot on the medium), which is why a
    restore always hashes afresh.
    """

    local: bool

    def __post_init__(self):
        self._entries: dict[int, tuple[tuple, str | None]] = {}

    def check(self, step: int, step_dir: epath.Path, *, fresh: bool = False) -> str | None:
        """:func:`verify`'s answer, from the cache unless ``fresh`` or the files changed.

        A cached failure is reused even when ``fresh``: its files have not changed since.
        """
        sig = _signature(step_dir, self.local)
        cached = self._entries.get(step)
        if sig is not None and cached is not None and cached[0] == sig and (cached[1] is not None or not fresh):
            return cached[1]
        reason = verify(step_dir, step, local=self.local)
        if sig is not None and sig == _signature(step_dir, self.local):  # unchanged while hashing
            self._entries[step] = (sig, reason)
        return reason

    def known_bad(self, step: int, step_dir: epath.Path) -> bool:
        """Whether ``step`` failed verification and its files have not changed since (no hashing)."""
        cached = self._entries.get(step)
        return cached is not None and cached[1] is not None and cached[0] == _signature(step_dir, self.local)

    def record_good(self, step: int, step_dir: epath.Path) -> None:
        """Remembers a step just written and hashed by this process as verified."""
        sig = _signature(step_dir, self.local)
        if sig is not None:
            self._entries[step] = (sig, None)

    def forget(self, step: int) -> None:
        self._entries.pop(step, None)
