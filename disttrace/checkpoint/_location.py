"""Where a checkpoint directory lives: a local path or a URL.

A local path is made absolute, so that a later ``os.chdir`` cannot move the checkpoints.
A URL (``scheme://…``: ``gs://bucket/run``, ``s3://…``) is passed to Orbax unchanged:
``os.path.abspath`` would turn ``gs://b/x`` into ``<cwd>/gs:/b/x``. Orbax reaches URLs
through ``etils.epath`` (which needs the matching backend installed, e.g. ``gcsfs``).

Example:
  >>> from disttrace.checkpoint._location import is_url, normalise_directory
  >>> normalise_directory("gs://bucket/run")
  'gs://bucket/run'
  >>> is_url("gs://bucket/run"), is_url("/tmp/run"), is_url("C:/runs")
  (True, False, False)
"""

from __future__ import annotations

import os
import re

from disttrace import checks

__all__ = ["is_url", "normalise_directory"]

# RFC 3986 scheme, then "://": a Windows drive ("C:/x") or a relative "a:b" is not a URL
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(directory: str) -> bool:
    """Whether ``directory`` is a URL (``scheme://…``) rather than a local path."""
    return bool(_URL.match(directory))


def normalise_directory(directory) -> str:
    """The directory as Orbax should get it: a URL unchanged, a local path absolute.

    Args:
      directory: a ``str`` or ``os.PathLike`` (``pathlib.Path``, ``etils.epath.Path``).

    Returns:
      The URL as given, or the absolute local path.

    Raises:
      ArgumentTypeError: if ``directory`` is not a ``str`` or path-like object.
      ValueError: if it is empty.
    """
    if not isinstance(directory, str | os.PathLike):
        raise checks.ArgumentTypeError(
            f"Checkpointer: argument 'directory' must be a str or os.PathLike (a local path or a 'scheme://' URL); "
            f"got {directory!r} ({type(directory).__name__})"
        )
    text = os.fspath(directory)
    if not isinstance(text, str) or not text:
        raise ValueError(f"Checkpointer: argument 'directory' must be a non-empty path or URL; got {directory!r}")
    return text if is_url(text) else os.path.abspath(text)
