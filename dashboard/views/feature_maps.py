"""Feature maps: one image through teacher and student, one layer's channels side by side, pruned channels marked."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from access_ui import allowed
from common import header, model, pick_student_and_layer, teacher_of, test_samples
from core.data.images import ImageLoadError, load_image
from core.evaluation.inspect import feature_maps, tile

st.title("Feature maps")
st.caption("What one layer computes for one image, filter by filter: the teacher's maps next to the student's, at the "
           "teacher's channel positions. Blank (red) cells are filters the student pruned.")

student_path, layer = pick_student_and_layer("maps")
teacher_path = teacher_of(student_path)
pruning = header(student_path)["pruning"]
layers = pruning["layers"]

source = st.radio("Image", ["From the benchmark", "Upload"], horizontal=True, key="maps_source")
image, caption = None, ""
if source == "Upload":
    upload = st.file_uploader("An image (PNG, JPEG, ...)", key="maps_upload")
    if upload is not None and allowed("infer", upload.name):
        from core.evaluation.inference import decode_upload

        try:
            image, caption = decode_upload(upload.getvalue(), upload.name), upload.name
        except ImageLoadError as error:
            st.error(f"Cannot use this file: {error}")
else:
    data = header(student_path).get("dataset") or "synthetic"
    try:
        samples = test_samples(data if data.startswith("synthetic") else "synthetic")
    except (ValueError, OSError) as error:
        st.error(f"Cannot read the benchmark: {error}")
        st.stop()
    index = st.slider("Test image", 0, len(samples) - 1, 0, key="maps_index")
    sample = samples[index]
    try:
        image = load_image(sample.path)
        caption = f"{'fake' if sample.label else 'real'} · {sample.source} · {sample.path.rsplit('/', 1)[-1]}"
    except ImageLoadError as error:
        st.error(str(error))
if image is None:
    st.stop()

columns = st.slider("Grid columns", 4, 32, 8, key="maps_columns")
shown = st.slider("Channels shown", 8, max(8, pruning["channels"][layers.index(layer)]),
                  min(64, pruning["channels"][layers.index(layer)]), step=8, key=f"maps_shown_{layer}")


def _grid(title: str, maps: np.ndarray, kept: np.ndarray) -> go.Figure:
    grid = tile(maps[:shown], kept[:shown], columns=columns)
    figure = go.Figure(go.Heatmap(z=grid, colorscale="Viridis", showscale=False, hoverongaps=False))
    figure.update_layout(title=title, height=560, margin={"t": 40, "b": 10, "l": 10, "r": 10}, plot_bgcolor="#f4c7c3",
                         xaxis={"visible": False}, yaxis={"visible": False, "autorange": "reversed", "scaleanchor": "x"})
    return figure


student = model(student_path)
preprocessed = student.preprocess(image)
picture, grids = st.columns([1, 4])
picture.image(image, caption=caption, width="stretch")
maps_student, kept_student = feature_maps(student, preprocessed, layer)
panels = []
if teacher_path:
    teacher = model(teacher_path)
    maps_teacher, kept_teacher = feature_maps(teacher, teacher.preprocess(image), layer)
    panels.append(("teacher", maps_teacher, kept_teacher))
else:
    grids.warning("The student's teacher checkpoint is not on disk, or is another architecture (PDD's ResNet-50 teacher of a "
                  "ResNet-18): showing the student only.")
panels.append((f"student ({int(kept_student.sum())} of {len(kept_student)} filters kept)", maps_student, kept_student))
for column, (title, maps, kept) in zip(grids.columns(len(panels)), panels, strict=True):
    column.plotly_chart(_grid(title, maps, kept), width="stretch", key=f"maps_grid_{title.split()[0]}")

pruned = np.flatnonzero(~kept_student)
st.caption(f"Channels 0–{min(shown, len(kept_student)) - 1} of {len(kept_student)}, each scaled to its own range. "
           f"Pruned in this layer: {len(pruned)} filters" + (f" ({', '.join(map(str, pruned[:40]))}"
                                                            f"{' ...' if len(pruned) > 40 else ''})" if len(pruned) else "")
           + ".")
