"""KDFS and Pearson students end to end on tiny configs: training records, compact export
and its parity, profile, fine-tuning, resume after SIGKILL, presets, and DDP with two
gloo processes under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_support import cli_json
from safetensors.torch import load_file

import core
from core.config import build_config
from core.methods.distillation import StudentOptions, temperature
from core.runs import Run
from core.training.engine import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(data="synthetic", arch="resnet-tiny", image_size=32, batch_size=16, num_workers=0, log_every=1)


@pytest.fixture(scope="module")
def tiny_teacher(tiny_benchmark, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("teacher")
    return train(build_config(method="teacher", epochs=1, runs_dir=str(runs), **TINY), progress=False).run_dir


def _student_args(teacher: Path, runs_dir: Path, method: str, *extra: str) -> list[str]:
    return ["--method", method, "--teacher", str(teacher), "--data", "synthetic", "--arch", "resnet-tiny",
            "--image-size", "32", "--batch-size", "8", "--num-workers", "0", "--max-train-samples", "64",
            "--runs-dir", str(runs_dir), "--log-every", "1", "--sampler-lr", "0.05", *extra]


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> dict:
    if env is None:  # in this process; a command that needs its own environment gets its own interpreter
        return cli_json(*args)
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["kdfs", "pearson", "pdd"])
def student_run(request, tiny_teacher, tmp_path_factory) -> tuple[str, Path]:
    runs = tmp_path_factory.mktemp(request.param)
    output = _cli("train", *_student_args(tiny_teacher, runs, request.param, "--epochs", "3", "--tau-start", "2",
                                          "--tau-end", "0.5"))
    assert output["status"] == "finished" and 0 <= output["macs_reduction"] < 1
    return request.param, Path(output["run_dir"])


def test_student_run_records_the_mask_history(student_run):
    method, run_dir = student_run
    run = Run(run_dir)
    epochs = run.metrics("epoch")
    assert len(epochs) == 3
    options = StudentOptions(tau_start=2, tau_end=0.5)
    for record in epochs:
        assert record["temperature"] == pytest.approx(temperature(options, record["epoch"], 3))
        assert len(record["active_filters"]) == len(record["keep_probability"]) == 8  # resnet-tiny: 4 blocks x 2 convs
        assert 0 < record["active_fraction"] <= 1 and 0 <= record["macs_reduction"] < 1
    steps = run.metrics("step")
    assert {"bce", "kd", "rl", "prune", "mask_macs_ratio"} <= set(steps[0])
    assert all(torch.isfinite(torch.tensor([s["loss"] for s in steps])))
    header = core.load_model(run_dir).header
    assert header["model"]["type"] == "masked-resnet" and header["method"] == method
    assert header["pruning"]["active_filters"] == [r for r in run.metrics("epoch") if
                                                   r["val_accuracy"] == header["metrics"]["val_accuracy"]][0]["active_filters"]
    # the same history in TensorBoard: per-epoch pruning scalars and the keep-probability histogram, per-step terms
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "events"), size_guidance={"histograms": 0, "scalars": 0})  # 0: keep all
    events.Reload()
    assert [e.value for e in events.Scalars("pruning/temperature")] == pytest.approx([r["temperature"] for r in epochs])
    assert len(events.Scalars("pruning/macs_reduction")) == 3 and len(events.Scalars("train/prune")) == len(steps)
    assert len(events.Histograms("pruning/keep_probability_per_layer")) == 3
    # one histogram of every filter's keep probability per stage per epoch (resnet-tiny: 4 stages of 2 x 8.. filters)
    stages = sorted(tag for tag in events.Tags()["histograms"] if tag.startswith("pruning/keep_probability/"))
    assert stages == [f"pruning/keep_probability/layer{i}" for i in range(1, 5)]
    last = events.Histograms("pruning/keep_probability/layer1")[-1].histogram_value
    channels = header["pruning"]["channels"]
    assert len(events.Histograms("pruning/keep_probability/layer1")) == 3 and last.num == sum(channels[:2])
    assert 0 <= last.min <= last.max <= 1
    assert events.Tags()["images"] == ["pruning/active_filters"] and "test/pr" in events.Tags()["tensors"]
    # the header's history is the epoch records' numbers (the Training curves page reads it when the run is gone)
    assert [h["val_accuracy"] for h in header["history"]] == [r["val_accuracy"] for r in epochs]
    assert [h["temperature"] for h in header["history"]] == [r["temperature"] for r in epochs]
    assert {"train_bce", "train_kd", "train_rl"} <= set(header["history"][0]) and "keep_probability" not in header["history"][0]


@pytest.mark.parametrize("fmt", ["pt", "onnx", "safetensors"])
def test_export_writes_a_compact_model_with_parity(student_run, tmp_path, fmt):
    _, run_dir = student_run
    out = tmp_path / f"student.{fmt}"
    result = _cli("export", str(run_dir), "--format", fmt, "--out", str(out))
    assert out.is_file() and result["kind"] == "compact-resnet" and result["max_abs_diff"] <= 1e-4
    profile = _cli("profile", str(run_dir))
    assert (result["params"], result["macs"]) == (profile["params"], profile["macs"])
    header = core.load_model(run_dir).header["pruning"]
    assert profile["macs"] == pytest.approx(header["compact_macs"], rel=0.01)
    assert profile["macs_reduction"] == pytest.approx(header["macs_reduction"], abs=0.01)
    if fmt == "pt":  # a plain torch file: loads with weights_only=True, and through core.load_model
        payload = torch.load(out, weights_only=True)
        assert payload["header"]["model"]["type"] == "compact-resnet"
        model = core.load_model(out)
        masked = core.load_model(run_dir)
        images = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(model(images), masked(images), atol=1e-4, rtol=0)


def test_finetune_trains_the_compact_model(student_run, tmp_path):
    _, run_dir = student_run
    output = _cli("finetune", str(run_dir), "--epochs", "1", "--batch-size", "8", "--num-workers", "0",
                  "--max-train-samples", "32", "--runs-dir", str(tmp_path / "runs"))
    model = core.load_model(output["checkpoint"])
    source = core.load_model(run_dir).header
    assert model.header["model"]["type"] == "compact-resnet"
    assert model.header["model"]["active_filters"] == source["pruning"]["active_filters"]
    if source["method"] == "pdd":  # the published fine-tune of a PDD student
        assert (model.header["config"]["optimizer"], model.header["config"]["lr"]) == ("sgd", 0.01)
    else:
        assert model.header["config"]["lr"] == pytest.approx(4e-5)
    assert model.header["finetuned_from"] == str(run_dir)


def test_students_need_a_matching_teacher(tiny_benchmark, tiny_teacher, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        train(build_config(method="kdfs", epochs=1, runs_dir=str(tmp_path), **TINY), progress=False)
    with pytest.raises(ValueError, match="resnet50 teacher"):
        train(build_config(method="pearson", epochs=1, runs_dir=str(tmp_path), teacher=str(tiny_teacher),
                           **{**TINY, "arch": "resnet50"}), progress=False)
    with pytest.raises(ValueError, match="unknown kdfs options"):
        train(build_config(method="kdfs", epochs=1, runs_dir=str(tmp_path), teacher=str(tiny_teacher),
                           method_options={"lambda_typo": 1}, **TINY), progress=False)
    assert not list(tmp_path.glob("*/config.json")), "bad input must fail before a run directory exists"


def _launch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "train", *args, "--quiet", "--json"], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow  # tests/reliability/test_kill_resume.py kills Pearson at three exact points
def test_student_resume_after_sigkill_matches_unbroken_run(tiny_teacher, tmp_path):
    import time

    args = _student_args(tiny_teacher, tmp_path / "unbroken", "pearson", "--epochs", "2")
    reference = _cli("train", *args)
    runs = tmp_path / "killed"
    process = _launch(_student_args(tiny_teacher, runs, "pearson", "--epochs", "2"))
    deadline = time.monotonic() + 120
    while True:  # kill in the second epoch, after the first checkpoint
        found = list(runs.glob("*/metrics.jsonl"))
        if found and any(r["epoch"] == 1 for r in Run(found[0].parent).metrics("step")):
            break
        assert process.poll() is None and time.monotonic() < deadline, "run ended or hung before the kill point"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    run_dir = found[0].parent
    resumed = _cli("train", "--resume", str(run_dir))
    assert resumed["status"] == "finished"
    ours, theirs = Run(run_dir), Run(Path(reference["run_dir"]))
    assert [r["train_loss"] for r in ours.metrics("epoch")] == [r["train_loss"] for r in theirs.metrics("epoch")]
    assert [r["active_filters"] for r in ours.metrics("epoch")] == [r["active_filters"] for r in theirs.metrics("epoch")]
    a, b = load_file(str(ours.best_checkpoint)), load_file(str(theirs.best_checkpoint))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_gloo_processes(tiny_teacher, tmp_path):
    runs = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core",
               "train", *_student_args(tiny_teacher, runs, "kdfs", "--epochs", "2"), "--device", "cpu", "--quiet", "--json"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CORE_DIST_TIMEOUT": "120"})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list(runs.glob("*/config.json"))
    assert len(run_dirs) == 1, "one run directory for the whole job"
    run = Run(run_dirs[0].parent)
    assert run.status()["status"] == "finished"
    epochs = run.metrics("epoch")
    assert len(epochs) == 2 and all(record["replicas_identical"] for record in epochs)
    assert "2 processes" in (run.dir / "env.json").read_text()
    steps = run.metrics("step")
    assert steps[-1]["steps"] == 4  # 64 samples / (8 per process x 2 processes)


def test_catalog_rows_show_the_compact_cost(student_run, tmp_path):
    import shutil

    from core.catalog import checkpoint_rows, run_rows

    _, run_dir = student_run
    shutil.copy(run_dir / "best.safetensors", tmp_path / "student.safetensors")
    (row,) = checkpoint_rows(tmp_path)
    header = core.load_model(run_dir).header["pruning"]
    assert row["kind"] == "masked student" and row["arch"] == "resnet-tiny"
    assert row["ood_calibration"] is bool(core.load_model(run_dir).header.get("ood"))
    assert row["macs_m"] == round(header["compact_macs"] / 1e6, 1)
    assert row["macs_reduction"] == round(header["macs_reduction"], 4)
    (summary,) = [r for r in run_rows(run_dir.parent) if r["path"] == str(run_dir)]
    assert summary["params_reduction"] == round(header["params_reduction"], 4)


def test_finetuned_checkpoint_carries_the_mask_history(student_run, tmp_path):
    from core.checkpoint import read_header

    _, run_dir = student_run
    output = _cli("finetune", str(run_dir / "last.safetensors"), "--epochs", "1", "--batch-size", "8", "--num-workers", "0",
                  "--max-train-samples", "16", "--runs-dir", str(tmp_path / "runs"), "--lambda-kd", "0")
    header = read_header(output["checkpoint"])
    history = header["mask_history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["active_filters"] == [r["active_filters"] for r in Run(run_dir).metrics("epoch")][-1]
    steps = Run(Path(output["run_dir"])).metrics("step")
    assert "kd" not in steps[0], "--lambda-kd 0 trains on BCE alone"


@pytest.mark.parametrize("method", ["kdfs", "pearson"])
def test_shipped_students_are_compact_and_reported(method):
    path = REPO / "checkpoints" / f"student-{method}-resnet50-synthetic-faceswap.safetensors"
    profile = _cli("profile", str(path))
    assert profile["kind"] == "compact-resnet"
    assert profile["params_reduction"] >= 0.8 and profile["macs_reduction"] >= 0.8
    assert len(profile["active_percent"]) == 48 and all(0 < p <= 100 for p in profile["active_percent"])
    header = core.load_model(path).header
    assert header["metrics"]["test_accuracy"] >= 0.87
    assert header["teacher"] == "checkpoints/teacher-resnet50-synthetic-faceswap.safetensors"
    assert len(header["mask_history"]) == 15
