"""Training curves of runs and checkpoints, as tables a plot can overlay (the dashboard's Training curves page).

Where the numbers come from, best first:

- a **run directory**: ``metrics.jsonl``, its one home: every logged step (each loss term, lr, images/s) and every
  epoch (validation accuracy, AUC and loss, the epoch's mean loss terms, and for pruning methods τ, the active
  fraction, MACs and params reductions); it grows while the run trains;
- a **checkpoint** written by this engine: its header's ``history``, one entry per epoch (the same epoch numbers);
- an older checkpoint: its header's ``mask_history`` (the shipped students: their search run's epochs), or else only
  its ``metrics`` (the best epoch), and a note says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.checkpoint import read_header, resolve_checkpoint
from core.runs import Run, history_entry

# the per-epoch numbers the page plots, with their labels
EPOCH_METRICS = {
    "val_accuracy": "validation accuracy", "val_auc": "validation AUC", "train_loss": "training loss (epoch mean)",
    "val_loss": "validation loss", "active_fraction": "active filters (fraction)", "macs_reduction": "MACs reduction",
    "params_reduction": "params reduction", "temperature": "τ (Gumbel temperature)", "sparsity": "weight sparsity",
}
# step-record keys that are not loss terms
_NOT_TERMS = {"type", "epoch", "step", "steps", "time", "lr", "images_per_s"}


@dataclass
class Curves:
    """One run's or checkpoint's curves: ``steps`` (one row per logged step), ``epochs`` (one row per epoch)."""

    name: str
    path: str
    status: str | None = None  # a run's status (running, finished, ...); None for a checkpoint
    steps: list[dict] = field(default_factory=list)  # {"global_step", "epoch" (fractional), "lr", <loss terms>...}
    epochs: list[dict] = field(default_factory=list)  # {"epoch" (1-based), "global_step" or None, <numbers>...}
    note: str = ""

    @property
    def loss_terms(self) -> list[str]:
        """The loss terms the steps record (``loss`` first), in the order they appear."""
        names = dict.fromkeys(key for row in self.steps for key in row if key not in _NOT_TERMS | {"global_step"})
        return sorted(names, key=lambda name: name != "loss")


def run_curves(run: Run) -> Curves:
    """A run directory's curves from its ``metrics.jsonl`` (read as it is now: a run in progress gives what it has)."""
    steps, epochs = [], []
    steps_per_epoch = None
    for record in run.metrics():
        kind = record.get("type")
        if kind == "step":
            steps_per_epoch = int(record["steps"])
            global_step = int(record["epoch"]) * steps_per_epoch + int(record["step"])
            steps.append({"global_step": global_step, "epoch": int(record["epoch"]) + int(record["step"]) / steps_per_epoch,
                          **{k: v for k, v in history_entry(record).items() if k not in ("epoch", "step", "steps")}})
        elif kind == "epoch":
            epochs.append(_epoch_row(history_entry(record), steps_per_epoch))
    status = run.status().get("status")
    note = "" if epochs else "no epoch has finished yet" if status == "running" else "no epoch records"
    return Curves(run.dir.name, str(run.dir), status, steps, epochs, note)


def checkpoint_curves(path: str | os.PathLike) -> Curves:
    """A checkpoint's per-epoch curves from its header (``history``, else ``mask_history``, else its best epoch)."""
    path = resolve_checkpoint(path)
    header = read_header(path)
    if header.get("history"):
        rows, note = header["history"], ""
    elif header.get("mask_history"):
        rows = header["mask_history"]
        note = ("the search run's epochs (its mask history); the checkpoint was then fine-tuned, whose epochs the file "
                "does not hold" if header.get("finetuned_from") else "the run's mask history")
    else:
        metrics = header.get("metrics", {})
        rows = [{**metrics, "epoch": int(metrics.get("epoch", 1)) - 1}] if metrics else []
        note = f"only the best epoch ({metrics.get('epoch', '?')}) is recorded in this file; its training history was not kept"
    epochs = [_epoch_row(history_entry(row), None) for row in rows]
    return Curves(path.name, str(path), None, [], epochs, note)


def curves_of(path: str | os.PathLike) -> Curves:
    """A run directory's curves (from ``metrics.jsonl``), or a checkpoint file's (from its header)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return run_curves(Run.open(path))
    return checkpoint_curves(path)


def _epoch_row(entry: dict, steps_per_epoch: int | None) -> dict:
    epoch = int(entry.get("epoch", 0)) + 1  # records count from 0; the plots from 1 (epochs done)
    return {**entry, "epoch": epoch, "global_step": epoch * steps_per_epoch if steps_per_epoch else None}


def long_steps(curves: list[Curves]) -> list[dict]:
    """Step rows of every source in long form: ``run, global_step, epoch, term, value`` (one row per loss term)."""
    return [{"run": c.name, "global_step": row["global_step"], "epoch": row["epoch"], "term": term, "value": row[term]}
            for c in curves for row in c.steps for term in c.loss_terms if term in row]


def long_epochs(curves: list[Curves], metrics: dict[str, str] = EPOCH_METRICS) -> list[dict]:
    """Epoch rows of every source in long form: ``run, epoch, global_step, metric, value`` for the ``metrics`` each has."""
    return [{"run": c.name, "epoch": row["epoch"], "global_step": row["global_step"], "metric": label, "value": row[key]}
            for c in curves for row in c.epochs for key, label in metrics.items() if key in row]


def epoch_loss_terms(curves: list[Curves]) -> list[dict]:
    """The epochs' mean loss terms (``train_<term>``) in long form, for sources without step records (checkpoints)."""
    return [{"run": c.name, "epoch": row["epoch"], "global_step": row["global_step"],
             "term": "loss" if key == "train_loss" else key.removeprefix("train_"), "value": row[key]}
            for c in curves if not c.steps for row in c.epochs for key in row
            if key.startswith("train_") and key != "train_seconds"]
