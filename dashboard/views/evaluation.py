"""Evaluation: ROC curves overlaid, confusion matrices, per-source accuracy, the cross-dataset heatmap, McNemar."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from common import checkpoint_label, pick_checkpoints
from core.data.synthetic import SOURCES
from core.stats import mcnemar_report

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
roc = go.Figure()
for name, result in results.items():
    roc.add_trace(go.Scatter(x=result["roc"]["fpr"], y=result["roc"]["tpr"], mode="lines",
                             name=f"{name} (AUC {result['roc']['auc']:.3f})"))
roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"))
roc.update_layout(xaxis_title="false-positive rate", yaxis_title="true-positive rate", height=450, margin={"t": 20})
st.plotly_chart(roc, width="stretch")

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

st.subheader("Cross-dataset accuracy")
if st.toggle("Evaluate every checkpoint on every source (cached after the first time)", key="evaluation_cross"):
    matrix = {}
    for source in SOURCES:
        for name, result in _evaluate_all(picked, f"synthetic:{source}").items():
            matrix.setdefault(name, {})[source] = result["metrics"]["accuracy"]
    frame = pd.DataFrame(matrix).T
    figure = px.imshow(frame, text_auto=".3f", color_continuous_scale="RdYlGn", zmin=0.5, zmax=1.0, aspect="auto",
                       labels={"x": "tested on", "y": "checkpoint", "color": "accuracy"})
    figure.update_layout(height=120 + 60 * len(frame), margin={"t": 20})
    st.plotly_chart(figure, width="stretch")

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
    common = sorted(hits[a].keys() & hits[b].keys())
    report = mcnemar_report([hits[a][k] for k in common], [hits[b][k] for k in common])
    table = report["table"]
    st.dataframe(pd.DataFrame(table, index=["A correct", "A wrong"], columns=["B correct", "B wrong"]), width="stretch")
    st.write(f"{report['method']}: statistic {report['statistic']:.3f}, p = {report['p_value']:.4g} — "
             f"{'a significant' if report['significant_at_0.05'] else 'no significant'} difference at 0.05 "
             f"(accuracy A {report['accuracy_a']:.4f}, B {report['accuracy_b']:.4f}, n = {report['n']}).")
else:
    st.caption("Pick two checkpoints to compare them.")
