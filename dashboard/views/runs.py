"""Runs & checkpoints: every shipped checkpoint and run (with who launched it), sortable; the audit log, by user; pick
one or two to explore; download a compact model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from access_ui import visitor
from common import all_checkpoints, checkpoint_label, listing, listing_frame
from core import access
from core.runs import default_runs_dir

st.title("Runs & checkpoints")

COLUMNS = ["status", "method", "kind", "arch", "data", "dataset", "test_accuracy", "test_auc", "val_accuracy", "params_m", "macs_m",
           "params_reduction", "macs_reduction", "ood calibration", "error"]


st.subheader("Shipped checkpoints")
st.dataframe(listing_frame(listing("checkpoints"), ["checkpoint", *COLUMNS]), hide_index=True, width="stretch")
st.subheader("Runs")
runs = listing_frame(listing("runs"), ["run", "status", "launched_by", *COLUMNS[1:]])
if runs.empty:
    st.info("No runs yet: launch one from the sidebar.")
else:
    st.dataframe(runs, hide_index=True, width="stretch", column_config={"launched_by": st.column_config.TextColumn(
        "launched by", help="who launched it from the dashboard (empty: from a shell)")})

st.subheader("Audit log")
who = visitor()
if who.role == "trainer":
    records = access.read_audit(default_runs_dir())
    people = sorted({record.get("identity") or "(unknown)" for record in records})
    person = st.selectbox("User", ["everyone", *people], key="runs_audit_user")
    if person != "everyone":
        records = [record for record in records if (record.get("identity") or "(unknown)") == person]
else:  # a viewer sees what they did, not who else did what
    records = access.read_audit(default_runs_dir(), identity=who.identity) if who.identity else []
if not records:
    st.caption("Nothing audited yet: every launch, cancel and refused action is recorded here, with who did it.")
else:
    audit = pd.DataFrame(records).drop(columns=["epoch"], errors="ignore")
    audit["target"] = audit["target"].map(lambda target: " ".join(target) if isinstance(target, list) else target)
    st.dataframe(audit, hide_index=True, width="stretch")
    st.caption(f"{len(records)} record(s), newest first, from `{access.AUDIT_LOG}` in the runs folder.")

st.subheader("Explore")
choices = all_checkpoints()
selected = st.multiselect("One or two checkpoints for the other pages", list(choices), max_selections=2,
                          format_func=checkpoint_label,
                          default=[c for c in st.session_state.get("selected", []) if c in choices] or list(choices)[-2:],
                          key="selected_widget")
st.session_state["selected"] = selected


@st.cache_data(show_spinner="Making the compact model...")
def _compact_bytes(path: str, stamp: float) -> tuple[bytes, dict]:
    from core.deploy.export import export

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "compact.pt"
        result = export(path, "pt", out)
        return out.read_bytes(), result


for name in selected:
    path = choices[name]
    data, result = _compact_bytes(path, Path(path).stat().st_mtime)
    st.download_button(f"Download {name} as a compact model (.pt, {len(data) / 2**20:.1f} MB)", data,
                       file_name=f"{Path(path).stem}-compact.pt", key=f"download_{name}")
    st.caption(f"{result['params'] / 1e6:.2f} M params, {result['macs'] / 1e6:,.1f} M MACs at {result['image_size']} px; "
               f"max |logit difference| from the checkpoint {result['max_abs_diff']:.1e}. "
               "Load it with `core.load_model(path)` or `torch.load(path, weights_only=True)`.")
