"""TensorBoard event files of a run (``<run>/events/``), written from the records of ``metrics.jsonl``.

The run's metrics file stays the one home of every number; this module only mirrors each record into
``torch.utils.tensorboard`` scalars as it is appended, so ``tensorboard --logdir runs`` (``make tensorboard``) shows
every run as it trains:

- ``train/*`` per logged step (x = global step): the loss, each loss term, the learning rate, images/s;
- ``val/*`` and ``train/epoch_*`` per epoch (x = epochs done): validation accuracy, AUC and loss, the epoch's mean
  training loss and images/s;
- ``pruning/*`` per epoch for pruning methods: every number their epoch summary holds (τ as ``temperature``, the
  active fraction, MACs and params reductions, ...), and a histogram of the per-layer keep probabilities;
- ``test/*`` once, at the end (x = the last epoch): accuracy, AUC, EER, and the share of test images in distribution.

Only rank 0 writes. On resume the writer purges what comes after the resume point, so an epoch that a killed run
repeats is not drawn twice.
"""

from __future__ import annotations

import os
from pathlib import Path

EVENTS_DIR = "events"
_SKIP = {"type", "epoch", "epochs", "step", "steps", "time", "skipped", "nonfinite_skipped", "replicas_identical"}
_VAL = {"val_accuracy": "val/accuracy", "val_auc": "val/auc", "val_loss": "val/loss",
        "train_loss": "train/epoch_loss", "images_per_s": "train/epoch_images_per_s", "train_seconds": "train/epoch_seconds"}


class EventLog:
    """``record(metrics record)`` -> TensorBoard events under ``run_dir/events``; ``close()`` at the end."""

    def __init__(self, run_dir: str | os.PathLike, steps_per_epoch: int, purge_epoch: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

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
                self.writer.add_scalar(_VAL.get(key, f"pruning/{key}"), value, step)
        elif kind == "test":
            step = self.last_epoch * self.steps_per_epoch
            for key in ("accuracy", "auc", "eer", "ood_test_in_distribution"):
                if _is_number(record.get(key)):
                    self.writer.add_scalar(f"test/{key.removeprefix('ood_test_')}", record[key], step)
        if kind in ("epoch", "test"):
            self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is no point


def _tensor(values: list):
    import torch

    return torch.tensor([float(v) for v in values])
