"""``DirectoryStream``: an append-only directory of ``.npz`` chunks per partition, and
:func:`write_npz_chunk`, the producer side.

Layout: ``<path>/p<partition>/<seq:08d>.npz``, each file holding ``n`` steps of the
partition's R rows: ``x (n, R, …)``, ``y (n, R, …)`` and ``ids (n, R)`` (integers, the
records' ids within the partition). Producers write ``<name>.npz.tmp`` and rename it,
which is atomic on a POSIX file system, so a reader sees a file whole or not at all;
``*.tmp`` and names not ending in ``.npz`` are ignored. Files are read in ``seq`` order
(their name order); a producer appends files with increasing ``seq`` and never changes
or deletes a file a run may still need.

The offset of a partition is ``[file_seq, index]``: ``index`` steps of the file
``file_seq`` are read (``[-1, 0]`` before the first file), so the next step is step
``index`` of that file or, when it has no more, step 0 of the next file. Resuming needs
the file ``file_seq`` to exist; a missing one is an error that names it.

``follow=False``: the stream ends (``StopIteration``) when a served partition has no
more complete files. ``follow=True``: :meth:`DirectoryStream.next` waits for new files,
polling every ``poll_s`` seconds, for ever or until ``timeout_s`` passes without a step
(then it ends). Sleep and clock are injectable, so tests can drive the waiting.

Every file is checked when read: a file that cannot be read, lacks a key, or has another
shape or dtype than the first file read stops the stream with an error naming the file
and the problem. No file is ever skipped.
"""

from __future__ import annotations

import numbers
import os
import re
import time
import warnings
import zipfile
from collections.abc import Callable

import numpy as np

from disttrace import checks
from disttrace.streaming._partitions import offsets_for, served_partitions
from disttrace.streaming._source import Batch, fingerprint_of

__all__ = ["DirectoryStream", "write_npz_chunk"]

_FILE = re.compile(r"^(\d+)\.npz$")
_PARTITION = re.compile(r"^p(\d+)$")
_KEYS = ("x", "y", "ids")


def _chunk_path(path, partition: int, seq: int) -> str:
    return os.path.join(os.fspath(path), f"p{partition}", f"{seq:08d}.npz")


def write_npz_chunk(path, partition: int, seq: int, x, y, ids) -> str:
    """Writes one chunk of ``n`` steps of a partition, atomically (``.tmp``, then rename).

    Args:
      path: the stream's directory (created if missing).
      partition: the partition (its directory ``p<partition>`` is created if missing).
      seq: the chunk's sequence number (increasing; the file must not exist yet).
      x: (n, R, ...) inputs; y: (n, R, ...) targets; ids: (n, R) integer record ids.

    Returns:
      The path of the new file.

    Raises:
      ValueError: if the shapes disagree or ``ids`` is not integer.
      FileExistsError: if chunk ``seq`` of ``partition`` exists (files are never changed).

    Example:
      >>> import tempfile, numpy as np
      >>> d = tempfile.mkdtemp()
      >>> path = write_npz_chunk(d, 0, 0, np.zeros((2, 1, 3)), np.zeros((2, 1)), np.array([[0], [1]]))
      >>> os.path.relpath(path, d)
      'p0/00000000.npz'
    """
    who = "write_npz_chunk"
    partition = checks.non_negative_int(who, "partition", partition)
    seq = checks.non_negative_int(who, "seq", seq)
    x, y, ids = np.asarray(x), np.asarray(y), np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{who}: argument 'ids' must be (n, rows) integers; got shape {ids.shape} dtype {ids.dtype}")
    for name, a in (("x", x), ("y", y)):
        if a.shape[:2] != ids.shape:
            raise ValueError(f"{who}: argument {name!r} must have shape (n, rows, ...) = {ids.shape} + ...; got {a.shape}")
    final = _chunk_path(path, partition, seq)
    if os.path.exists(final):
        raise FileExistsError(f"{who}: {final} exists; chunks are append-only, write seq > {seq}")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, x=x, y=y, ids=ids.astype(np.int64))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


class DirectoryStream:
    """Reads ``<path>/p<partition>/<seq>.npz`` chunks in order (see the module docstring).

    Args:
      path: the stream's directory (it must exist).
      partitions: the partitions this source serves (default: all).
      follow: wait for new files instead of ending.
      poll_s: seconds between two looks at the directory while waiting.
      num_partitions: P (default: the number of ``p<k>`` directories, which must then be
        ``p0 … p{P-1}``; give it when producers have not created them all yet).
      timeout_s: with ``follow``, end after this long without a new step (``None``: never).
      sleep, clock: ``time.sleep`` and ``time.monotonic`` by default.

    Each :meth:`next` gives ``Batch(x (B_local, ...), y (B_local, ...), ids (B_local,)
    int64)`` with one step of every served partition, in partition order.

    Raises:
      FileNotFoundError: if ``path`` is not a directory.
      ValueError: on a bad argument, or ``p<k>`` directories that do not match
        ``num_partitions``.

    Example:
      >>> import tempfile, numpy as np
      >>> d = tempfile.mkdtemp()
      >>> for p in (0, 1):
      ...     _ = write_npz_chunk(d, p, 0, np.ones((3, 2, 4)), np.zeros((3, 2)), np.arange(6).reshape(3, 2))
      >>> stream = DirectoryStream(d)
      >>> batch = stream.next()
      >>> batch.x.shape, batch.ids.tolist(), stream.offsets()
      ((4, 4), [0, 1, 0, 1], {0: [0, 1], 1: [0, 1]})
    """

    def __init__(
        self,
        path,
        partitions=None,
        follow: bool = False,
        poll_s: float = 1.0,
        *,
        num_partitions: int | None = None,
        timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        who = "DirectoryStream"
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{who}: argument 'path' must be an existing directory; got {path!r}")
        self.path = path
        found = sorted(int(m.group(1)) for name in os.listdir(path) if (m := _PARTITION.match(name)))
        if num_partitions is None:
            if not found or found != list(range(len(found))):
                raise ValueError(
                    f"{who}: cannot infer num_partitions from {path}: it has partition directories "
                    f"{['p' + str(k) for k in found]}, not p0 … p<P-1>; pass num_partitions"
                )
            num_partitions = len(found)
        self.num_partitions = checks.positive_int(who, "num_partitions", num_partitions)
        if found and found[-1] >= self.num_partitions:
            raise ValueError(
                f"{who}: {path} has a directory p{found[-1]}, but num_partitions is {self.num_partitions}"
            )
        self.partitions = served_partitions(who, partitions, self.num_partitions)
        self.follow = checks.boolean(who, "follow", follow)
        self.poll_s = checks.number(who, "poll_s", poll_s, low=0.0)
        self.timeout_s = None if timeout_s is None else checks.number(who, "timeout_s", timeout_s, low=0.0)
        if not callable(sleep) or not callable(clock):
            raise checks.ArgumentTypeError(f"{who}: arguments 'sleep' and 'clock' must be callable")
        self._sleep, self._clock = sleep, clock
        self._pos = {p: (-1, 0) for p in self.partitions}
        self._loaded: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # partition -> seq -> arrays
        self._layout: tuple | None = None  # (rows, x shape[2:], x dtype, y shape[2:], y dtype, file)

    # ---- files ----------------------------------------------------------------------------
    def _seqs(self, partition: int) -> list[int]:
        directory = os.path.join(self.path, f"p{partition}")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        seqs = []
        for name in names:
            if not name.endswith(".npz"):
                continue  # *.tmp (being written) and anything else
            m = _FILE.match(name)
            if m is None:
                raise ValueError(
                    f"DirectoryStream: {os.path.join(directory, name)} is not named <seq>.npz (e.g. 00000012.npz); "
                    "rename or remove it"
                )
            seqs.append(int(m.group(1)))
        return sorted(seqs)

    def _file(self, partition: int, seq: int) -> dict[str, np.ndarray]:
        files = self._loaded.setdefault(partition, {})
        if seq in files:
            return files[seq]
        path = _chunk_path(self.path, partition, seq)
        try:
            # our own file object: np.load leaves its file open when a truncated zip fails
            with open(path, "rb") as fh:
                loaded = np.load(fh, allow_pickle=False)
                if not isinstance(loaded, np.lib.npyio.NpzFile):
                    raise ValueError("it is a single .npy array, not an .npz archive of x, y and ids")
                with loaded as f:
                    missing = [k for k in _KEYS if k not in f.files]
                    arrays = {k: f[k] for k in _KEYS if k in f.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"DirectoryStream: {path} is missing (a file the stream needs)") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"DirectoryStream: cannot read {path}: {type(e).__name__}: {e}") from None
        if missing:
            raise ValueError(f"DirectoryStream: {path} lacks the key(s) {missing}; a chunk holds x, y and ids")
        self._check(path, arrays)
        # keep the file being read and the next one (looked at while waiting): drop those passed
        for passed in [s for s in files if s < self._pos[partition][0]]:
            del files[passed]
        files[seq] = arrays
        return arrays

    def _check(self, path: str, arrays: dict[str, np.ndarray]) -> None:
        x, y, ids = arrays["x"], arrays["y"], arrays["ids"]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"DirectoryStream: {path}: 'ids' must be (n, rows) integers; got {ids.shape} {ids.dtype}")
        for name, a in (("x", x), ("y", y)):
            if a.shape[:2] != ids.shape:
                raise ValueError(f"DirectoryStream: {path}: {name!r} must have shape {ids.shape} + ...; got {a.shape}")
        layout = (ids.shape[1], x.shape[2:], x.dtype, y.shape[2:], y.dtype)
        if self._layout is None:
            self._layout = (*layout, path)
        elif layout != self._layout[:5]:
            names = ("rows", "x shape[2:]", "x dtype", "y shape[2:]", "y dtype")
            diff = [f"{n} {got} (not {want})" for n, got, want in zip(names, layout, self._layout) if got != want]
            raise ValueError(
                f"DirectoryStream: {path} has {', '.join(diff)}, unlike {self._layout[5]}; every chunk of a stream "
                "has the same rows per partition, trailing shapes and dtypes"
            )

    def _peek(self, partition: int) -> tuple[int, int] | None:
        """(seq, index) of the partition's next step, or None if no complete file has it."""
        seq, index = self._pos[partition]
        if seq >= 0 and index < self._file(partition, seq)["ids"].shape[0]:
            return seq, index
        for s in self._seqs(partition):
            if s > seq and self._file(partition, s)["ids"].shape[0] > 0:
                return s, 0
        return None

    # ---- the source -------------------------------------------------------------------------
    def next(self) -> Batch:
        """One step of every served partition; waits with ``follow``.

        Raises:
          StopIteration: at the end (no offset moved).
          ValueError, FileNotFoundError: on a malformed or missing file (named).
        """
        start = self._clock()
        while True:
            ready = {p: self._peek(p) for p in self.partitions}
            if all(r is not None for r in ready.values()):
                break
            timed_out = self.timeout_s is not None and self._clock() - start >= self.timeout_s
            if not self.follow or timed_out:
                waiting = [p for p, r in ready.items() if r is not None]
                if waiting:
                    warnings.warn(
                        f"DirectoryStream: the stream ends: partitions {[p for p in ready if ready[p] is None]} of "
                        f"{self.path} have no more complete files, while {waiting} still have steps, which are not read",
                        UserWarning,
                        stacklevel=2,
                    )
                raise StopIteration
            self._sleep(self.poll_s)
        xs, ys, ids = [], [], []
        for p in self.partitions:
            seq, index = ready[p]
            arrays = self._file(p, seq)
            xs.append(arrays["x"][index])
            ys.append(arrays["y"][index])
            ids.append(arrays["ids"][index].astype(np.int64))
            self._pos[p] = (seq, index + 1)
        return Batch(np.concatenate(xs), np.concatenate(ys), np.concatenate(ids))

    def offsets(self) -> dict[int, list[int]]:
        """``{partition: [file_seq, index]}``."""
        return {p: [seq, index] for p, (seq, index) in self._pos.items()}

    def seek(self, offsets) -> None:
        """Moves every served partition to its ``[file_seq, index]``.

        Raises:
          ValueError: on a malformed offset or an index past the file's steps.
          FileNotFoundError: if the file an offset points into is missing (named).
        """
        who = "DirectoryStream.seek"
        wanted = offsets_for(who, offsets, self.partitions)
        for p, off in wanted.items():
            ints = isinstance(off, list | tuple) and len(off) == 2
            ints = ints and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in off)
            if not ints or off[0] < -1 or off[1] < 0 or (off[0] == -1 and off[1] != 0):
                raise ValueError(
                    f"{who}: partition {p}'s offset must be [file_seq, index] with ints file_seq >= 0 and index >= 0, "
                    f"or [-1, 0] before the first file; got {off!r}"
                )
            seq, index = int(off[0]), int(off[1])
            if seq < 0:
                continue
            path = _chunk_path(self.path, p, seq)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{who}: partition {p}'s offset {list(off)} points into {path}, which is missing; the stream "
                    "cannot resume there (restore the file, or start a new run)"
                )
            n = self._file(p, seq)["ids"].shape[0]
            if index > n:
                raise ValueError(f"{who}: partition {p}'s offset {list(off)} is past the {n} steps of {path}")
        self._pos = {p: (int(off[0]), int(off[1])) for p, off in wanted.items()}
        for p, (seq, _) in self._pos.items():  # forget files before the new positions
            self._loaded[p] = {s: a for s, a in self._loaded.get(p, {}).items() if s >= seq}

    def fingerprint(self) -> str:
        """The directory's name and P (not its full path, so a moved directory resumes)."""
        return fingerprint_of(
            "DirectoryStream", directory=os.path.basename(os.path.abspath(self.path)), num_partitions=self.num_partitions
        )

    def close(self) -> None:
        self._loaded.clear()

    def __repr__(self) -> str:
        return (
            f"DirectoryStream({self.path!r}, partitions={list(self.partitions)}, num_partitions={self.num_partitions}, "
            f"follow={self.follow})"
        )
