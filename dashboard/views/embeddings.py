"""Embeddings: UMAP of the penultimate features of teacher and student, coloured by label or source."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from common import all_checkpoints, header, pick_checkpoints, test_samples
from core.data.synthetic import SOURCES
from core.evaluation.inspect import embedding, feature_views, spread_subset

st.title("Embeddings")
st.caption("Each test image as a point: the 2-D UMAP of the features the classifier head sees (global-average-pooled "
           "last stage). A student that kept what matters separates real from fake like its teacher. A dual-branch "
           "(two-in-one) teacher shows its spatial (RGB) and frequency (DCT) branches as two panels.")

shipped = [name for name in all_checkpoints() if name.startswith("shipped:")]
teacher_and_student = [name for name in shipped if "teacher-resnet50" in name][:1] + [name for name in shipped if "student" in name][:1]
choices, picked = pick_checkpoints("embeddings_pick", default=teacher_and_student, max_selections=3)
left, middle, right = st.columns(3)
datasets = ["synthetic", *[f"synthetic:{s}" for s in SOURCES]]
trained_on = header(choices[picked[0]]).get("dataset") if picked else None
data = left.selectbox("Images", datasets, index=datasets.index(trained_on) if trained_on in datasets else 0, key="embeddings_data",
                      help="the test split of the embedded benchmark (all sources) or one source")
limit = middle.slider("Images (evenly spread)", 200, 2400, 600, step=200, key="embeddings_limit")
colour = right.radio("Colour by", ["label", "source"], horizontal=True, key="embeddings_colour")
if not picked:
    st.stop()


results = {}
samples = spread_subset(test_samples(data), limit)
views = [(name, branch) for name in picked for branch in feature_views(header(choices[name]))]
bar = st.progress(0.0, text=f"features of {len(samples)} images...")
with st.spinner("Computing UMAP embeddings (the first one compiles umap-learn: about 10–20 s; then cached on disk)..."):
    for number, (name, branch) in enumerate(views):
        title = f"{name} · {branch} branch" if branch else name

        def _report(done: int, total: int, number: int = number, title: str = title) -> None:
            bar.progress((number + done / total) / len(views), text=f"{title}: features, batch {done}/{total}")

        results[title] = embedding(choices[name], samples, progress=False, on_batch=_report, branch=branch)
bar.empty()

panels = [panel for row in range(0, len(results), 3) for panel in st.columns(min(3, len(results) - row))]
for panel, (name, result) in zip(panels, results.items(), strict=True):
    frame = pd.DataFrame({"x": result["xy"][:, 0], "y": result["xy"][:, 1], "image": result["paths"],
                          "label": ["fake" if label else "real" for label in result["labels"]], "source": result["sources"]})
    figure = px.scatter(frame, x="x", y="y", color=colour, hover_data=["image", "label", "source"], opacity=0.7,
                        title=name.split(": ", 1)[-1], color_discrete_map={"real": "#2ca02c", "fake": "#d62728"})
    figure.update_traces(marker={"size": 5})
    figure.update_layout(height=520, margin={"t": 40, "b": 10}, xaxis={"showticklabels": False, "title": None},
                         yaxis={"showticklabels": False, "title": None}, legend={"orientation": "h", "y": -0.05})
    panel.plotly_chart(figure, width="stretch", key=f"embeddings_{name}")
    panel.metric("5-NN real/fake accuracy of the features", f"{result['knn_accuracy']:.3f}",
                 help="5-fold cross-validated k-nearest-neighbour accuracy on the full features (not the 2-D map)")
