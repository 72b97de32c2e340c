"""TensorBoard event files of a run (``<run>/events/``), written from the records of ``metrics.jsonl``.

The run's metrics file stays the one home of every number; this module only mirrors each record into
``torch.utils.tensorboard`` scalars as it is appended, so ``tensorboard --logdir runs`` (``make tensorboard``) shows
every run as it trains:

- ``train/*`` per logged step (x = global step): the loss, each loss term, the learning rate, images/s;
- ``val/*`` and ``train/epoch_*`` per epoch (x = epochs done): validation accuracy, AUC and loss, the epoch's mean
  training loss and images/s;
- ``pruning/*`` per epoch for pruning methods: every number their epoch summary holds (τ as ``temperature``, the
  active fraction, MACs and params reductions, ...), and a histogram of the per-layer keep probabilities;
- ``train/epoch_<term>`` per epoch: the epoch's mean of each loss term;
- ``pruning/keep_probability/<stage>`` per epoch for masked students: a histogram of every filter's keep probability
  in each stage (``layer1`` ... ``layer4``);
- ``test/*`` once, at the end (x = the last epoch): accuracy, AUC, EER, and the share of test images in distribution;
  the precision-recall curve ``test/pr`` (TensorBoard draws it; the ROC figure is the report's and the dashboard's,
  :func:`core.evaluation.evaluate.roc_figure`) and, for pruned students, the image ``pruning/active_filters`` (the
  per-layer share of filters the best checkpoint keeps).

Only rank 0 writes. On resume the writer purges what comes after the resume point, so an epoch that a killed run
repeats is not drawn twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

EVENTS_DIR = "events"
_SKIP = {"type", "epoch", "epochs", "step", "steps", "time", "skipped", "nonfinite_skipped", "replicas_identical"}
_VAL = {"val_accuracy": "val/accuracy", "val_auc": "val/auc", "val_loss": "val/loss",
        "train_loss": "train/epoch_loss", "images_per_s": "train/epoch_images_per_s", "train_seconds": "train/epoch_seconds"}


class EventLog:
    """``record(metrics record)`` -> TensorBoard events under ``run_dir/events``; ``close()`` at the end."""

    def __init__(self, run_dir: str | os.PathLike, steps_per_epoch: int, purge_epoch: int | None = None):

        self.steps_per_epoch = max(1, steps_per_epoch)
        purge = None if not purge_epoch else purge_epoch * self.steps_per_epoch
        self.writer = SummaryWriter(str(Path(run_dir) / EVENTS_DIR), purge_step=purge, flush_secs=10)
        self.last_epoch = 0

    def record(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "step":
            step = int(record["epoch"]) * self.steps_per_epoch + int(record["step"])
            for key, value in record.items():
                if key not in _SKIP and _is_number(value):
                    self.writer.add_scalar(f"train/{key}", value, step)
        elif kind == "epoch":
            self.last_epoch = epoch = int(record["epoch"]) + 1
            step = epoch * self.steps_per_epoch  # epoch scalars on the same axis as the steps: overlaid, not apart
            for key, value in record.items():
                if key in _SKIP or not _is_number(value):
                    if key == "keep_probability" and isinstance(value, list) and value:
                        self.writer.add_histogram("pruning/keep_probability_per_layer", _tensor(value), step)
                    continue
                self.writer.add_scalar(_epoch_tag(key), value, step)
        elif kind == "test":
            step = self.last_epoch * self.steps_per_epoch
            for key in ("accuracy", "auc", "eer", "ood_test_in_distribution"):
                if _is_number(record.get(key)):
                    self.writer.add_scalar(f"test/{key.removeprefix('ood_test_')}", record[key], step)
        if kind in ("epoch", "test"):
            self.writer.flush()

    def keep_probabilities(self, by_stage: dict, epoch: int) -> None:
        """One histogram per stage of every filter's keep probability after ``epoch`` (0-based) epochs."""
        for stage, values in by_stage.items():
            self.writer.add_histogram(f"pruning/keep_probability/{stage}", values, (epoch + 1) * self.steps_per_epoch)

    def final_images(self, labels, probabilities, pruning: dict | None) -> None:
        """The test precision-recall curve (TensorBoard's own curve; the ROC figure is the run report's and the
        dashboard's) and, for pruned students, the per-layer active-filter bars as an image, at the last step."""
        step = self.last_epoch * self.steps_per_epoch
        if len(set(labels.tolist())) == 2:
            self.writer.add_pr_curve("test/pr", np.asarray(labels), np.asarray(probabilities), step)
        if pruning and {"layers", "channels", "active_filters"} <= set(pruning):
            self.writer.add_figure("pruning/active_filters", active_filters_figure(pruning), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _epoch_tag(key: str) -> str:
    """An epoch record's key as a TensorBoard tag: validation numbers, the epoch's loss terms, else pruning."""
    if key in _VAL:
        return _VAL[key]
    if key.startswith("train_"):  # the epoch's mean of a loss term (train_bce, train_kd, ...)
        return f"train/epoch_{key.removeprefix('train_')}"
    return f"pruning/{key}"


def active_filters_figure(pruning: dict):
    """Matplotlib bars: the share of each layer's filters that the checkpoint keeps (header ``pruning`` record)."""
    from matplotlib.figure import Figure  # imported when TensorBoard's image is drawn

    percent = [100 * a / c for a, c in zip(pruning["active_filters"], pruning["channels"], strict=True)]
    figure = Figure(figsize=(max(6.0, 0.18 * len(percent)), 3.5), dpi=100)
    axes = figure.subplots()
    axes.bar(range(len(percent)), percent)
    axes.set_xticks(range(len(percent)), pruning["layers"], rotation=90, fontsize=6)
    axes.set(ylabel="% of filters kept", ylim=(0, 100), title="Active filters per layer")
    figure.tight_layout()
    return figure


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is no point


def _tensor(values: list):

    return torch.tensor([float(v) for v in values])
