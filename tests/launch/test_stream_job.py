"""The stream job of ``launch.train`` / ``disttrace`` (a config with a ``stream`` section),
in local mode (no Ray), and the checks made before any Ray cluster starts.

- a counting stream runs, writes its JSONL metrics (progress lines and events), and a
  rerun resumes to an exactly-once ledger;
- an evidence-accumulation stream reports held-out accuracy;
- a checkpoint of another ``num_partitions``, model or source is refused with exit 2,
  naming both values and the checkpoint;
- the sync and async cross-field errors name every number involved;
- the TPU-slice placement gives worker r bundle r.
"""

import json

import pytest

from disttrace import config
from disttrace.checkpoint import Checkpointer
from disttrace.streaming import Ledger
from launch.train import cli

pytestmark = pytest.mark.usefixtures("optax_promotion")  # Adam under strict promotion (tests/conftest.py)

COUNTING = ["--set", "stream.mode=local", "--set", "task.name=counting", "--set", "task.n_records=80",
            "--set", "loss=mse", "--set", "batch_size=8", "--set", "stream.num_partitions=2",
            "--set", "log_every=5", "--set", "checkpoint.every=5", "--set", "model.n_rec=8"]


def _counting(tmp_path, *more):
    return [*COUNTING, "--set", f"checkpoint.directory={tmp_path / 'ckpt'}",
            "--set", f"stream.metrics_file={tmp_path / 'metrics.jsonl'}", *more]


def test_a_local_counting_stream_writes_metrics_and_resumes_exactly_once(tmp_path, capsys):
    assert cli(_counting(tmp_path, "--set", "steps=10")) == 0
    out = capsys.readouterr().out
    assert "step 10  records 80  loss" in out and "done: mode local  reason max_steps  steps 10  records 80" in out
    assert cli(_counting(tmp_path, "--set", "steps=100")) == 0  # resumes at 10, runs to the stream's end (20)
    out = capsys.readouterr().out
    assert "resuming from step 10" in out and "reason end  steps 20  records 160  checkpoint 20" in out
    with Checkpointer(tmp_path / "ckpt", read_only=True) as reader:
        assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([0, 1], 80)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    progress = [r for r in records if "event" not in r]
    assert [r["step"] for r in progress] == [5, 10, 15, 20]
    assert {"loss", "records", "records_per_s", "restarts"} <= set(progress[0])
    events = [r["event"] for r in records if "event" in r]
    assert events.count("resume") == 1 and events.count("stop") == 2 and events.count("final") == 2
    assert "checkpoint" in events


def test_an_evidence_stream_reports_held_out_accuracy(tmp_path, capsys):
    args = ["--set", "stream.mode=local", "--set", "task.n_cues=1", "--set", "task.delay=2", "--set", "steps=40",
            "--set", "batch_size=8", "--set", "model.n_rec=16", "--set", "log_every=20", "--set", "eval_batch=16",
            "--set", f"stream.metrics_file={tmp_path / 'm.jsonl'}"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "step 20  records 160  loss" in out and "accuracy" in out.split("step 20", 1)[1].splitlines()[0]
    assert "held-out accuracy:" in out
    final = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert final["event"] == "final" and 0.0 <= final["accuracy"] <= 1.0


def test_a_checkpoint_of_other_partitions_or_model_is_refused_before_ray(tmp_path, capsys):
    assert cli(_counting(tmp_path, "--set", "steps=5")) == 0
    capsys.readouterr()
    assert cli(_counting(tmp_path, "--set", "steps=10", "--set", "stream.num_partitions=4")) == 2
    err = capsys.readouterr().err
    assert "config key 'stream.num_partitions': is 4, but the checkpoint at step 5 in" in err
    assert "written with num_partitions 2" in err and str(tmp_path / "ckpt") in err
    assert cli(_counting(tmp_path, "--set", "steps=10", "--set", "model.n_rec=12")) == 2
    err = capsys.readouterr().err
    assert "holds the state of another run: it was written with model" in err and "'n_rec': 8" in err
    assert cli(_counting(tmp_path, "--set", "steps=10", "--set", "seed=3")) == 2
    assert "config key 'stream.source': the checkpoint at step 5" in capsys.readouterr().err
    assert cli(_counting(tmp_path, "--restore-step", "5")) == 2
    assert "'restore_step': applies to trial runs" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "message"), [
    (["stream.mode=sync", "stream.num_workers=2", "stream.num_partitions=4", "batch_size=30"],
     "'batch_size': 30 must be divisible by stream.num_partitions (4) and by the global device count "
     "(num_workers * devices_per_worker = 2 * 1 = 2) (num_partitions 4 is a multiple of num_workers 2); "
     "e.g. batch_size 28 or 32"),
    (["stream.mode=sync", "stream.num_workers=2", "stream.num_partitions=3"],
     "'stream.num_partitions': must be a multiple of num_workers (2), so that every worker serves as many "
     "partitions; got 3 (e.g. 2 or 4)"),
    (["stream.mode=async", "stream.num_workers=2", "stream.average_every=20", "checkpoint.every=30"],
     "'checkpoint.every': 30 must be a multiple of stream.average_every (20) in async mode"),
    (["stream.mode=async", "stream.num_workers=2", "stream.average_every=20", "stream.checkpoint_every=50"],
     "'stream.checkpoint_every': 50 must be a multiple of stream.average_every (20)"),
    (["stream.mode=local", "stream.num_workers=2"], "'stream.num_workers': must be 1 in mode 'local'"),
    (["stream.mode=local", "stream.source=directory"], "'stream.directory': must be set for source 'directory'"),
    (["stream.mode=async", "stream.num_workers=2", "stream.tpu_slice={topology: 2x2}"],
     "'stream.tpu_slice': needs keys ['accelerator_version', 'topology']; missing ['accelerator_version']"),
    (["task.name=counting"], "'task.name': 'counting' is a stream, not a trial task"),
    (["stream.workers=2"], "'stream.workers': unknown key; allowed keys of section 'stream': ['address',"),
])
def test_stream_config_errors_name_the_values(overrides, message, capsys):
    with pytest.raises(config.ConfigError) as e:
        config.load(None, overrides)
    assert message in str(e.value)
    assert cli([f"--set={o}" for o in overrides]) == 2
    assert message in capsys.readouterr().err


def test_sync_and_async_need_a_checkpoint_directory(capsys):
    assert cli(["--set", "stream.mode=async", "--set", "stream.num_workers=2", "--set", "steps=20"]) == 2
    assert "'checkpoint.directory': must be set in mode 'async'" in capsys.readouterr().err


def test_an_unreachable_address_is_a_config_error_within_10_s(capsys):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert cli(["--set", "stream.mode=async", "--set", "stream.num_workers=2", "--set", "steps=20",
                "--set", "checkpoint.directory=unused", "--set", f"stream.address=127.0.0.1:{port}"]) == 2
    assert time.monotonic() - started < 10
    assert f"config key 'stream.address': Ray address '127.0.0.1:{port}' is not reachable" in capsys.readouterr().err


def test_a_directory_stream_from_the_config(tmp_path, capsys):
    import numpy as np

    from disttrace.streaming import write_npz_chunk

    for p in range(2):  # 2 files of 3 steps per partition, 4 rows each, records 0..23
        for seq in range(2):
            x = np.random.default_rng(p * 10 + seq).normal(size=(3, 4, 4)).astype(np.float32)
            ids = np.arange(seq * 12, seq * 12 + 12, dtype=np.int64).reshape(3, 4)
            write_npz_chunk(tmp_path / "data", p, seq, x, x[..., :2] * 0.5, ids)
    args = ["--set", "stream.mode=local", "--set", "stream.source=directory", "--set", f"stream.directory={tmp_path / 'data'}",
            "--set", "stream.num_partitions=2", "--set", "task.name=counting", "--set", "loss=mse",
            "--set", "batch_size=8", "--set", "log_every=3", "--set", f"checkpoint.directory={tmp_path / 'ckpt'}"]
    assert cli(args) == 0
    assert "reason end  steps 6  records 48" in capsys.readouterr().out
    with Checkpointer(tmp_path / "ckpt", read_only=True) as reader:
        assert Ledger.from_json(reader.meta()["stream"]["ledger"]) == Ledger.exactly_once([0, 1], 24)
    missing = [a.replace(str(tmp_path / "data"), str(tmp_path / "nowhere")) for a in args]
    assert cli([*missing[:-2], "--set", f"checkpoint.directory={tmp_path / 'other'}"]) == 2
    assert "config key 'stream.directory': DirectoryStream: argument 'path' must be an existing directory" in (
        capsys.readouterr().err)


def test_stream_fields_are_flags_even_when_the_config_has_no_stream(tmp_path, capsys):
    assert cli(["--stream.mode", "local", "--task.name", "counting", "--loss", "mse", "--steps", "3",
                "--task.n_records", "96", "--log_every", "3"]) == 0
    assert "done: mode local  reason max_steps  steps 3  records 96" in capsys.readouterr().out


def test_the_disttrace_console_script_is_the_same_command(capsys):
    from disttrace.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "stream" in capsys.readouterr().out
    assert main(["--config", "no/such/file.yaml"]) == 2
    assert "config file 'no/such/file.yaml' not found" in capsys.readouterr().err


def test_a_tpu_slice_places_worker_r_on_bundle_r():
    from ray.util.placement_group import PlacementGroup

    from disttrace.streaming.ray import WorkerSpec, worker_options
    from disttrace.streaming.ray._placement import placed_options

    spec = WorkerSpec(mode="async", num_workers=4, tpu_slice={"topology": "4x4", "accelerator_version": "v4"})
    base = worker_options(spec)
    assert base["runtime_env"]["env_vars"] == {"XLA_FLAGS": ""}  # the TPU's devices, not fake CPU ones
    group = PlacementGroup.empty()
    placed = placed_options(base, group, num_workers=4, num_bundles=4, chips_per_host=4)
    assert [o["scheduling_strategy"].placement_group_bundle_index for o in placed] == [0, 1, 2, 3]
    assert all(o["resources"] == {"TPU": 4} and "num_cpus" not in o for o in placed)
    with pytest.raises(ValueError, match="the slice has 4 hosts.*set stream.num_workers to 4, got 2"):
        placed_options(base, group, num_workers=2, num_bundles=4, chips_per_host=4)


@pytest.mark.parametrize(("task", "more", "line"), [
    ("delayed_match", ["task.delay=2", "task.stim_len=2", "task.response=2"], "held-out accuracy: "),
    ("copy", ["task.memory_length=2"], "held-out accuracy: "),
    ("integrator", ["task.length=8", "loss=mse"], "held-out mse: "),
    ("drifting", ["task.switch_every=4"], "held-out accuracy: "),
], ids=["delayed_match", "copy", "integrator", "drifting"])
def test_every_built_in_task_runs_as_trials_and_as_a_stream(task, more, line, capsys):
    common = ["--set", f"task.name={task}", *[a for m in more for a in ("--set", m)], "--set", "batch_size=4",
              "--set", "model.name=leaky_rate", "--set", "model.n_rec=8", "--set", "eval_batch=4"]
    assert cli([*common, "--set", "steps=2", "--set", "log_every=1"]) == 0  # trials
    out = capsys.readouterr().out
    assert f"on {task} (T=" in out and line in out
    assert cli([*common, "--set", "stream.mode=local", "--set", "steps=16", "--set", "log_every=8"]) == 0
    out = capsys.readouterr().out
    assert f"on the {task} stream" in out and "done: mode local  reason max_steps  steps 16  records 64" in out
    assert line in out
