"""The evaluation layer: metric edge cases, ROC, video-level AUC, the prediction cache and
its invalidation, multi-seed training, and `report` over tiny runs (every table, cached
on the second pass)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_support import cli_json
from sklearn import metrics as skm

from core.config import build_config
from core.data.datasets import Sample
from core.evaluation.evaluate import Evaluation, evaluate, roc_curve, video_level
from core.evaluation.metrics import Predictions, classification_metrics, equal_error_rate
from core.evaluation.report import Entry
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


# --- the report's numbers against a computation by hand, on fixed runs whose accuracies are known -----------------------

DATA = "synthetic:gan"
SAMPLES = [Sample(f"/images/{i:02d}.png", i % 2, "gan") for i in range(40)]
TEACHER_COST = {"params": 1_000_000, "macs": 50_000_000}
STUDENT_COST = {"kdfs": {"params": 400_000, "macs": 15_000_000}, "pearson": {"params": 250_000, "macs": 20_000_000}}
ACCURACIES = {"teacher": [0.95], "kdfs": [0.80, 0.85, 0.75], "pearson": [0.90, 0.95, 0.95], "pearson ablation": [0.70]}


def _evaluation(correct: np.ndarray) -> Evaluation:
    """Predictions right exactly where ``correct`` says: P(fake) 0.9 or 0.1, on the side of the label or the other."""
    labels = np.array([sample.label for sample in SAMPLES])
    probabilities = np.where(correct, np.where(labels == 1, 0.9, 0.1), np.where(labels == 1, 0.1, 0.9))
    return Evaluation("x", DATA, "test", SAMPLES, Predictions(probabilities, labels, np.arange(len(SAMPLES)), 0, 0.0), True)


def _entries() -> tuple[list[Entry], dict[str, np.ndarray]]:
    """A teacher, three seeds each of KDFS and Pearson, one Pearson run with another lambda_prune; which samples each
    gets right is drawn once (seeded), with the share of ACCURACIES."""
    from core.models import build_model
    from core.pruning.flops import profile_model

    rng = np.random.default_rng(0)
    entries, correct = [], {}
    for group, accuracies in ACCURACIES.items():
        method = group.split()[0]
        for seed, accuracy in enumerate(accuracies):
            hits = np.zeros(len(SAMPLES), bool)
            hits[rng.permutation(len(SAMPLES))[:round(accuracy * len(SAMPLES))]] = True
            config = {"data": DATA, "seed": seed, "method": method, "lambda_prune": 5.0 if "ablation" in group else 1.0}
            if method == "teacher":  # its own count: the dense network main_table measures
                header = {"method": method, "config": config, "image_size": 32, "model": {"type": "resnet", "arch": "resnet-tiny"},
                          **profile_model(build_model("resnet-tiny"), 32)}
            else:
                cost = STUDENT_COST[method]
                header = {"method": method, "config": config, "image_size": 32,
                          "model": {"type": "compact-resnet", "arch": "resnet-tiny"},
                          "pruning": {"compact_params": cost["params"], "compact_macs": cost["macs"],
                                      "teacher_params": TEACHER_COST["params"], "teacher_macs": TEACHER_COST["macs"]}}
            name = f"{group.replace(' ', '-')}-{seed}"
            entries.append(Entry(name, Path(f"/runs/{name}/best.safetensors"), header, evaluations={DATA: _evaluation(hits)}))
            correct[name] = hits
    return entries, correct


def _welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided t-test by hand: t = (m_a - m_b) / sqrt(v_a/n_a + v_b/n_b), Welch-Satterthwaite df."""
    from scipy.stats import t as student_t

    (ma, va, na), (mb, vb, nb) = ((np.mean(x), np.var(x, ddof=1), len(x)) for x in (a, b))
    se2 = va / na + vb / nb
    if se2 == 0:  # both groups constant: no evidence of a difference, or infinite evidence (core.stats.ttest's rule)
        return 1.0 if ma == mb else 0.0
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return float(2 * student_t.sf(abs(ma - mb) / np.sqrt(se2), df))


def _student_p(a: list[float], b: list[float]) -> float:
    """Student's two-sided t-test by hand: the pooled variance, n_a + n_b - 2 degrees of freedom."""
    from scipy.stats import t as student_t

    (ma, va, na), (mb, vb, nb) = ((np.mean(x), np.var(x, ddof=1), len(x)) for x in (a, b))
    pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
    return float(2 * student_t.sf(abs(ma - mb) / np.sqrt(pooled * (1 / na + 1 / nb)), na + nb - 2))


def test_main_table_numbers_match_a_computation_by_hand():
    from core.evaluation.report import main_table

    entries, _ = _entries()
    table = main_table(entries, "test")
    # the seeds of one configuration make one row; the Pearson run with another lambda_prune (one seed) its own
    rows = {row["method"] + (" ablation" if (row["method"], row["seeds"]) == ("pearson", 1) else ""): row
            for row in table.to_dict("records")}
    assert set(rows) == set(ACCURACIES) and len(table) == len(ACCURACIES)
    teacher = np.mean(ACCURACIES["teacher"])
    for group, accuracies in ACCURACIES.items():
        method, row = group.split()[0], rows[group]
        mean, std = np.mean(accuracies), np.std(accuracies, ddof=1) if len(accuracies) > 1 else 0.0
        # a student against the teacher its pruning record names; the teacher against itself (nothing removed)
        full = {"params": entries[0].header["params"], "macs": entries[0].header["macs"]} if method == "teacher" else TEACHER_COST
        cost = full if method == "teacher" else STUDENT_COST[method]
        expected = {
            "trained on": DATA, "seeds": len(accuracies),
            "test accuracy": f"{100 * mean:.2f} ± {100 * std:.2f}" if len(accuracies) > 1 else f"{100 * mean:.2f}",
            "p vs KDFS": f"{_welch_p(accuracies, ACCURACIES['kdfs']):.4f}" if group == "pearson" else "–",
            "p vs KDFS (Student's t)": f"{_student_p(accuracies, ACCURACIES['kdfs']):.4f}" if group == "pearson" else "–",
            "Δacc vs teacher": "–" if method == "teacher" else f"{100 * (mean - teacher):.2f}",
            "compression (MACs)": f"{1 - cost['macs'] / full['macs']:.3f}",
            "params (M)": f"{cost['params'] / 1e6:.2f}", "MACs (M)": f"{cost['macs'] / 1e6:.1f}",
            "params ↓": f"{100 * (1 - cost['params'] / full['params']):.1f}%",
            "MACs ↓": f"{100 * (1 - cost['macs'] / full['macs']):.1f}%", "image size": 32}
        assert {key: row[key] for key in expected} == expected, group
    # the figures these strings print, for a reader of this test: KDFS 80.00 ± 5.00, Pearson 93.33 ± 2.89, p = 0.0248
    assert rows["kdfs"]["test accuracy"] == "80.00 ± 5.00" and rows["kdfs"]["Δacc vs teacher"] == "-15.00"
    assert rows["kdfs"]["params ↓"] == "60.0%" and rows["kdfs"]["MACs ↓"] == "70.0%"
    assert rows["pearson"]["test accuracy"] == "93.33 ± 2.89" and rows["pearson"]["p vs KDFS"] == "0.0248"


def test_mcnemar_table_counts_the_disagreements_and_tests_them_exactly():
    import math

    from core.evaluation.report import mcnemar_table

    entries, correct = _entries()
    table = mcnemar_table(entries)
    assert len(table) == len(entries) * (len(entries) - 1) // 2  # every pair: all trained on one dataset
    for row in table.to_dict("records"):
        a, b = correct[row["A"]], correct[row["B"]]
        only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert (row["n"], row["both correct"], row["only A correct"], row["only B correct"], row["both wrong"]) == (
            len(SAMPLES), int(np.sum(a & b)), only_a, only_b, int(np.sum(~a & ~b)))
        # fewer than 25 disagreements: the exact two-sided binomial test, p = min(1, 2 P(X <= min(b, c))), X ~ B(b + c, 1/2)
        n = only_a + only_b
        p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n)
        assert row["test"] == "exact binomial" and row["p-value"] == f"{p:.4g}"
        assert row["statistic"] == f"{min(only_a, only_b) if n else 0:.3f}"
        assert (row["acc A"], row["acc B"]) == (f"{a.mean():.4f}", f"{b.mean():.4f}")
        assert row["significant (0.05)"] == ("yes" if p < 0.05 else "no")
    assert (table["significant (0.05)"] == "yes").any() and (table["significant (0.05)"] == "no").any()


def test_published_table_numbers_match_a_computation_by_hand():
    from core.evaluation.report import published_table

    def row(method, accuracies, params, macs, published):
        return {"method": method, "label": None, "seeds": len(accuracies), "accuracy": float(np.mean(accuracies)),
                "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None, "accuracies": accuracies,
                "params": params, "macs": macs, "params_reduction": 1 - params / 2_000_000, "macs_reduction": 1 - macs / 80_000_000,
                "image_size": 64, "published": published}

    rows = [row("teacher", [0.96], 2_000_000, 80_000_000, {"accuracy": 97.5, "params": 23.5}),
            row("kdfs", [0.80, 0.84, 0.82], 600_000, 20_000_000,
                {"accuracy": 95.0, "accuracy_std": 0.4, "params_reduction": 70.0, "flops_reduction": 72.5}),
            row("pearson", [0.90, 0.86], 500_000, 30_000_000, {"accuracy": 96.1, "params_reduction": 75.0, "flops_reduction": 70.0})]
    table = {r["method"]: r for r in published_table(rows).to_dict("records")}
    pearson, kdfs = table["pearson"], table["kdfs"]
    assert pearson["accuracy % (measured)"] == "88.00 ± 2.83" and kdfs["accuracy % (measured)"] == "82.00 ± 2.00"
    assert kdfs["accuracy % (published)"] == "95.00 ± 0.40" and table["teacher"]["accuracy % (measured)"] == "96.00"
    assert pearson["Δ accuracy (points)"] == f"{88.0 - 96.1:.2f}" == "-8.10"
    assert pearson["p vs KDFS"] == f"{_welch_p([0.90, 0.86], [0.80, 0.84, 0.82]):.4f}" and kdfs["p vs KDFS"] == "–"
    assert pearson["Δ vs teacher (measured)"] == "-8.00" and kdfs["Δ vs teacher (measured)"] == "-14.00"
    assert pearson["Δ vs teacher (published)"] == f"{96.1 - 97.5:.2f}" and table["teacher"]["Δ vs teacher (published)"] == "–"
    assert pearson["params ↓ % (measured)"] == "75.00" and pearson["MACs ↓ % (measured)"] == "62.50"
    assert pearson["Δ MACs ↓ (points)"] == f"{62.5 - 70.0:.2f}" and kdfs["Δ MACs ↓ (points)"] == f"{75.0 - 72.5:.2f}"
    assert (pearson["params M (measured)"], pearson["MACs M (measured)"]) == ("0.50", "30.0")


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
    main = pd.read_csv(out / "main.csv", dtype=str, keep_default_na=False)
    assert len(main) == 4  # teacher, kdfs (2 seeds), pearson (2 seeds), pearson ablation
    # each row's numbers from the runs' own final test accuracies (metrics.jsonl), computed here by hand
    tested = {group: [next(json.loads(line)["accuracy"] for line in (run / "metrics.jsonl").read_text().splitlines()
                           if json.loads(line).get("type") == "test") for run in runs] for group, runs in tiny_runs.items()}
    teacher = tested["teacher"][0]
    for group in ("kdfs", "pearson"):
        (row,) = main[(main["method"] == group) & (main["seeds"] == "2")].to_dict("records")
        mean, std = np.mean(tested[group]), np.std(tested[group], ddof=1)
        assert row["test accuracy"] == f"{100 * mean:.2f} ± {100 * std:.2f}", "two seeds give mean ± std"
        assert row["Δacc vs teacher"] == f"{100 * (mean - teacher):.2f}"
    (pearson,) = main[(main["method"] == "pearson") & (main["seeds"] == "2")].to_dict("records")
    assert pearson["p vs KDFS"] == f"{_welch_p(tested['pearson'], tested['kdfs']):.4f}"
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
