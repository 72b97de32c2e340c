"""The shared sidebar: launch a training run, watch it live, cancel it.

The launch runs the CLI as its own process (``core.launcher``), so the UI never
blocks; the live panel reads the run directory every two seconds, so a reload or
a new tab finds the run again.
"""

from __future__ import annotations

import streamlit as st

from common import all_checkpoints, listing
from core import launcher
from core.data.datasets import DATASETS
from core.data.synthetic import SOURCES
from core.methods import METHODS
from core.training.config import load_presets
from core.training.runs import default_runs_dir

TRAINABLE = [name for name in METHODS if name != "finetune"]  # finetune starts from a student: `python -m core finetune`
STUDENT_FIELDS = [  # (flag, label, default shown when the preset gives none)
    ("kd-temperature", "T (KD temperature)", 3.0),
    ("tau-start", "τ0 (Gumbel start)", 1.0),
    ("tau-end", "τE (Gumbel end)", 0.2),
    ("lambda-kd", "λ1 (KD)", 1.0),
    ("lambda-rl", "λ2 (feature reconstruction)", 1.0),
    ("lambda-prune", "λ3 (pruning)", None),
]


def _dataset_arguments() -> list[str]:
    kind = st.radio("Dataset", ["Embedded benchmark", "Registered dataset", "Folder or CSV"], key="launch_data_kind")
    if kind == "Embedded benchmark":
        source = st.selectbox("Source", ["all sources", *SOURCES], index=2, key="launch_source")
        return ["--data", "synthetic" if source == "all sources" else f"synthetic:{source}"]
    if kind == "Registered dataset":
        name = st.selectbox("Name", sorted(DATASETS), key="launch_registered")
        root = st.text_input("Root folder", key="launch_root", placeholder="/data/rvf10k")
        return ["--data", name, "--data-root", root] if root else ["--data", name]
    path = st.text_input("Folder or CSV path", key="launch_path", placeholder="/data/my_faces")
    return ["--data", path] if path else []


def _teacher_choices() -> dict[str, str]:
    from common import header

    teachers = {}
    for name, path in all_checkpoints().items():
        try:
            if header(path).get("method") == "teacher":
                teachers[name] = path
        except Exception:  # noqa: BLE001 - a damaged checkpoint is listed elsewhere with its error
            continue
    return teachers


def launch_form() -> None:
    method = st.selectbox("Method", TRAINABLE, index=TRAINABLE.index("pearson") if "pearson" in TRAINABLE else 0,
                          key="launch_method", help="\n".join(f"**{m}**: {METHODS[m].description}" for m in TRAINABLE))
    arguments = ["--method", method, *_dataset_arguments()]
    presets = load_presets()
    preset = st.selectbox("Preset", list(presets), index=list(presets).index("quick"), key="launch_preset",
                          help="\n".join(f"**{k}**: {v.get('description', '')}" for k, v in presets.items()))
    arguments += ["--preset", preset]
    with st.expander("Hyperparameters (empty = the preset's)"):
        for flag, label, kind in (("epochs", "Epochs", int), ("batch-size", "Batch size", int)):
            value = st.number_input(label, min_value=1, value=None, step=1, key=f"launch_{flag}")
            if value is not None:
                arguments += [f"--{flag}", str(kind(value))]
        lr = st.number_input("Learning rate", min_value=0.0, value=None, format="%.6f", key="launch_lr")
        if lr:
            arguments += ["--lr", str(lr)]
        if method in ("kdfs", "pearson", "pdd"):
            pdd_fields = ("kd-temperature", "lambda-kd", "lambda-prune")  # PDD: no Gumbel, no feature reconstruction
            for flag, label, _ in STUDENT_FIELDS:
                if method == "pdd" and flag not in pdd_fields:
                    continue
                value = st.number_input(label, value=None, format="%.4f", key=f"launch_{flag}")
                if value is not None:
                    arguments += [f"--{flag}", str(value)]
            if method == "kdfs":
                rate = st.number_input("Target rate (fraction of MACs removed)", 0.0, 0.99, value=None, key="launch_rate")
                if rate is not None:
                    arguments += ["--target-rate", str(rate)]
        samples = st.number_input("Max training images (a quick look)", min_value=8, value=None, step=8, key="launch_max")
        if samples is not None:
            arguments += ["--max-train-samples", str(int(samples))]
    if method not in ("teacher", "lth"):  # lottery tickets train alone
        teachers = _teacher_choices()
        choice = st.selectbox("Teacher checkpoint", ["default (shipped teacher of this dataset)", *teachers],
                              key="launch_teacher")
        if choice in teachers:
            arguments += ["--teacher", teachers[choice]]
    runs_dir = default_runs_dir()
    allowed, reason = launcher.can_launch(runs_dir)
    if not allowed:
        st.warning(reason)
    if st.button("Launch", type="primary", disabled=not allowed or "--data" not in arguments, key="launch_button"):
        pid = launcher.launch(arguments, runs_dir)
        st.session_state["launched_pid"] = pid
        listing.clear()
        st.success(f"Started (pid {pid}): `python -m core train {' '.join(arguments)}`")


@st.fragment(run_every=2)
def live_panel() -> None:
    active = launcher.activities(default_runs_dir())
    if not active:
        return
    st.subheader("Training now")
    for activity in active:
        if activity.run is None:
            st.progress(0.0, text=f"pid {activity.pid}: starting (loading data and models)...")
        else:
            state = launcher.progress(activity.run)
            st.caption(activity.run.dir.name)
            st.progress(state["fraction"], text=f"epoch {min(state['epochs_done'] + 1, state['epochs'])}/{state['epochs']}")
            st.progress(state["epoch_fraction"], text="steps in this epoch")
            step = state["step"]
            if step:
                terms = {k: v for k, v in step.items() if k in ("loss", "bce", "kd", "rl", "prune", "mask_macs_ratio")}
                st.write(" · ".join(f"{k} {v:.4f}" for k, v in terms.items()))
            if state["epoch_records"]:
                last = state["epoch_records"][-1]
                line = f"val acc {last['val_accuracy']:.3f}, AUC {last['val_auc']:.3f}"
                if "active_fraction" in last:
                    line += f", active filters {last['active_fraction']:.1%}, MACs ↓ {last['macs_reduction']:.1%}"
                st.write(line)
        if st.button("Cancel", key=f"cancel_{activity.pid}"):
            launcher.cancel(activity)
            st.info("Cancel sent; the run stops at the next step and can be resumed with `train --resume`.")


def render_launcher() -> None:
    with st.sidebar:
        st.header("Train")
        launch_form()
        live_panel()
