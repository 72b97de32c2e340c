"""Metrics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from core.evaluation.metrics import classification_metrics, equal_error_rate


def _brute_force_eer(labels, scores):
    """Scan every threshold; the EER lies between the closest FPR/FNR pair."""
    best = None
    for threshold in np.concatenate([[-np.inf], np.sort(scores), [np.inf]]):
        predicted = scores >= threshold
        fpr = (predicted & (labels == 0)).sum() / (labels == 0).sum()
        fnr = (~predicted & (labels == 1)).sum() / (labels == 1).sum()
        if best is None or abs(fpr - fnr) < best[0]:
            best = (abs(fpr - fnr), (fpr + fnr) / 2)
    return best[1]


@pytest.mark.parametrize("seed", range(5))
def test_eer_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 1.2, 1.0)
    assert abs(equal_error_rate(labels, scores) - _brute_force_eer(labels, scores)) < 0.01


def test_eer_extremes():
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0


def test_classification_metrics_agree_with_sklearn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    probabilities = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    result = classification_metrics(labels, probabilities, threshold=0.5)
    predicted = (probabilities > 0.5).astype(int)
    assert result["accuracy"] == pytest.approx((predicted == labels).mean())
    assert result["auc"] == pytest.approx(skm.roc_auc_score(labels, probabilities))
    assert result["ap"] == pytest.approx(skm.average_precision_score(labels, probabilities))
    assert result["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    confusion = result["confusion"]
    assert confusion["tp"] == int(((predicted == 1) & (labels == 1)).sum())
    assert sum(confusion.values()) == 300


def test_one_class_gives_undefined_ranking_metrics():
    result = classification_metrics(np.ones(5, int), np.full(5, 0.9))
    assert result["accuracy"] == 1.0
    assert np.isnan(result["auc"]) and np.isnan(result["eer"])


def test_video_level_metrics_are_those_of_the_mean_frame_score_per_video():
    """DeepfakeBench's video-level numbers: a video's score is the mean of its frames' P(fake); AUC and AP by sklearn
    on those scores, EER by scanning thresholds (the scores below meet FPR = FNR = 1/4 exactly at 0.6)."""
    from core.data.datasets import Sample
    from core.evaluation.evaluate import video_level
    from core.evaluation.metrics import Predictions

    frames = {"r0": [0.0, 0.2], "r1": [0.3, 0.3], "r2": [0.4, 0.6], "r3": [0.9, 0.5],  # real: means 0.1 0.3 0.5 0.7
              "f0": [0.4], "f1": [0.2, 0.8, 0.8], "f2": [0.8, 0.8], "f3": [1.0, 0.8]}  # fake: means 0.4 0.6 0.8 0.9
    samples = [Sample(f"/{video}-{i}.png", int(video.startswith("f")), "x", video)
               for video, scores in frames.items() for i in range(len(scores))]
    probabilities = np.array([p for scores in frames.values() for p in scores])
    order = np.random.default_rng(0).permutation(len(samples))  # predictions in any order, indices into the samples
    predictions = Predictions(probabilities[order], np.array([s.label for s in samples])[order], order, 0, 0.0)
    video = video_level(samples, predictions)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    means = np.array([np.mean(scores) for scores in frames.values()])
    assert video["videos"] == 8 and video["aggregate"] == "mean"
    assert video["auc"] == pytest.approx(skm.roc_auc_score(labels, means))
    assert video["ap"] == pytest.approx(skm.average_precision_score(labels, means))
    assert video["eer"] == pytest.approx(_brute_force_eer(labels, means)) and video["eer"] == pytest.approx(0.25)
    assert video["accuracy"] == pytest.approx(((means > 0.5) == labels).mean())
    maximum = video_level(samples, predictions, aggregate="max")
    assert maximum["auc"] == pytest.approx(skm.roc_auc_score(labels, [max(scores) for scores in frames.values()]))
