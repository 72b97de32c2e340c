"""The cross-dataset protocol: every checkpoint on every dataset, frame- and video-level, as DeepfakeBench reports it.

A dataset is named by a *spec*, several separated by commas or new lines:

- ``NAME=ROOT``: a registered dataset with its own root, e.g. ``celebdf=/data/celebdf-frames`` (``NAME`` has no
  ``/``), so each benchmark of one report or matrix has its own folder;
- ``NAME``: a registered dataset under the default root (``--data-root``), or ``synthetic`` / ``synthetic:<source>``;
- a folder or CSV path, e.g. a folder of face crops written by ``python -m core data frames``.

The matrix (:func:`cross_dataset_matrix`) has one row per checkpoint and dataset: frame-level accuracy, AUC, EER and
AP, and, where the dataset's frames carry a video id, the video-level ones (a video's score is the mean of its frames'
P(fake), DeepfakeBench's video AUC). ``report`` and the dashboard's Evaluation page both draw it.

A dataset counts as one of DeepfakeBench's benchmarks (the columns of its published table, ``deepfakebench`` in
``configs/protocols.yaml``: ``ffpp``, ``celebdf``, ``dfdc``) by its name as the loader resolves it: the registered
name, or a ``data frames`` folder's layout (its ``frames.json``), so ``report`` can put the published rows beside ours.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.config import load_protocols
from core.data.datasets import DatasetError, resolve_dataset
from core.evaluation.evaluate import Evaluation, evaluate

PUBLISHED_ENTRY = "deepfakebench"  # configs/protocols.yaml: DeepfakeBench's frame-level AUC, trained on FF++ c23
FRAME_METRICS = ("accuracy", "auc", "eer", "ap")
VIDEO_METRICS = ("auc", "eer", "ap", "accuracy")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a matrix: what :func:`core.data.datasets.resolve_dataset` is given, and the name tables use."""

    name: str  # a registered name, synthetic[:<source>], or a folder/CSV path
    root: str | None = None  # the registered dataset's root (--data-root)
    label: str = ""  # the column a table or heatmap shows it under (default: the name)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def text(self) -> str:
        """The spec as a user writes it."""
        return f"{self.name}={self.root}" if self.root else self.name

    @property
    def is_named(self) -> bool:
        """A registered name (or synthetic), not a path."""
        return "/" not in self.name and os.sep not in self.name and Path(self.name).suffix.lower() != ".csv"


def parse_dataset_specs(specs: str | Iterable[str], default_root: str | None = None) -> list[DatasetSpec]:
    """Specs separated by commas or new lines (or already split): ``NAME=ROOT``, ``NAME`` or a path.

    Blank items are ignored; an item with an empty name or root, or two items under one label, is refused with
    what to write instead.
    """
    items = specs.replace("\n", ",").split(",") if isinstance(specs, str) else list(specs)
    parsed: dict[str, DatasetSpec] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        name, equals, root = item.partition("=")
        name, root = name.strip(), root.strip()
        if equals and "/" not in name and os.sep not in name:
            if not name or not root:
                raise ValueError(f"dataset spec {item!r}: write NAME=ROOT (e.g. celebdf=/data/celebdf-frames), "
                                 "NAME, or a folder path")
            spec = DatasetSpec(name, root)
        else:
            spec = DatasetSpec(item, default_root if DatasetSpec(item).is_named else None)
        if spec.label in parsed:
            raise ValueError(f"dataset {spec.label!r} is given twice ({parsed[spec.label].text}; {spec.text}): "
                             "give each dataset once")
        parsed[spec.label] = spec
    return list(parsed.values())


def check_dataset_specs(specs: Sequence[DatasetSpec], split: str = "test") -> None:
    """Load each dataset once, so a wrong name, root or folder is refused before any evaluation, naming the spec."""

    for spec in specs:
        try:
            dataset = resolve_dataset(spec.name, spec.root)
        except DatasetError as error:
            raise DatasetError(f"dataset {spec.text!r}: {error}") from None
        if not dataset.split(split):
            raise DatasetError(f"dataset {spec.text!r} has no {split} split ({dataset.describe(split)})")


def published_benchmarks() -> dict:
    """DeepfakeBench's published entry: ``source``, ``level``, ``metric`` and ``rows`` (detector -> benchmark -> value)."""
    return load_protocols()[PUBLISHED_ENTRY]


def benchmark_of(dataset: str) -> str | None:
    """Which of DeepfakeBench's benchmarks a dataset is, by its name as resolved (``DatasetSplits.name``,
    ``Evaluation.dataset``): ``ffpp``, ``celebdf`` or ``dfdc`` (registered by that name, or a ``data frames`` folder,
    which the loader names after the layout its ``frames.json`` records), or ``deepfakebench:<index>`` for the
    index DeepfakeBench gives that benchmark (``deepfakebench_index`` in ``configs/protocols.yaml``)."""
    benchmarks = published_benchmarks()["benchmarks"]
    named, _, variant = dataset.partition(":")
    if dataset.lower() in benchmarks:
        return dataset.lower()
    if named.lower() == "deepfakebench":
        return next((name for name, facts in benchmarks.items() if facts.get("deepfakebench_index") == variant), None)
    return None


def evaluate_matrix(checkpoints: Mapping[str, str | os.PathLike], specs: Sequence[DatasetSpec], split: str = "test",
                    progress: bool = False) -> dict[tuple[str, str], Evaluation]:
    """Every checkpoint (name -> path) on every dataset: ``(checkpoint name, dataset label) -> Evaluation``, from the
    prediction cache where it can."""
    return {(name, spec.label): evaluate(checkpoint, spec.name, split, spec.root, progress=progress)
            for name, checkpoint in checkpoints.items() for spec in specs}


def matrix_records(evaluations: Mapping[tuple[str, str], Evaluation], threshold: float = 0.5) -> pd.DataFrame:
    """One row per (checkpoint, dataset): ``frames`` and ``frame_<metric>``, and ``videos`` and ``video_<metric>``
    (``NaN`` where the frames carry no video id)."""
    rows = []
    for (checkpoint, dataset), evaluation in evaluations.items():
        metrics = evaluation.metrics(threshold)
        video = metrics.get("video") or {}
        rows.append({"checkpoint": checkpoint, "dataset": dataset, "frames": metrics["n"],
                     **{f"frame_{key}": metrics[key] for key in FRAME_METRICS},
                     "videos": video.get("videos", 0),
                     **{f"video_{key}": video.get(key, float("nan")) for key in VIDEO_METRICS}})
    columns = ["checkpoint", "dataset", "frames", *(f"frame_{k}" for k in FRAME_METRICS), "videos",
               *(f"video_{k}" for k in VIDEO_METRICS)]
    return pd.DataFrame(rows, columns=columns)


def cross_dataset_matrix(checkpoints: Mapping[str, str | os.PathLike], specs: Sequence[DatasetSpec], split: str = "test",
                         progress: bool = False, threshold: float = 0.5) -> pd.DataFrame:
    """:func:`matrix_records` of :func:`evaluate_matrix`: the long-form matrix of metrics, checkpoints x datasets."""
    return matrix_records(evaluate_matrix(checkpoints, specs, split, progress), threshold)


def pivot(records: pd.DataFrame, column: str) -> pd.DataFrame:
    """One metric of the matrix as a checkpoints x datasets table, in the records' order."""
    table = records.pivot(index="checkpoint", columns="dataset", values=column)
    return table.reindex(index=list(dict.fromkeys(records["checkpoint"])), columns=list(dict.fromkeys(records["dataset"])))
