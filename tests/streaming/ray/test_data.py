"""``RayDataStream`` on the session's local cluster: per-partition datasets read in order,
``seek(offsets())`` reproduces the next batches bitwise, a run over it has an exactly-once
ledger and resumes, and a config with ``stream.source: ray_data`` reads Parquet folders."""

import numpy as np
import pytest

from disttrace.streaming import Ledger, run_worker
from tests.streaming._counting_run import build_trainer

pytestmark = [
    pytest.mark.ray,
    # Ray Data (2.60) opens a log file per dataset execution and leaves it to the garbage
    # collector when an iteration is abandoned (a seek restarts it): its warning, not ours
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

N, R = 24, 2  # rows per partition, rows per partition per step


def _rows(p: int):
    rng = np.random.default_rng(p)
    return [{"x": rng.normal(size=4).astype(np.float32), "y": rng.normal(size=2).astype(np.float32)} for _ in range(N)]


def _datasets(ray):
    return {p: ray.data.from_items(_rows(p)) for p in range(2)}


def test_in_order_and_seek_reproduces_the_next_batches(ray_cluster):
    from disttrace.streaming.ray import RayDataStream

    stream = RayDataStream(_datasets(ray_cluster), batch_size=2 * R, name="two")
    first = [stream.next() for _ in range(3)]
    rows = _rows(0)
    np.testing.assert_array_equal(first[0].x[:R], np.stack([r["x"] for r in rows[:R]]))  # partition 0, in order
    assert first[2].ids.tolist() == [4, 5, 4, 5]
    offsets = stream.offsets()
    assert offsets == {0: 6, 1: 6}
    ahead = [stream.next() for _ in range(2)]
    again = RayDataStream(_datasets(ray_cluster), batch_size=2 * R, name="two")
    again.seek(offsets)
    for want in ahead:
        got = again.next()
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.y, want.y)
        np.testing.assert_array_equal(got.ids, want.ids)
    with pytest.raises(ValueError, match=r"offset must be a multiple of the rows per partition \(2\)"):
        again.seek({0: 3, 1: 4})
    with pytest.raises(ValueError, match=r"no dataset for the served partitions \[1\]"):
        RayDataStream({0: _datasets(ray_cluster)[0]}, batch_size=4, num_partitions=2)


def test_a_run_is_exactly_once_and_resumes(ray_cluster, tmp_path):
    from disttrace.checkpoint import Checkpointer
    from disttrace.streaming.ray import RayDataStream

    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        stream = RayDataStream(_datasets(ray_cluster), batch_size=2 * R)
        first = run_worker(build_trainer(), stream, ckpt, checkpoint_every=3, max_steps=6, log_every=None)
        assert first.steps == 6 and first.offsets == {0: 12, 1: 12}
        stream = RayDataStream(_datasets(ray_cluster), batch_size=2 * R)
        rest = run_worker(build_trainer(), stream, ckpt, checkpoint_every=3, log_every=None)
    assert rest.resumed_from is not None and rest.reason == "end" and rest.steps == N // R
    assert rest.ledger == Ledger.exactly_once([0, 1], N)


@pytest.mark.usefixtures("optax_promotion")  # Adam under strict promotion (tests/conftest.py)
def test_a_config_reads_parquet_folders(ray_cluster, tmp_path, capsys):
    from disttrace import config
    from disttrace.jobs import run_stream

    for p, ds in _datasets(ray_cluster).items():
        ds.repartition(1).write_parquet(str(tmp_path / "data" / f"p{p}"))
    cfg = config.load(None, [
        "stream.mode=local", "stream.source=ray_data", f"stream.directory={tmp_path / 'data'}",
        "stream.num_partitions=2", "task.name=counting", "loss=mse", "batch_size=4", "log_every=4",
        f"checkpoint.directory={tmp_path / 'ckpt'}",
    ])
    result, accuracy = run_stream(cfg)
    assert result.reason == "end" and result.steps == N // R and accuracy is None
    assert result.ledger == Ledger.exactly_once([0, 1], N)
