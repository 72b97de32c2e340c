"""Evaluation: ROC curves overlaid, confusion matrices, per-source accuracy, the cross-dataset heatmaps (frame- and
video-level AUC, on the embedded sources and any datasets added), McNemar."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from access_ui import can, guarded_spec
from common import checkpoint_label, pick_checkpoints
from core.data.synthetic import SOURCES
from core.evaluation.evaluate import roc_figure
from core.stats import mcnemar_paired

st.title("Evaluation")
choices, picked = pick_checkpoints("evaluation_pick")
datasets = ["synthetic", *[f"synthetic:{s}" for s in SOURCES]]
data = st.selectbox("Tested on", datasets, index=2, key="evaluation_data",
                    help="the embedded benchmark or one of its sources; real datasets: `python -m core evaluate/report`")
threshold = st.slider("Decision threshold", 0.05, 0.95, 0.5, 0.05, key="evaluation_threshold")
if not picked:
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluation(path: str, stamp: float, data: str, split: str) -> dict:
    """Metrics, ROC and per-sample correctness (predictions come from core's on-disk cache when present)."""
    from core.evaluation.evaluate import evaluate

    evaluation = evaluate(path, data, split, progress=False)
    return {"metrics": evaluation.metrics(), "roc": evaluation.roc(), "probabilities": evaluation.predictions.probabilities,
            "labels": evaluation.predictions.labels, "paths": [evaluation.samples[i].path for i in evaluation.predictions.indices]}


def _stamp(path: str) -> float:
    from core.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path).stat().st_mtime


def _evaluate_all(names: list[str], data: str) -> dict[str, dict]:
    results = {}
    bar = st.progress(0.0, text=f"evaluating on {data}...")
    for index, name in enumerate(names):
        results[name] = _evaluation(choices[name], _stamp(choices[name]), data, "test")
        bar.progress((index + 1) / len(names), text=f"{index + 1}/{len(names)} checkpoints on {data}")
    bar.empty()
    return results


results = _evaluate_all(picked, data)


def _at_threshold(result: dict) -> dict:
    from core.evaluation.metrics import classification_metrics

    return classification_metrics(result["labels"], result["probabilities"], threshold)


st.subheader("ROC curves")
roc = roc_figure({name: result["roc"] for name, result in results.items()}, title=None)
st.plotly_chart(roc.update_layout(height=450, margin={"t": 20}), width="stretch")

metrics = {name: _at_threshold(result) for name, result in results.items()}
st.dataframe(pd.DataFrame([{"checkpoint": n, **{k: m[k] for k in ("n", "accuracy", "precision", "recall", "f1", "auc", "eer",
                                                                     "ap")}} for n, m in metrics.items()]),
             hide_index=True, width="stretch")

st.subheader("Confusion matrices")
columns = st.columns(min(len(metrics), 3))
for column, (name, m) in zip(columns * (len(metrics) // len(columns) + 1), metrics.items(), strict=False):
    c = m["confusion"]
    figure = px.imshow([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], x=["predicted real", "predicted fake"],
                       y=["real", "fake"], text_auto=True, color_continuous_scale="Blues", title=Path(name).name)
    figure.update_layout(height=320, margin={"t": 40, "b": 10}, coloraxis_showscale=False)
    column.plotly_chart(figure, width="stretch")

per_source = {name: result["metrics"]["per_source"] for name, result in results.items()}
if any(len(sources) > 1 for sources in per_source.values()):
    st.subheader("Per-source accuracy")
    st.dataframe(pd.DataFrame({name: {s: v["accuracy"] for s, v in sources.items()} for name, sources in per_source.items()}),
                 width="stretch")

st.subheader("Cross-dataset AUC")


@st.cache_data(show_spinner=False, max_entries=256)
def _matrix_cell(name: str, path: str, stamp: float, spec: tuple[str, str | None, str]) -> pd.DataFrame:
    """One checkpoint's row of core's cross-dataset matrix on one dataset (predictions from core's on-disk cache when
    present); recomputed when the checkpoint file changes. Cached per cell, so the progress bar stays outside."""
    from core.evaluation.cross_dataset import DatasetSpec, cross_dataset_matrix

    return cross_dataset_matrix({name: path}, [DatasetSpec(*spec)])


def _matrix(names: list[str], specs: list) -> pd.DataFrame:
    cells = [(name, spec) for name in names for spec in specs]
    bar = st.progress(0.0, text="cross-dataset matrix...")
    records = []
    for done, (name, spec) in enumerate(cells, start=1):
        records.append(_matrix_cell(name, choices[name], _stamp(choices[name]), (spec.name, spec.root, spec.label)))
        bar.progress(done / len(cells), text=f"{done}/{len(cells)}: {name} on {spec.label}")
    bar.empty()
    return pd.concat(records, ignore_index=True)


def _heatmap(table: pd.DataFrame, title: str) -> None:
    figure = px.imshow(table, text_auto=".3f", color_continuous_scale="RdYlGn", zmin=0.5, zmax=1.0, aspect="auto",
                       labels={"x": "tested on", "y": "checkpoint", "color": "AUC"}, title=title)
    figure.update_layout(height=160 + 60 * len(table), margin={"t": 50})
    st.plotly_chart(figure, width="stretch")


if st.toggle("Evaluate every checkpoint on every source (cached after the first time)", key="evaluation_cross"):
    from core.evaluation.cross_dataset import DatasetSpec, check_dataset_specs, parse_dataset_specs, pivot

    added = st.text_area(
        "More datasets, one per line", key="evaluation_datasets", placeholder="celebdf=/data/celebdf-frames\n/data/dfdc-frames",
        disabled=not can("read_folder"),
        help="`NAME=ROOT`: a registered dataset and its folder (e.g. `celebdf=/data/celebdf-frames`, face crops written "
             "by `python -m core data frames`); `NAME`: `synthetic:<source>`; or a folder/CSV path. Datasets whose "
             "frames carry a video id get video-level AUC too (a video's score: the mean of its frames' P(fake)).")
    try:
        extra = parse_dataset_specs(added)
        extra = [guarded_spec(spec) for spec in extra]  # every folder inside a data root (a trainer's read, audited)
        check_dataset_specs(extra)
    except ValueError as error:  # a DatasetError too: the spec and what to change
        st.error(f"{error}")
        extra = None
    if extra is not None:
        specs = [DatasetSpec(f"synthetic:{source}", label=source) for source in SOURCES] + extra
        records = _matrix(picked, specs)
        _heatmap(pivot(records, "frame_auc"), "Frame-level AUC")
        with_videos = records[records["videos"] > 0]
        if len(with_videos):
            _heatmap(pivot(with_videos, "video_auc"), "Video-level AUC (mean of a video's frames)")
        else:
            st.caption("Video-level AUC: none of these datasets gives its frames a video id.")

st.subheader("McNemar's test")
if len(picked) >= 2:
    first, second = st.columns(2)
    a = first.selectbox("A", picked, index=0, key="mcnemar_a", format_func=checkpoint_label)
    b = second.selectbox("B", picked, index=1, key="mcnemar_b", format_func=checkpoint_label)
    hits = {}
    for name in (a, b):
        result = results[name]
        hits[name] = dict(zip(result["paths"], (result["probabilities"] > threshold).astype(int) == result["labels"],
                              strict=True))
    report = mcnemar_paired(hits[a], hits[b])
    table = report["table"]
    st.dataframe(pd.DataFrame(table, index=["A correct", "A wrong"], columns=["B correct", "B wrong"]), width="stretch")
    st.write(f"{report['method']}: statistic {report['statistic']:.3f}, p = {report['p_value']:.4g} — "
             f"{'a significant' if report['significant_at_0.05'] else 'no significant'} difference at 0.05 "
             f"(accuracy A {report['accuracy_a']:.4f}, B {report['accuracy_b']:.4f}, n = {report['n']}).")
else:
    st.caption("Pick two checkpoints to compare them.")
