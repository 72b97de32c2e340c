"""End-to-end training on the tiny benchmark: run directory, resume after SIGKILL, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import core
from core.config import TrainConfig, build_config
from core.runs import Run, list_runs
from core.training.engine import make_optimizer, train

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, **overrides):
    values = dict(method="teacher", data="synthetic", arch="resnet-tiny", image_size=32, epochs=2, batch_size=16,
                  num_workers=0, runs_dir=str(tmp_path / "runs"), log_every=1)
    values.update(overrides)
    return build_config(**values)


def test_train_writes_a_complete_run(tiny_benchmark, tmp_path):
    result = train(_config(tmp_path), progress=False)
    run = Run.open(result.run_dir)
    assert run.status()["status"] == "finished"
    for name in ("config.json", "env.json", "status.json", "metrics.jsonl", "log.txt",
                 "best.safetensors", "last.safetensors", "trainer_state.pt"):
        assert (run.dir / name).is_file(), name
    kinds = [record["type"] for record in run.metrics()]
    assert kinds.count("epoch") == 2 and kinds[-1] == "test" and "step" in kinds
    test = run.metrics("test")[0]
    assert test["n"] == 60 and set(test["per_source"]) == {"upconv", "faceswap", "gan", "warp", "jpeg2"}
    model = core.load_model(result.run_dir)
    assert model.header["metrics"]["test_accuracy"] == test["accuracy"]
    assert model.header["dataset"] == "synthetic"
    assert [r.dir for r in list_runs(tmp_path / "runs")] == [run.dir]


def test_two_runs_with_one_seed_are_identical(tiny_benchmark, tmp_path):
    first = train(_config(tmp_path / "a", epochs=1, max_train_samples=64), progress=False)
    second = train(_config(tmp_path / "b", epochs=1, max_train_samples=64), progress=False)
    a, b = load_file(str(first.checkpoint)), load_file(str(second.checkpoint))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _launch(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "core", "train", *args, "--quiet", "--json"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"run ended before the kill point: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.005)


def _only_run(runs_dir: Path) -> Path:
    runs = list(runs_dir.glob("*/config.json"))
    return runs[0].parent if runs else None


RESUME_SETTINGS = {"epochs": 2, "batch_size": 4, "max_train_samples": 80}


@pytest.fixture(scope="module")
def unbroken_run(tiny_benchmark, tmp_path_factory):
    return train(_config(tmp_path_factory.mktemp("unbroken"), **RESUME_SETTINGS), progress=False)


@pytest.mark.slow  # tests/reliability/test_kill_resume.py kills the teacher at three exact points
@pytest.mark.parametrize("kill_epoch", [0, 1])
def test_sigkill_mid_epoch_then_resume_matches_unbroken_run(unbroken_run, tmp_path, tiny_train_args, kill_epoch):
    args = [*tiny_train_args, "--epochs", "2", "--batch-size", "4", "--max-train-samples", "80", "--log-every", "1"]
    reference = unbroken_run

    runs_dir = tmp_path / "runs"
    process = _launch(args)

    def mid_epoch() -> bool:
        run_dir = _only_run(runs_dir)
        if run_dir is None:
            return False
        steps = [r for r in Run(run_dir).metrics("step") if r["epoch"] == kill_epoch]
        return len(steps) >= 3

    _wait_for(mid_epoch, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    run_dir = _only_run(runs_dir)
    assert Run(run_dir).status()["status"] == "interrupted"

    resumed = _launch(["--resume", str(run_dir)])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "finished"

    ours, theirs = Run(run_dir), Run(reference.run_dir)
    assert [r["val_accuracy"] for r in ours.metrics("epoch")] == [r["val_accuracy"] for r in theirs.metrics("epoch")]
    assert [r["train_loss"] for r in ours.metrics("epoch")] == [r["train_loss"] for r in theirs.metrics("epoch")]
    assert ours.metrics("test")[0]["auc"] == theirs.metrics("test")[0]["auc"]
    a, b = load_file(str(ours.best_checkpoint)), load_file(str(theirs.best_checkpoint))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_cancels_and_the_run_can_resume(tiny_benchmark, tmp_path, tiny_train_args):
    runs_dir = tmp_path / "runs"
    process = _launch([*tiny_train_args, "--epochs", "3", "--batch-size", "4", "--log-every", "1"])
    _wait_for(lambda: _only_run(runs_dir) is not None and len(Run(_only_run(runs_dir)).metrics("step")) >= 3, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    run = Run(_only_run(runs_dir))
    assert run.status()["status"] == "cancelled"


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimisers_are_fused_and_give_the_default_update(optimizer):
    """One fused kernel per step (6x faster for a ResNet-50's Adam on a CPU), the same update as the per-parameter loop."""
    torch.manual_seed(0)
    config = TrainConfig(optimizer=optimizer, lr=0.01, weight_decay=0.01)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = make_optimizer(config, params)
    options = {"lr": 0.01, "weight_decay": 0.01, **({"momentum": config.momentum} if optimizer == "sgd" else {})}
    plain = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer](twins, **options)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for group, opt in ((params, fused), (twins, plain)):
            opt.zero_grad()
            sum((p.sin() * (i + 1)).sum() for i, p in enumerate(group)).backward()
            opt.step()
    for a, b in zip(params, twins, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_mesonet_run_writes_tensorboard_events_its_reader_loads(tiny_benchmark, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(_config(tmp_path, arch="mesonet", epochs=2, max_train_samples=64), progress=False)
    events = EventAccumulator(str(result.run_dir / "events"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/accuracy", "val/auc", "train/epoch_loss", "test/accuracy"} <= tags, tags
    losses, accuracies = events.Scalars("train/loss"), events.Scalars("val/accuracy")
    assert len(losses) >= 2 and len(accuracies) == 2
    # the same numbers as metrics.jsonl, the one home of every record
    run = Run.open(result.run_dir)
    assert [round(e.value, 5) for e in accuracies] == [round(r["val_accuracy"], 5) for r in run.metrics("epoch")]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in run.metrics("step")], rel=1e-6)
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(run.metrics("test")[0]["accuracy"])
    assert events.Tags()["images"] == []  # a teacher: no active-filter bars
    import numpy as np
    from tensorboard.util import tensor_util

    pr = tensor_util.make_ndarray(events.Tensors("test/pr")[0].tensor_proto)  # TP, FP, TN, FN, precision, recall
    test = run.metrics("test")[0]
    positives = test["confusion"]["tp"] + test["confusion"]["fn"]
    assert pr.shape[0] == 6 and pr[0, 0] + pr[3, 0] == positives and pr[0, 0] + pr[1, 0] == test["n"]
    assert np.all(np.diff(pr[5]) <= 1e-6)  # recall falls as the threshold rises
    # the epoch's mean loss: the mean over every step, which the logged steps (log_every 1 here) all are
    epochs = run.metrics("epoch")
    steps = run.metrics("step")
    for record in epochs:
        logged = [s for s in steps if s["epoch"] == record["epoch"]]
        assert record["train_bce"] == pytest.approx(record["train_loss"], rel=1e-5)  # a teacher's loss is its BCE
        assert record["train_loss"] == pytest.approx(
            sum(s["loss"] for s in logged) / len(logged), rel=1e-5)  # 64 images in equal batches of 16
    # the best checkpoint carries the whole history, and the curves read it from there once the run is gone
    from core.evaluation.curves import checkpoint_curves, curves_of

    header = core.load_model(result.run_dir, serve=False).header
    assert [h["val_accuracy"] for h in header["history"]] == [r["val_accuracy"] for r in epochs]
    live, stored = curves_of(result.run_dir), checkpoint_curves(result.run_dir / "best.safetensors")
    assert [r["epoch"] for r in live.epochs] == [1, 2] and live.status == "finished" and live.loss_terms[0] == "loss"
    assert [r["val_accuracy"] for r in stored.epochs] == [r["val_accuracy"] for r in live.epochs] and not stored.note
    assert [r["global_step"] for r in live.epochs] == [s["global_step"] for s in live.steps if s["epoch"] % 1 == 0]
