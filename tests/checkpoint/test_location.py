"""URL directories: ``scheme://…`` goes to Orbax unchanged (``os.path.abspath`` used to turn
``gs://b/x`` into ``<cwd>/gs:/b/x``); local paths are still made absolute. Nothing here
touches a network: the normalising function is tested directly."""

import os
import pathlib

import pytest
from etils import epath

from disttrace.checkpoint import Checkpointer
from disttrace.checkpoint._location import is_url, normalise_directory
from disttrace.checks import ArgumentTypeError


@pytest.mark.parametrize("url", ["gs://b/x", "s3://bucket/run/ckpt", "gs://b", "hdfs://namenode:8020/a/b", "file:///tmp/x"])
def test_urls_pass_unchanged(url):
    assert is_url(url)
    assert normalise_directory(url) == url
    if url.startswith(("gs://", "s3://")):  # the schemes etils.epath knows
        assert normalise_directory(epath.Path(url)) == url  # an epath.Path of a URL keeps its scheme


@pytest.mark.parametrize("path", ["run/ckpt", "./x", "gs:/b/x", "C:/runs", "a:b"])
def test_local_paths_become_absolute(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_url(path)
    assert normalise_directory(path) == os.path.join(str(tmp_path), os.path.normpath(path))
    assert normalise_directory(pathlib.Path(path)) == normalise_directory(path)


def test_checkpointer_keeps_a_local_directory_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("ckpt") as ckpt:
        assert ckpt.directory == str(tmp_path / "ckpt")
    with Checkpointer(pathlib.Path("ckpt"), read_only=True) as ckpt:
        assert ckpt.directory == str(tmp_path / "ckpt")


@pytest.mark.parametrize("bad", [None, 3, b"/tmp/x", ""])
def test_a_bad_directory_names_the_argument(bad):
    with pytest.raises(ValueError, match="'directory'") as err:
        normalise_directory(bad)
    assert isinstance(err.value, ArgumentTypeError) == (not isinstance(bad, str))
