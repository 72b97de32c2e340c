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
