"""Evaluate a checkpoint on a dataset split, with predictions cached on disk.

Predictions are keyed by the checkpoint's *content* (SHA-256 of the file), the
dataset's samples (paths and labels) and the split, so the dashboard and reports
never recompute them, and a retrained or replaced checkpoint file is never served
stale results. Each checkpoint is evaluated with its own ``preprocess``: the input
size and normalisation of the data it was trained on, as the paper does for
cross-dataset generalisation.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from core.checkpoint import resolve_checkpoint
from core.data.datasets import Sample, resolve_dataset
from core.data.files import Skipped, reason_counts
from core.evaluation.metrics import Predictions, classification_metrics, per_source_accuracy, predict
from core.io import DiskCache, atomic_write_json, load_npz, save_npz
from core.models.loading import load_model

CACHE_VERSION = 2  # 2: skipped files counted per reason
_HASHES: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) within the process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def samples_digest(samples: list[Sample]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(f"{sample.path}\0{sample.label}\0{sample.source}\0{sample.video_id}\n".encode())
    return digest.hexdigest()


@dataclass
class Evaluation:
    """Predictions of one checkpoint on one split, with the samples they index into."""

    checkpoint: str
    dataset: str
    split: str
    samples: list[Sample]
    predictions: Predictions
    cached: bool
    images: str = ""  # which images the split is and why (DatasetSplits.describe)
    left_out: list[Skipped] = field(default_factory=list)  # files and rows of the split the dataset did not list

    def metrics(self, threshold: float = 0.5, video_aggregate: str = "mean") -> dict:
        """Metrics on the scored images (``n``); ``skipped`` counts the split's other files and rows, those the
        listing left out and those that did not decode, per reason: ``n + skipped`` is what the split was given.
        ``video`` (when frames carry a video id): :func:`video_level` with ``video_aggregate``."""
        p = self.predictions
        reasons = Counter(p.skipped_reasons)
        reasons.update(reason_counts(self.left_out))
        result = {
            "checkpoint": self.checkpoint, "data": self.dataset, "split": self.split, "images": self.images,
            **classification_metrics(p.labels, p.probabilities, threshold),
            "skipped": p.skipped + len(self.left_out), "skipped_reasons": dict(reasons),
            "per_source": per_source_accuracy(self.samples, p, threshold),
            "cached": self.cached,
        }
        video = video_level(self.samples, p, video_aggregate)
        if video is not None:
            result["video"] = video
        return result

    def roc(self, points: int = 200) -> dict:
        """The ROC curve (at most ``points`` points, both ends kept) and its AUC."""
        return roc_curve(self.predictions.labels, self.predictions.probabilities, points)

    def correct(self, threshold: float = 0.5) -> dict[str, bool]:
        """Per-sample correctness keyed by image path (for McNemar between checkpoints)."""
        p = self.predictions
        hits = (p.probabilities > threshold).astype(int) == p.labels
        return {self.samples[i].path: bool(hit) for i, hit in zip(p.indices, hits, strict=True)}


def roc_curve(labels: np.ndarray, probabilities: np.ndarray, points: int = 200) -> dict:
    if len(np.unique(labels)) < 2:
        return {"fpr": [], "tpr": [], "auc": float("nan")}
    fpr, tpr, _ = skm.roc_curve(labels, probabilities)
    if len(fpr) > points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(skm.roc_auc_score(labels, probabilities))}


def roc_figure(curves: dict[str, dict], title: str | None = "ROC curves"):
    """The ROC figure (plotly; the report's and the dashboard's): each named curve of :func:`roc_curve` with its AUC
    in the legend, and chance."""
    import plotly.graph_objects as go  # imported when a figure is drawn (slow to import)

    figure = go.Figure()
    for name, roc in curves.items():
        figure.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"{name} (AUC {roc['auc']:.3f})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"))
    figure.update_layout(title=title, xaxis_title="false-positive rate", yaxis_title="true-positive rate")
    return figure


VIDEO_AGGREGATES = {"mean": np.mean, "median": np.median, "max": np.max}


def video_level(samples: list[Sample], predictions: Predictions, aggregate: str = "mean") -> dict | None:
    """Video-level metrics when frames carry a video id: one score per video, by default the mean of its frames'
    probabilities (DeepfakeBench's video AUC), and AUC, EER, AP and accuracy (at 0.5) over those scores.

    A video's label is its frames' majority label; ``None`` when no frame names a video.
    """
    videos: dict[str, list[int]] = {}
    for position, index in enumerate(predictions.indices):
        video_id = samples[index].video_id
        if video_id:
            videos.setdefault(video_id, []).append(position)
    if not videos:
        return None
    if aggregate not in VIDEO_AGGREGATES:
        raise ValueError(f"unknown video aggregate {aggregate!r}; choose from {', '.join(VIDEO_AGGREGATES)}")
    reduce = VIDEO_AGGREGATES[aggregate]
    scores = np.array([reduce(predictions.probabilities[positions]) for positions in videos.values()])
    labels = np.array([int(round(predictions.labels[positions].mean())) for positions in videos.values()])
    metrics = classification_metrics(labels, scores)
    return {"videos": len(videos), "aggregate": aggregate,
            **{key: metrics[key] for key in ("auc", "eer", "ap", "accuracy")}}


PREDICTIONS_CACHE = DiskCache("predictions", CACHE_VERSION, ".npz")


def _cache_entry(path: Path, samples: list[Sample], split: str) -> Path:
    return PREDICTIONS_CACHE.path({"checkpoint": file_digest(path), "samples": samples_digest(samples), "split": split})


def _stored_predictions(entry: Path) -> Predictions:
    stored = load_npz(entry)
    reasons = dict(zip(stored["reason_names"].tolist(), stored["reason_counts"].tolist(), strict=True))
    return Predictions(stored["probabilities"], stored["labels"], stored["indices"], int(stored["skipped"]),
                       float(stored["loss"]), reasons)


def store_predictions(checkpoint: str | os.PathLike, samples: list[Sample], split: str, predictions: Predictions,
                      dataset: str = "") -> None:
    """Put predictions computed elsewhere (the engine's final test) into the cache."""
    path = resolve_checkpoint(checkpoint)
    entry = _cache_entry(path, samples, split)
    reasons = predictions.skipped_reasons
    PREDICTIONS_CACHE.write(entry, lambda tmp: save_npz(tmp, {
        "probabilities": predictions.probabilities, "labels": predictions.labels, "indices": predictions.indices,
        "skipped": predictions.skipped, "loss": predictions.loss, "reason_names": np.array(list(reasons), dtype=str),
        "reason_counts": np.array(list(reasons.values()), dtype=int)}))
    atomic_write_json(entry.with_suffix(".json"), {"checkpoint": str(path), "data": dataset, "split": split, "n": len(samples)})


def evaluate(checkpoint: str | os.PathLike, data: str, split: str = "test", data_root: str | None = None,
             device: str = "cpu", batch_size: int = 64, num_workers: int = 0, progress: bool = True,
             use_cache: bool = True) -> Evaluation:
    """Predictions of ``checkpoint`` on ``data``/``split``, from the cache when they are there."""
    path = resolve_checkpoint(checkpoint)
    dataset = resolve_dataset(data, data_root)
    samples = dataset.split(split)
    entry = _cache_entry(path, samples, split)
    cached = PREDICTIONS_CACHE.read(entry, _stored_predictions) if use_cache else None
    if cached is not None:
        return Evaluation(str(checkpoint), dataset.name, split, samples, cached, cached=True,
                          images=dataset.describe(split), left_out=dataset.skipped_in(split))

    model = load_model(path, device=device)
    predictions = predict(model, samples, model.preprocess, batch_size, device, num_workers, progress,
                          desc=f"evaluate {path.name} on {dataset.name}/{split}")
    if use_cache:
        store_predictions(path, samples, split, predictions, dataset.name)
    return Evaluation(str(checkpoint), dataset.name, split, samples, predictions, cached=False,
                      images=dataset.describe(split), left_out=dataset.skipped_in(split))
