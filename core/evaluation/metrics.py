"""Detection metrics from predicted probabilities (fake = 1), via scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.data.datasets import Sample
from core.data.images import ImageDataset, add_reasons, collate_skipping


@dataclass
class Predictions:
    """Per-sample fake probabilities; ``indices`` point into the evaluated sample list."""

    probabilities: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    skipped: int
    loss: float
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # per SKIP_REASONS: why each skipped file was


@torch.no_grad()
def predict(
    model: nn.Module,
    samples: list[Sample],
    transform,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    logits_fn=None,
    desc: str = "predict",
) -> Predictions:
    """Run ``model`` over ``samples``; unreadable files are skipped and counted."""
    logits_fn = logits_fn or (lambda m, x: m(x).reshape(-1))
    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_skipping)
    was_training = model.training
    model.eval()
    probabilities, labels, indices, skipped, loss_sum, reasons = [], [], [], 0, 0.0, {}
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            skipped += batch["skipped"]
            add_reasons(reasons, batch["skipped_reasons"])
            if batch["images"] is None:
                continue
            logits = logits_fn(model, batch["images"].to(device)).float().cpu()
            loss_sum += float(nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum"))
            probabilities.append(torch.sigmoid(logits).numpy())
            labels.append(batch["labels"].numpy())
            indices.append(batch["indices"].numpy())
    finally:
        model.train(was_training)
    n = sum(len(p) for p in probabilities)
    return Predictions(
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros(0),
        labels=np.concatenate(labels).astype(int) if labels else np.zeros(0, int),
        indices=np.concatenate(indices) if indices else np.zeros(0, int),
        skipped=skipped,
        loss=loss_sum / max(n, 1),
        skipped_reasons=reasons,
    )


def equal_error_rate(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The rate where false-positive and false-negative rates meet, linearly interpolated on the ROC."""
    fpr, tpr, _ = skm.roc_curve(labels, probabilities)
    fnr = 1 - tpr
    difference = fpr - fnr  # increasing along the curve
    crossing = int(np.argmax(difference >= 0))
    if crossing == 0:
        return float(fpr[0])
    d0, d1 = difference[crossing - 1], difference[crossing]
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(fpr[crossing - 1] + weight * (fpr[crossing] - fpr[crossing - 1]))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, AUC, EER, AP and the confusion matrix at ``threshold``.

    The ranking metrics (AUC, EER, AP) are ``nan`` when only one class is present.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = (probabilities > threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "n": int(len(labels)),
        "threshold": threshold,
        "accuracy": float(skm.accuracy_score(labels, predicted)) if len(labels) else float("nan"),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "auc": float(skm.roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "eer": equal_error_rate(labels, probabilities) if both_classes else float("nan"),
        "ap": float(skm.average_precision_score(labels, probabilities)) if both_classes else float("nan"),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def per_source_accuracy(samples: list[Sample], predictions: Predictions, threshold: float = 0.5) -> dict[str, dict]:
    """Accuracy (and AUC where both classes occur) per source tag."""
    sources = np.array([samples[i].source for i in predictions.indices])
    result = {}
    for source in sorted(set(sources)):
        mask = sources == source
        labels, probs = predictions.labels[mask], predictions.probabilities[mask]
        entry = {"n": int(mask.sum()), "accuracy": float(((probs > threshold).astype(int) == labels).mean())}
        if len(np.unique(labels)) == 2:
            entry["auc"] = float(skm.roc_auc_score(labels, probs))
        result[source] = entry
    return result
