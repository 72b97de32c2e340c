"""Dashboard entry point (``make run``): the access gate (``access_ui``), navigation, and the shared sidebar with the
training launcher.

Pages are thin: they read runs and checkpoints through ``core`` and draw with plotly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

DASHBOARD = Path(__file__).resolve().parent
for path in (DASHBOARD.parent, DASHBOARD):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from access_ui import gate, sidebar_identity  # noqa: E402
from launcher_ui import render_launcher  # noqa: E402

st.set_page_config(page_title="Lightweight deepfake detection", layout="wide")
gate()  # who is here, and may they be: a login page, a closed page or a refusal stops the script here

PAGES = [
    st.Page(str(DASHBOARD / "views" / "overview.py"), title="Overview", icon=":material/home:", default=True),
    st.Page(str(DASHBOARD / "views" / "runs.py"), title="Runs & checkpoints", icon=":material/table:"),
    st.Page(str(DASHBOARD / "views" / "curves.py"), title="Training curves", icon=":material/show_chart:"),
    st.Page(str(DASHBOARD / "views" / "data.py"), title="Data", icon=":material/dataset:"),
    st.Page(str(DASHBOARD / "views" / "pruning.py"), title="Pruning", icon=":material/content_cut:"),
    st.Page(str(DASHBOARD / "views" / "tickets.py"), title="Lottery tickets", icon=":material/confirmation_number:"),
    st.Page(str(DASHBOARD / "views" / "feature_maps.py"), title="Feature maps", icon=":material/grid_view:"),
    st.Page(str(DASHBOARD / "views" / "correlation.py"), title="Filter correlation", icon=":material/blur_on:"),
    st.Page(str(DASHBOARD / "views" / "evaluation.py"), title="Evaluation", icon=":material/monitoring:"),
    st.Page(str(DASHBOARD / "views" / "embeddings.py"), title="Embeddings", icon=":material/scatter_plot:"),
    st.Page(str(DASHBOARD / "views" / "inference.py"), title="Live inference", icon=":material/photo_camera:"),
    st.Page(str(DASHBOARD / "views" / "video.py"), title="Video", icon=":material/movie:"),
]
page = st.navigation(PAGES)
sidebar_identity()
render_launcher()
page.run()
