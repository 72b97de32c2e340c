"""Filter correlation: a layer's Pearson correlation before vs after pruning, and redundancy vs keep probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from common import model, pick_student_and_layer, search_checkpoint_of, teacher_of
from core.evaluation.inspect import layer_filters

st.title("Filter correlation")
st.caption("The Pearson method drops filters whose weights correlate with the rest of their layer. Left: the correlation "
           "of every filter of one layer before pruning (pruned filters ticked in red); right: the filters the student kept. "
           "Below: each filter's redundancy score (its mean squared correlation with the others) against the keep "
           "probability the search gave it.")

student_path, layer = pick_student_and_layer("correlation", prefer="pearson")

student = model(student_path)
# "before pruning": the search run's own filters when its masked checkpoint is still here, else the teacher (same arch)
before_path = search_checkpoint_of(student_path) or teacher_of(student_path)
try:
    filters = layer_filters(student, layer, model(before_path) if before_path else None)
except ValueError as error:
    st.error(str(error))
    st.stop()


@st.cache_data(show_spinner=False, max_entries=32)
def _order(correlation: np.ndarray) -> np.ndarray:
    """Filters ordered by hierarchical clustering of |rho|, so correlated groups show as blocks."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1 - np.abs(correlation)
    np.fill_diagonal(distance, 0)
    return leaves_list(linkage(squareform(np.clip(distance, 0, None), checks=False), "average"))


def _heatmap(matrix: np.ndarray, labels: list[int], title: str, pruned: set[int]) -> go.Figure:
    """``matrix`` drawn in the given filter order; hover names the teacher's filter indices."""
    ids = np.asarray(labels)
    figure = go.Figure(go.Heatmap(z=matrix, zmin=-1, zmax=1, colorscale="RdBu_r", colorbar={"title": "ρ"},
                                  customdata=np.dstack(np.meshgrid(ids, ids)),
                                  hovertemplate="filters %{customdata[1]} and %{customdata[0]}: ρ = %{z:.3f}<extra></extra>"))
    if pruned:  # red marks above the columns of the filters the student dropped
        positions = [position for position, filter_id in enumerate(labels) if filter_id in pruned]
        figure.add_trace(go.Scatter(x=positions, y=[-1.5] * len(positions), mode="markers", showlegend=False, name="pruned",
                                    marker={"symbol": "triangle-down", "color": "crimson", "size": 7}, hoverinfo="skip"))
    figure.update_layout(title=title, height=520, margin={"t": 40, "b": 10},
                         xaxis={"showticklabels": False, "constrain": "domain"},
                         yaxis={"showticklabels": False, "autorange": "reversed", "scaleanchor": "x", "constrain": "domain"})
    return figure


cluster = st.toggle("Order filters by correlation cluster", value=True, key="correlation_cluster")
kept = filters.kept
pruned = set(range(filters.channels)) - set(kept)
order = _order(filters.before) if cluster and filters.channels > 2 else np.arange(filters.channels)
after_order = _order(filters.after) if cluster and len(kept) > 2 else np.arange(len(kept))
before_panel, after_panel = st.columns(2)
before_panel.plotly_chart(_heatmap(filters.before[np.ix_(order, order)], [int(i) for i in order],
                                   f"Before: {filters.channels} filters", pruned), width="stretch", key="correlation_before")
after_panel.plotly_chart(_heatmap(filters.after[np.ix_(after_order, after_order)], [kept[i] for i in after_order],
                                  f"After: {len(kept)} kept filters", set()), width="stretch", key="correlation_after")
st.caption(f"Before: {filters.before_source}. After: the student's own weights for the filters it kept"
           + ("" if "own filters" in filters.before_source else ", over the input channels the previous layer kept (in a "
              "compact model a filter no longer sees the pruned inputs, which often raises the correlation)") + ".")


def _mean_abs(matrix: np.ndarray) -> float:
    count = len(matrix)
    return float((np.abs(matrix).sum() - np.abs(np.diag(matrix)).sum()) / (count * (count - 1))) if count > 1 else float("nan")


summary = pd.DataFrame([
    {"filters": "all (before)", "count": filters.channels, "mean |ρ|": _mean_abs(filters.before),
     "mean redundancy": float(filters.redundancy.mean())},
    {"filters": "kept (before)", "count": len(kept), "mean |ρ|": _mean_abs(filters.before[np.ix_(kept, kept)]),
     "mean redundancy": float(filters.redundancy[kept].mean())},
    {"filters": "pruned (before)", "count": len(pruned), "mean |ρ|": _mean_abs(filters.before[np.ix_(sorted(pruned), sorted(pruned))]),
     "mean redundancy": float(filters.redundancy[sorted(pruned)].mean()) if pruned else float("nan")},
    {"filters": "kept (after)", "count": len(kept), "mean |ρ|": _mean_abs(filters.after), "mean redundancy": float("nan")},
])
st.dataframe(summary, hide_index=True, width="stretch")

st.subheader("Redundancy vs keep probability")
if filters.keep_probability is None:
    st.info("This checkpoint does not record the search's keep probabilities.")
else:
    frame = pd.DataFrame({"filter": np.arange(filters.channels), "redundancy score": filters.redundancy,
                          "keep probability": filters.keep_probability,
                          "decision": ["kept" if i in set(kept) else "pruned" for i in range(filters.channels)]})
    scatter = px.scatter(frame, x="redundancy score", y="keep probability", color="decision", hover_data=["filter"],
                         color_discrete_map={"kept": "#1f77b4", "pruned": "crimson"})
    scatter.update_layout(height=420, margin={"t": 20})
    st.plotly_chart(scatter, width="stretch", key="correlation_scatter")
    st.caption("Redundancy and keep probability as recorded at the end of the search (its final temperature), "
               "from the student's filters at that moment.")
