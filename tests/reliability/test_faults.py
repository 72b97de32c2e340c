"""Faults other than a kill: a non-finite loss, a full disk, a read-only run directory, half-written files.

Each one ends with a clear one-line message and a recorded status, and the previous checkpoint stays
intact and loadable; the run can then be resumed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_support import (
    TINY_TEACHER,
    assert_one_line_error,
    cli,
    launch,
    only_run,
    pause_env,
    temporaries,
    wait_for_pause,
)
from safetensors.torch import load_file

import core
from core.checkpoint import TRAINER_STATE, CheckpointError, load_trainer_state, read_header
from core.config import build_config
from core.io import WriteError, read_jsonl
from core.methods import get_method
from core.runs import Run
from core.training.engine import NonFiniteLoss, train

TINY = dict(method="teacher", data="synthetic", arch="resnet-tiny", image_size=32, epochs=2, batch_size=8, num_workers=0,
            max_train_samples=48, max_eval_samples=24, log_every=2)  # 6 steps per epoch


def _config(tmp_path: Path, **overrides):
    return build_config(**{**TINY, "runs_dir": str(tmp_path / "runs"), **overrides})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(path)).values() if t.is_floating_point())


# ------------------------------------------------------------------------------------ NaN / Inf


@pytest.fixture()
def poisoned_loss(monkeypatch):
    """``poison({call numbers}, value)``: the teacher's loss becomes ``value`` (NaN, Inf) at those training steps."""
    method = get_method("teacher")  # the class: every run's instance gets the poisoned loss
    original = method.loss

    def poison(calls: set[int] | None, value: float = float("nan")) -> None:
        seen = {"n": 0}

        def loss(self, model, images, labels):
            seen["n"] += 1
            total, terms = original(self, model, images, labels)
            if calls is None or seen["n"] in calls:
                total = total * value
            return total, terms

        monkeypatch.setattr(method, "loss", loss)

    return poison


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_benchmark, tmp_path, poisoned_loss, value):
    poisoned_loss({9}, value)  # epoch 2, step 3
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 2 step 3: .*last good checkpoint \(epoch 1\) is kept"):
        train(_config(tmp_path), progress=False)
    run = Run(only_run(tmp_path / "runs"))
    status = run.status()
    assert status["status"] == "failed" and "non-finite loss at epoch 2 step 3" in status["error"]
    assert read_header(run.last_checkpoint)["metrics"]["epoch"] == 1 and _all_finite(run.last_checkpoint)
    assert load_trainer_state(run.dir / TRAINER_STATE)["epoch"] == 1
    assert [r["epoch"] for r in run.metrics("epoch")] == [0] and not run.metrics("test")
    core.load_model(run.dir)


def test_nonfinite_loss_through_the_cli_is_one_line(tiny_benchmark, tmp_path, poisoned_loss, capsys):
    poisoned_loss({2})
    code, _, err = cli(["train", "--method", "teacher", *TINY_TEACHER, "--epochs", "1", "--runs-dir", str(tmp_path / "runs")],
                       capsys)
    assert_one_line_error(code, err, "non-finite loss at epoch 1 step 2: the run stopped; no epoch had finished")


def test_nonfinite_skip_skips_the_update_and_counts_it(tiny_benchmark, tmp_path, poisoned_loss):
    poisoned_loss({3, 9})
    result = train(_config(tmp_path, nonfinite="skip"), progress=False)
    run = Run(result.run_dir)
    assert run.status()["status"] == "finished"
    assert [r["nonfinite_skipped"] for r in run.metrics("epoch")] == [1, 1]
    assert _all_finite(run.best_checkpoint) and _all_finite(run.last_checkpoint)
    assert all(np.isfinite(r["train_loss"]) for r in run.metrics("epoch"))


def test_nonfinite_skip_still_stops_after_too_many_in_a_row(tiny_benchmark, tmp_path, poisoned_loss):
    poisoned_loss(set(range(4, 100)))  # every step from epoch 1 step 4
    with pytest.raises(NonFiniteLoss, match=r"4 steps in a row \(the last at epoch 2 step 1\).*checkpoint \(epoch 1\) is kept"):
        train(_config(tmp_path, nonfinite="skip", nonfinite_max_skips=3), progress=False)
    run = Run(only_run(tmp_path / "runs"))
    assert run.status()["status"] == "failed" and _all_finite(run.last_checkpoint)
    assert run.metrics("epoch")[0]["nonfinite_skipped"] == 3


def test_nonfinite_option_is_checked(tiny_benchmark, tmp_path):
    from core.cli import build_parser
    from core.training.requests import train_config

    args = build_parser().parse_args(["train", "--data", "synthetic", "--nonfinite", "skip"])
    assert train_config(args).nonfinite == "skip" and train_config(build_parser().parse_args(["train"])).nonfinite == "stop"
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        train(_config(tmp_path / "bad", nonfinite="ignore"), progress=False)
    assert not (tmp_path / "bad").exists()


def test_zero_variance_filters_give_no_nan_in_the_correlation_loss():
    from core.methods.pearson import correlation_loss
    from core.models.masked import MaskedResNet
    from core.pruning import pearson_correlation, redundancy_scores

    torch.manual_seed(0)
    student = MaskedResNet("resnet-tiny")
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[0] > 1]
    with torch.no_grad():
        convs[1].weight[0].zero_()  # a zero filter
        convs[2].weight[3].fill_(0.5)  # a constant filter
        convs[3].weight.zero_()  # a whole layer of zeros
    _, keep_probability = student.sampler()
    loss = correlation_loss(student, keep_probability)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)

    weight = torch.randn(6, 3, 3, 3, requires_grad=True)
    constant = weight * torch.tensor([1.0, 0, 1, 1, 1, 1]).view(6, 1, 1, 1)  # filter 1 is all zeros
    scores = redundancy_scores(constant)
    scores.sum().backward()
    assert torch.isfinite(scores).all() and scores[1] == 0 and torch.isfinite(weight.grad).all()
    rho = pearson_correlation(constant.detach())
    assert torch.isfinite(rho).all() and rho[1].abs().sum() == 0


# ------------------------------------------------------------------------------------ disk full, read-only


def _fail_second_write_of(monkeypatch, name: str, error_number: int) -> dict:
    """Make the rename of ``name`` fail with ``error_number`` once it exists (the second epoch's write)."""
    real_replace = os.replace
    kept = {}

    def replace(source, target, *args, **kwargs):
        target = Path(target)
        if target.name == name and target.exists():
            kept["digest"] = _digest(target)
            raise OSError(error_number, os.strerror(error_number))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return kept


def test_disk_full_fails_the_run_clearly_and_keeps_the_previous_checkpoint(tiny_benchmark, tmp_path, monkeypatch):
    kept = _fail_second_write_of(monkeypatch, "last.safetensors", errno.ENOSPC)
    with pytest.raises(WriteError, match=r"cannot write .*last.safetensors: No space left on device; .*--resume") as failed:
        train(_config(tmp_path), progress=False)
    assert failed.value.errno == errno.ENOSPC
    run = Run(only_run(tmp_path / "runs"))
    status = run.status()
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert _digest(run.last_checkpoint) == kept["digest"], "the previous checkpoint is intact"
    assert read_header(run.last_checkpoint)["metrics"]["epoch"] == 1 and temporaries(run.dir) == []
    core.load_model(run.last_checkpoint)
    monkeypatch.undo()
    resumed = train(resume=run.dir, progress=False)
    assert resumed.status == "finished" and len(run.metrics("epoch")) == 2


def test_disk_full_through_the_cli_is_one_line(tiny_benchmark, tmp_path, monkeypatch, capsys):
    _fail_second_write_of(monkeypatch, "trainer_state.pt", errno.ENOSPC)
    code, _, err = cli(["train", *TINY_TEACHER, "--epochs", "2", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert_one_line_error(code, err, "trainer_state.pt: No space left on device")
    assert load_trainer_state(only_run(tmp_path / "runs") / TRAINER_STATE)["epoch"] == 1


def test_read_only_run_directory_fails_clearly(tiny_benchmark, tmp_path, monkeypatch):
    """EROFS from the file system (simulated: tests often run as root, which writes through chmod)."""
    import tempfile

    real_mkstemp = tempfile.mkstemp
    state = {"epochs_written": 0}

    def mkstemp(*args, prefix="", **kwargs):
        if prefix.startswith(".last.safetensors."):
            state["epochs_written"] += 1
            if state["epochs_written"] == 2:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(WriteError, match="last.safetensors: Read-only file system"):
        train(_config(tmp_path), progress=False)
    run = Run(only_run(tmp_path / "runs"))
    assert run.status()["status"] == "failed" and "Read-only file system" in run.status()["error"]
    assert read_header(run.last_checkpoint)["metrics"]["epoch"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555; the read-only tmpfs test covers root")
def test_read_only_run_directory_by_permissions(tiny_benchmark, tmp_path, monkeypatch):
    from core.training import engine

    real_save = engine.save_trainer_state

    def save_then_lock(path, state):
        real_save(path, state)
        os.chmod(Path(path).parent, 0o555)

    monkeypatch.setattr(engine, "save_trainer_state", save_then_lock)
    try:
        with pytest.raises(WriteError, match="Permission denied"):
            train(_config(tmp_path), progress=False)
        run = Run(only_run(tmp_path / "runs"))
        assert read_header(run.last_checkpoint)["metrics"]["epoch"] == 1
    finally:
        for path in (tmp_path / "runs").glob("*"):
            os.chmod(path, 0o755)


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 160 MB tmpfs (a real file system that can fill up or turn read-only); needs root and mount rights."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], capture_output=True)
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (2**20, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    return filler


def _run_until_epoch_2(runs_dir: Path, tmp_path: Path):
    ready = tmp_path / "paused"
    process = launch(["train", "--method", "teacher", *TINY_TEACHER, "--epochs", "2", "--runs-dir", str(runs_dir)],
                     pause_env("step@9", ready))
    wait_for_pause(process, ready)
    return process, ready


def test_real_full_disk(tiny_benchmark, tmp_path, small_filesystem, capsys):
    process, ready = _run_until_epoch_2(small_filesystem / "runs", tmp_path)
    run_dir = only_run(small_filesystem / "runs")
    before = _digest(run_dir / "last.safetensors")
    filler = _fill(small_filesystem)
    ready.unlink()  # go on, into a full disk
    _, err = process.communicate(timeout=300)
    assert_one_line_error(process.returncode, err, "No space left on device")
    assert "--resume" in err.strip().splitlines()[-1]
    status = Run(run_dir).status()
    assert status["status"] == "failed" and "No space left on device" in status["error"], status
    assert _digest(run_dir / "last.safetensors") == before and temporaries(run_dir) == []
    filler.unlink()
    code, _, err = cli(["train", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert Run(run_dir).status()["status"] == "finished"


def test_real_read_only_file_system(tiny_benchmark, tmp_path, small_filesystem, capsys):
    process, ready = _run_until_epoch_2(small_filesystem / "runs", tmp_path)
    run_dir = only_run(small_filesystem / "runs")
    before = _digest(run_dir / "last.safetensors")
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    ready.unlink()
    _, err = process.communicate(timeout=300)
    assert_one_line_error(process.returncode, err, "Read-only file system")
    # nothing can record the failure on a read-only file system: the dead process reads "interrupted"
    assert Run(run_dir).status()["status"] == "interrupted"
    assert _digest(run_dir / "last.safetensors") == before
    subprocess.run(["mount", "-o", "remount,rw", str(small_filesystem)], check=True)
    code, _, err = cli(["train", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert Run(run_dir).status()["status"] == "finished"


# ------------------------------------------------------------------------------------ half-written files


def test_half_written_files_are_never_read_as_valid(tiny_benchmark, tmp_path):
    from core.data.datasets import resolve_dataset
    from core.data.images import dataset_statistics

    run = Run(train(_config(tmp_path, epochs=1), progress=False).run_dir)
    # a checkpoint cut anywhere is refused, never loaded as a (wrong) model
    data = run.best_checkpoint.read_bytes()
    for cut in (4, 100, len(data) // 3, len(data) - 1):
        partial = tmp_path / f"cut-{cut}.safetensors"
        partial.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            core.load_model(partial)
    state = (run.dir / TRAINER_STATE).read_bytes()
    (tmp_path / "state.pt").write_bytes(state[: len(state) // 2])
    with pytest.raises(CheckpointError):
        load_trainer_state(tmp_path / "state.pt")
    # a torn last line of metrics.jsonl is skipped
    records = len(run.metrics())
    with open(run.metrics_path, "a") as handle:
        handle.write('{"type": "epoch", "epoch": 5, "val_acc')
    assert len(run.metrics()) == records
    # a damaged dataset-statistics cache entry is recomputed, not used
    samples = resolve_dataset("synthetic").split("train")
    stats = dataset_statistics(samples, 32, tmp_path / "cache", progress=False)
    (entry,) = (tmp_path / "cache").glob("statistics/*.json")
    entry.write_text('{"mean": [0.1, 0.2')
    assert dataset_statistics(samples, 32, tmp_path / "cache", progress=False) == stats
    # a damaged status.json reads "damaged", with the reason; a stray temporary of a killed write is never listed
    (run.dir / "status.json").write_text('{"status": "fini')
    assert run.status()["status"] == "damaged" and "status.json" in run.status()["error"]
    (run.dir / ".best.safetensors.abc123.tmp").write_bytes(data[:100])
    assert core.load_model(run.dir).header["metrics"]["epoch"] == 1
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_damaged_prediction_cache_is_recomputed(tiny_benchmark, tmp_path, capsys):
    run = train(_config(tmp_path, epochs=1), progress=False).run_dir
    code, out, err = cli(["evaluate", str(run), "--data", "synthetic:gan", "--json"], capsys)
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    cache = Path(os.environ["CORE_CACHE_DIR"]) / "predictions"
    for entry in cache.glob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:50])
    code, out, err = cli(["evaluate", str(run), "--data", "synthetic:gan", "--json"], capsys)
    assert code == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["accuracy"] == first["accuracy"] and again["auc"] == first["auc"]


# ------------------------------------------------------------------------------------ a damaged run in the dashboard


def test_corrupted_run_directories_are_reported_not_crashing_the_dashboard(tiny_benchmark, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.catalog import run_rows
    from core.runs import list_runs

    runs = tmp_path / "runs"
    good = Run(train(_config(tmp_path, epochs=1), progress=False).run_dir)
    damaged = {}
    for name, damage in {
        "garbage-config": lambda d: (d / "config.json").write_text("{not json"),
        "list-config": lambda d: (d / "config.json").write_text("[1, 2]"),
        "truncated-best": lambda d: (d / "best.safetensors").write_bytes((d / "best.safetensors").read_bytes()[:1000]),
        "garbage-status": lambda d: (d / "status.json").write_text('{"status": "running", "pid": "x"'),
        "torn-metrics": lambda d: (d / "metrics.jsonl").write_text('{"type": "epoch", "ep'),
        "not-a-checkpoint": lambda d: (d / "best.safetensors").write_text("hello"),
    }.items():
        target = runs / f"29990101-000000-{name}"
        subprocess.run(["cp", "-r", str(good.dir), str(target)], check=True)
        damage(target)
        damaged[name] = target
    rows = {row["run"]: row for row in run_rows(runs)}
    assert len(rows) == len(list_runs(runs)) == 1 + len(damaged)
    for name in ("garbage-config", "list-config"):
        assert rows[damaged[name].name]["status"] == "damaged" and rows[damaged[name].name]["error"]
    for name in ("truncated-best", "not-a-checkpoint"):
        assert "error" in rows[damaged[name].name]
    assert rows[damaged["garbage-status"].name]["status"] == "damaged"
    assert "status.json" in rows[damaged["garbage-status"].name]["error"]

    monkeypatch.setenv("CORE_RUNS_DIR", str(runs))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard" / "Home.py"), default_timeout=120).run()
    assert not app.exception
    app.switch_page("views/runs.py").run()
    assert not app.exception
    table = app.dataframe[1].value  # the runs table: every damaged run is listed, with its error
    assert set(table.loc[table["run"].str.contains("config"), "status"]) == {"damaged"}
    assert table["error"].notna().sum() == 5 and len(table) == 1 + len(damaged)  # all but the good and torn-metrics runs
    for page in ("views/pruning.py", "views/evaluation.py"):
        app.switch_page(page).run()
        assert not app.exception, page
