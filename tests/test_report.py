"""The evaluation layer: metric edge cases, ROC, video-level AUC, the prediction cache and
its invalidation, multi-seed training, and `report` over tiny runs (every table, cached
on the second pass)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_support import cli_json
from sklearn import metrics as skm

from core.config import build_config
from core.data.datasets import Sample
from core.evaluation.evaluate import evaluate, roc_curve, video_level
from core.evaluation.metrics import Predictions, classification_metrics, equal_error_rate
from core.training.engine import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(data="synthetic", arch="resnet-tiny", image_size=32, batch_size=16, num_workers=0, log_every=5,
            max_train_samples=64)


def test_ties_and_perfect_separation_against_sklearn():
    labels = np.array([0, 0, 1, 1, 0, 1])
    tied = np.array([0.5, 0.5, 0.5, 0.5, 0.2, 0.9])
    result = classification_metrics(labels, tied)
    assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, tied))
    assert result["ap"] == pytest.approx(skm.average_precision_score(labels, tied))
    perfect = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert (perfect["auc"], perfect["eer"], perfect["ap"], perfect["accuracy"]) == (1.0, 0.0, 1.0, 1.0)
    tiny = classification_metrics(np.array([0, 1]), np.array([0.7, 0.3]))  # inverted, two samples
    assert (tiny["auc"], tiny["eer"], tiny["accuracy"]) == (0.0, 1.0, 0.0)
    all_fake = classification_metrics(np.ones(3, int), np.array([0.2, 0.6, 0.9]))
    assert np.isnan(all_fake["ap"]) and all_fake["recall"] == pytest.approx(2 / 3)
    assert equal_error_rate(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)


def test_roc_curve_is_sklearn_downsampled_with_both_ends():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = rng.normal(labels, 1.0)
    roc = roc_curve(labels, scores, points=50)
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    assert len(roc["fpr"]) <= 50 and roc["fpr"][0] == fpr[0] and roc["fpr"][-1] == fpr[-1] and roc["tpr"][-1] == tpr[-1]
    assert roc["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert np.isnan(roc_curve(np.ones(4, int), np.ones(4))["auc"])


def test_video_level_aggregates_frames_by_mean():
    samples = [Sample(f"/f{i}.png", label, "x", video) for i, (label, video) in
               enumerate([(1, "a"), (1, "a"), (0, "b"), (0, "b"), (0, "b"), (1, "c")])]
    probabilities = np.array([0.9, 0.3, 0.2, 0.4, 0.9, 0.4])
    predictions = Predictions(probabilities, np.array([s.label for s in samples]), np.arange(6), 0, 0.0)
    video = video_level(samples, predictions)
    means = {"a": 0.6, "b": 0.5, "c": 0.4}
    assert video["videos"] == 3
    assert video["auc"] == pytest.approx(skm.roc_auc_score([1, 0, 1], [means["a"], means["b"], means["c"]]))
    assert video["accuracy"] == pytest.approx(2 / 3)  # a: 0.6 -> fake (right), b: 0.5 -> real (right), c: 0.4 -> real (wrong)
    assert video_level([Sample("/x.png", 1)], Predictions(np.array([0.9]), np.array([1]), np.array([0]), 0, 0.0)) is None


@pytest.fixture(scope="module")
def tiny_runs(tiny_benchmark, tmp_path_factory) -> dict[str, list[Path]]:
    runs = tmp_path_factory.mktemp("report-runs")
    teacher = train(build_config(method="teacher", epochs=1, runs_dir=str(runs), **TINY), progress=False).run_dir
    students = {}
    for method, prune in (("kdfs", 1.0), ("pearson", 100.0)):
        students[method] = [train(build_config(method=method, epochs=1, seed=seed, teacher=str(teacher), runs_dir=str(runs),
                                               method_options={"lambda_prune": prune, "sampler_lr": 0.05}, **TINY),
                                  progress=False).run_dir for seed in (0, 1)]
    ablation = train(build_config(method="pearson", epochs=1, teacher=str(teacher), runs_dir=str(runs),
                                  method_options={"lambda_prune": 1.0, "sampler_lr": 0.05}, **TINY), progress=False).run_dir
    return {"teacher": [teacher], **students, "ablation": [ablation]}


def test_a_finished_run_has_its_own_report(tiny_runs):
    run_dir = tiny_runs["teacher"][0]
    for name in ("report.md", "main.csv", "main.md", "cross_dataset.md", "training_time.md", "roc.html"):
        assert (run_dir / "report" / name).is_file(), name
    assert "teacher" in (run_dir / "report" / "main.md").read_text()


def test_prediction_cache_hits_and_invalidates_on_a_changed_checkpoint(tiny_runs, tmp_path):
    import torch

    import core
    from core.checkpoint import save_checkpoint

    checkpoint = tmp_path / "model.safetensors"
    shutil.copy(tiny_runs["kdfs"][0] / "best.safetensors", checkpoint)
    first = evaluate(checkpoint, "synthetic", progress=False)
    assert first.cached, "the engine's final test seeded the cache (keyed by content, not path)"
    model = core.load_model(checkpoint)
    with torch.no_grad():
        model.fc.bias += 1.0
    save_checkpoint(checkpoint, model, model.header)  # same path, new content
    changed = evaluate(checkpoint, "synthetic", progress=False)
    again = evaluate(checkpoint, "synthetic", progress=False)
    assert not changed.cached and again.cached
    assert np.array_equal(changed.predictions.probabilities, again.predictions.probabilities)
    assert not np.array_equal(changed.predictions.probabilities, first.predictions.probabilities)
    fresh = evaluate(checkpoint, "synthetic", progress=False, use_cache=False)
    np.testing.assert_allclose(fresh.predictions.probabilities, changed.predictions.probabilities, atol=1e-6)


_cli = cli_json


def test_report_writes_every_table_and_caches_predictions(tiny_runs, tmp_path):
    paths = [str(p) for group in tiny_runs.values() for p in group]
    out = tmp_path / "report"
    first = _cli("report", *paths, "--out", str(out), "--data", "synthetic:gan,synthetic:warp")
    assert set(first["tables"]) == {"main", "cross_dataset", "mcnemar", "training_time", "ablation", "deployment"}
    assert first["evaluations"] == 6 * 3
    for name in first["tables"]:
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file()
    assert {"roc.html", "active_filters.html"} <= set(first["figures"])
    main = (out / "main.csv").read_text().splitlines()
    assert len(main) == 1 + 4  # teacher, kdfs (2 seeds), pearson (2 seeds), pearson ablation
    pearson = [line for line in main if line.startswith("pearson") and ",2," in line]
    assert pearson and "±" in pearson[0], "two seeds give mean ± std and a p-value against KDFS"
    assert (out / "mcnemar.csv").read_text().count("\n") == 1 + 6 * 5 // 2  # every pair of the 6 checkpoints
    ablation = (out / "ablation.csv").read_text()
    assert "lambda_prune" in ablation and "100.0" in ablation
    second = _cli("report", *paths, "--out", str(tmp_path / "again"), "--data", "synthetic:gan,synthetic:warp",
                  "--no-latency")
    assert second["computed"] == 0, "every evaluation comes from the prediction cache"


def test_train_with_several_seeds_makes_one_run_per_seed(tiny_benchmark, tmp_path):
    output = _cli("train", "--method", "teacher", "--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32",
                  "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--max-train-samples", "32",
                  "--runs-dir", str(tmp_path), "--seeds", "3,4")
    assert len(output["runs"]) == 2 and output["run_dir"] == output["runs"][-1]
    seeds = [json.loads((Path(run) / "config.json").read_text())["seed"] for run in output["runs"]]
    assert seeds == [3, 4]


def test_sweep_runs_one_value_each_and_report_tabulates_them(tiny_runs, tmp_path):
    teacher = str(tiny_runs["teacher"][0])
    output = _cli("train", "--method", "kdfs", "--teacher", teacher, "--data", "synthetic", "--arch", "resnet-tiny",
                  "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--num-workers", "0",
                  "--max-train-samples", "32", "--runs-dir", str(tmp_path / "runs"), "--sweep", "lambda_prune=0,5")
    values = [json.loads((Path(run) / "config.json").read_text())["method_options"]["lambda_prune"] for run in output["runs"]]
    assert values == [0, 5]
    report = _cli("report", *output["runs"], "--out", str(tmp_path / "report"), "--no-latency")
    rows = (tmp_path / "report" / "ablation.csv").read_text().splitlines()
    assert rows[0].startswith("method,data,lambda_prune") and len(rows) == 3
    assert report["computed"] == 0, "each run's own final test already seeded the cache"
