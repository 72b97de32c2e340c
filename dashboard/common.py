"""Helpers shared by the pages: cached listings and checkpoint loading (no analysis logic here)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.catalog import checkpoint_rows, run_rows


def listing(kind: str) -> list[dict]:
    """Shipped checkpoints or runs (of the runs folder in effect now), as rows (refreshed every few seconds)."""
    from core.runs import default_runs_dir

    return _listing(kind, str(default_runs_dir()))


@st.cache_data(ttl=5, show_spinner=False)
def _listing(kind: str, runs_dir: str) -> list[dict]:
    return checkpoint_rows() if kind == "checkpoints" else run_rows(Path(runs_dir))


listing.clear = _listing.clear  # after a launch: the next look lists the new run at once


def _checkpoint_rows() -> dict[str, dict]:
    """Name -> listing row, for every shipped checkpoint and every run with a checkpoint (damaged ones are listed
    with their error on the Overview and Runs pages, never offered to the others)."""
    rows = {f"shipped: {row['checkpoint']}": row for row in listing("checkpoints") if "error" not in row}
    for row in listing("runs"):
        path = Path(row["path"])
        if "error" not in row and ((path / "best.safetensors").is_file() or (path / "last.safetensors").is_file()):
            rows[f"run: {row['run']}"] = row
    return rows


def all_checkpoints() -> dict[str, str]:
    """Display name -> checkpoint path, for every shipped checkpoint and every run with a checkpoint."""
    return {name: row["path"] for name, row in _checkpoint_rows().items()}


def checkpoint_label(name: str) -> str:
    """How a picker shows a checkpoint: its name, kind and architecture, and whether it has an out-of-distribution
    calibration (its own, or its sidecar's; predict and live inference then say when a photo is unlike its training
    data). A name that is not a checkpoint (a picker's "default" entry) is shown as it is."""
    row = _checkpoint_rows().get(name)
    if row is None:
        return name
    calibration = "ood calibration: yes" if row.get("ood_calibration") else "ood calibration: no"
    return f"{name} ({row.get('kind')} {row.get('arch')}; {calibration})"


def listing_frame(rows: list[dict], columns: list[str] | None = None):
    """Listing rows as a table: the sidecar flag as "yes"/"no", ``path`` left out, ``columns`` (when given) in order."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if "ood_calibration" in frame.columns:
        frame["ood_calibration"] = frame["ood_calibration"].map({True: "yes", False: "no"})
    frame = frame.rename(columns={"ood_calibration": "ood calibration"})
    if columns is not None:
        return frame[[c for c in columns if c in frame.columns]]
    return frame.drop(columns=["path"], errors="ignore")


@st.cache_data(show_spinner=False)
def header_of(path: str, stamp: float) -> dict:
    from core.checkpoint import read_header

    return read_header(path)


def header(path: str) -> dict:
    """A checkpoint's header, re-read when the file changes."""
    from core.checkpoint import resolve_checkpoint

    resolved = resolve_checkpoint(path)
    return header_of(str(resolved), resolved.stat().st_mtime)


def students() -> dict[str, str]:
    """The checkpoints that are pruned students (their header has a ``pruning`` record)."""
    return {name: path for name, path in all_checkpoints().items() if header(path).get("pruning")}


def teacher_of(path: str, same_arch: bool = True) -> str | None:
    """The teacher checkpoint a student learned from, when it is still on disk (and, by default, of the student's
    architecture: a PDD ResNet-18's layers do not line up with its ResNet-50 teacher's)."""
    from core.checkpoint import CheckpointError, resolve_checkpoint

    teacher = header(path).get("teacher")
    try:
        resolved = str(resolve_checkpoint(teacher)) if teacher else None
    except (CheckpointError, OSError):
        return None
    if resolved and same_arch and header(resolved)["model"].get("arch") != header(path)["model"].get("arch"):
        return None
    return resolved


def search_checkpoint_of(path: str) -> str | None:
    """The masked search checkpoint a fine-tuned compact student came from, when it is still on disk."""
    from core.checkpoint import CheckpointError, resolve_checkpoint

    source = header(path).get("finetuned_from")
    try:
        resolved = str(resolve_checkpoint(source)) if source else None
    except (CheckpointError, OSError):
        return None
    return resolved if resolved and header(resolved)["model"].get("type") == "masked-resnet" else None


@st.cache_resource(show_spinner="loading the model (the first time on this machine, auto exports it and measures each "
                                "runtime: a minute for a ResNet-50; then cached)...", max_entries=12)
def _model(path: str, stamp: float, serve: bool, runtime: str = "torch"):
    import core

    return core.load_model(path, serve=serve, runtime=runtime, progress=False)


def model(path: str):
    """A checkpoint's eval-mode model as trained: the pages hook layers, read BatchNorms and take gradients (Grad-CAM).
    Shared across pages and sessions; re-loaded when the file changes."""
    from core.checkpoint import resolve_checkpoint

    resolved = resolve_checkpoint(path)
    return _model(str(resolved), resolved.stat().st_mtime, False)


def served_model(path: str, runtime: str | None = None):
    """A checkpoint's model as it serves, by ``runtime`` (default: ``core.load_model``'s, auto: the runtime measured
    fastest here; its ``runtime`` attribute says what answers): for verdicts, not for gradients."""
    from core.checkpoint import resolve_checkpoint
    from core.deploy.runtimes import default_runtime

    resolved = resolve_checkpoint(path)
    return _model(str(resolved), resolved.stat().st_mtime, True, runtime or default_runtime())


@st.cache_resource(show_spinner=False, max_entries=16)
def _ood(path: str, stamp: float):
    from core.evaluation.ood import load_ood

    return load_ood(path)


def ood_model(path: str):
    """A checkpoint's out-of-distribution model (its own, or its sidecar's), or None."""
    from core.checkpoint import resolve_checkpoint, sidecar_path

    resolved = resolve_checkpoint(path)
    sidecar = sidecar_path(resolved)
    return _ood(str(resolved), resolved.stat().st_mtime + (sidecar.stat().st_mtime if sidecar.is_file() else 0))


@st.cache_data(show_spinner=False, ttl=60)
def test_samples(data: str) -> list:
    """The test split of a dataset spec (``synthetic``, ``synthetic:<source>``, ...)."""
    from core.data.datasets import resolve_dataset

    return resolve_dataset(data).split("test")


PAPER_LAYER = "layer1.0.conv2"  # the paper's "layer 2 of block 1"


def pick_student_and_layer(prefix: str, prefer: str | None = None) -> tuple[str, str]:
    """The shared student + layer pickers (keys ``<prefix>_student``, ``<prefix>_layer``); stops the page if none.

    ``prefer`` lists students of that method first (the correlation page opens on Pearson).
    """
    choices = students()
    if not choices:
        st.info("No pruned student yet: train one with method kdfs, pearson or pdd from the sidebar.")
        st.stop()
    names = sorted(choices, key=lambda name: header(choices[name]).get("student_method") != prefer) if prefer else list(choices)
    left, right = st.columns(2)
    path = choices[left.selectbox("Student", names, key=f"{prefix}_student", format_func=checkpoint_label)]
    layers = header(path)["pruning"]["layers"]
    layer = right.selectbox("Layer", layers, index=layers.index(PAPER_LAYER) if PAPER_LAYER in layers else 0,
                            key=f"{prefix}_layer", help=f"{PAPER_LAYER} is the paper's 'layer 2 of block 1'")
    return path, layer


def pick_checkpoints(key: str, default: list[str] | None = None, max_selections: int | None = None) -> tuple[dict[str, str], list[str]]:
    """``(every checkpoint by name, the picked names)`` from a shared multiselect; stops the page when there is none.

    ``default``: names to preselect (by default the shipped ResNet-50 teacher and its students, the paper's
    comparison; else the first checkpoint).
    """
    choices = all_checkpoints()
    if not choices:
        st.info("No checkpoint yet: train one from the sidebar.")
        st.stop()
    if default is None:
        default = [name for name, path in choices.items()
                   if name.startswith("shipped:") and header(path)["model"].get("arch") == "resnet50"]
    preselected = [name for name in default if name in choices] or list(choices)[:1]
    picked = st.multiselect("Checkpoints", list(choices), default=preselected, max_selections=max_selections, key=key,
                            format_func=checkpoint_label)
    return choices, picked


def dataset_summary(spec: str, root: str | None) -> dict:
    """What a run on this dataset would use: one line per split (images, real/fake, and why), or the error.

    Cached per (spec, root) and the modification times of the path and of the folders in it, so a folder
    the user has just filled (or a CSV just saved) is read again at once.
    """
    return _dataset_summary(spec, root, _stamp(root or spec))


def _stamp(path: str) -> tuple:
    """mtimes of ``path`` and its direct entries: adding, removing or renaming a split or class folder changes it."""
    try:
        folder = Path(path)
        return (folder.stat().st_mtime_ns, *sorted(entry.stat().st_mtime_ns for entry in folder.iterdir())) \
            if folder.is_dir() else (folder.stat().st_mtime_ns,)
    except OSError:
        return ()


@st.cache_data(ttl=30, show_spinner=False)
def _dataset_summary(spec: str, root: str | None, stamp: tuple) -> dict:
    from core.data.datasets import DatasetError, resolve_dataset

    try:
        dataset = resolve_dataset(spec, root)
    except (DatasetError, OSError) as error:
        return {"error": str(error)}
    counts = dataset.counts()
    lines = [f"{dataset.describe(split)} ({counts[split]['real']} real, {counts[split]['fake']} fake)" for split in counts]
    lines += [f"left out: {count} {reason}" for reason, count in dataset.dropped_reasons.items()]
    return {"lines": lines, "counts": counts, "provenance": dataset.provenance}
