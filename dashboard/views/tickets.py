"""Lottery tickets: accuracy vs sparsity of IMP chains (and one-shot), and Grad-CAM of the dense network vs a ticket."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
import torch

from common import model, test_samples
from core.catalog import ticket_rows
from core.data.images import ImageLoadError, load_image
from core.evaluation.attribution import grad_cam, overlay

st.title("Lottery tickets")
st.caption("Iterative magnitude pruning with rewinding: every round prunes 20% of the remaining conv/linear weights by "
           "global magnitude, rewinds the survivors to their initial values and retrains. Train a chain from the sidebar "
           "(method lth) or `python -m core train --method lth --preset quick --one-shot`.")


@st.cache_data(ttl=5, show_spinner=False)
def _rows() -> list[dict]:
    return ticket_rows()


rows = _rows()
if not rows:
    st.info("No lottery-ticket run yet: launch method lth from the sidebar (a MesoNet chain takes about 3 minutes here).")
    st.stop()
frame = pd.DataFrame(rows)
frame["kind"] = ["one-shot" if chain.endswith("-one-shot") else "IMP" for chain in frame["chain"]]
frame["family"] = [chain.removesuffix("-one-shot") for chain in frame["chain"]]
families = list(dict.fromkeys(frame["family"]))
picked = st.multiselect("Chains", families, default=families[:3], key="tickets_pick",
                        format_func=lambda f: f"{f} ({frame[frame['family'] == f]['arch'].iloc[0]}, "
                                              f"{frame[frame['family'] == f]['dataset'].iloc[0]})")
shown = frame[frame["family"].isin(picked)]
if shown.empty:
    st.stop()

curve = px.line(shown[shown["kind"] == "IMP"], x="sparsity", y="test_accuracy", color="family", markers=True,
                hover_data=["round", "surviving_params", "run"], labels={"test_accuracy": "test accuracy"})
one_shot = shown[shown["kind"] == "one-shot"]
if not one_shot.empty:
    points = px.scatter(one_shot, x="sparsity", y="test_accuracy", color="family", symbol_sequence=["x"],
                        hover_data=["surviving_params", "run"])
    for trace in points.data:
        trace.update(name=f"{trace.name} one-shot", marker={"size": 14})
        curve.add_trace(trace)
curve.update_layout(height=430, margin={"t": 20}, xaxis={"tickformat": ".0%"})
st.subheader("Accuracy vs sparsity")
st.plotly_chart(curve, width="stretch", key="tickets_curve")
dense = shown[shown["round"] == 0].set_index("family")["test_accuracy"]
shown = shown.assign(of_dense=[row.test_accuracy / dense.get(row.family, float("nan")) for row in shown.itertuples()])
st.dataframe(shown[["family", "kind", "round", "sparsity", "surviving_params", "dense_params", "test_accuracy", "of_dense",
                    "test_auc", "run"]].rename(columns={"of_dense": "of dense accuracy"}),
             hide_index=True, width="stretch", column_config={"sparsity": st.column_config.NumberColumn(format="percent")})

st.subheader("Grad-CAM: dense network vs ticket")
family = st.selectbox("Chain", picked, key="tickets_family")
chain = shown[(shown["family"] == family) & (shown["kind"] == "IMP")].sort_values("round")
left, right = st.columns(2)
ticket_round = left.select_slider("Ticket (round)", options=list(chain["round"]), value=int(chain["round"].max()),
                                  key="tickets_round")
samples = test_samples(chain["dataset"].iloc[0] if str(chain["dataset"].iloc[0]).startswith("synthetic") else "synthetic")
index = right.slider("Test image", 0, len(samples) - 1, 0, key="tickets_image")
try:
    image = load_image(samples[index].path)
except ImageLoadError as error:
    st.error(str(error))
    st.stop()
columns = st.columns(2)
for column, run_round in zip(columns, (0, ticket_round), strict=True):
    row = chain[chain["round"] == run_round].iloc[0]
    ticket = model(row["path"])
    tensor = ticket.preprocess(image)
    with torch.no_grad():
        probability = float(ticket(tensor[None]).sigmoid())
    layer = [name for name, module in ticket.named_modules() if module.__class__.__name__ == "Conv2d"][-1]
    heatmap = grad_cam(ticket, tensor, layer)
    column.image(overlay(image, heatmap), width="stretch",
                 caption=f"round {run_round}: {row['sparsity']:.0%} sparse, {row['surviving_params']:,} weights · "
                         f"P(fake) {probability:.3f} · Grad-CAM at {layer}")
st.caption(f"Truly {'fake' if samples[index].label else 'real'} ({samples[index].source}).")
