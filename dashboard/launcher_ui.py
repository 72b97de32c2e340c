"""The shared sidebar: launch a training run, watch it live, cancel it.

The launch runs the CLI as its own process (``core.launcher``), so the UI never
blocks; the live panel reads the run directory every two seconds, so a reload or
a new tab finds the run again.
"""

from __future__ import annotations

import streamlit as st

from common import all_checkpoints, dataset_summary, listing
from core import launcher
from core.config import load_presets
from core.data.datasets import DATASETS
from core.data.synthetic import SOURCES
from core.methods import METHODS
from core.methods.two_in_one import MODES
from core.models.dual import is_dual
from core.runs import default_runs_dir

TRAINABLE = [name for name in METHODS if name != "finetune"]  # finetune starts from a student: `python -m core finetune`
# architectures each method can train (first = default; a preset may set another, e.g. pdd's resnet18)
ARCHITECTURE_CHOICES = {
    "teacher": ["resnet50", "resnet18", "efficientnet_b0", "efficientnet_lite0", "mesonet", "cnn5", "dual_resnet18"],
    "lth": ["mesonet", "cnn5", "resnet18"],
    "two-in-one": ["resnet18", "resnet34"],  # the student (a start checkpoint below overrides it)
}
METHOD_FIELDS = {  # method -> [(flag, label, min, max)] of its own hyperparameters (empty = the preset's)
    "lth": [("prune-rate", "Pruned per round (fraction of the remaining weights)", 0.01, 0.99),
            ("target-sparsity", "Target sparsity", 0.01, 0.99)],
    "taylor": [("alpha", "α (weight of the KD loss; BCE gets 1 − α)", 0.0, 1.0),
               ("prune-ratio", "Prune ratio (fraction of the channels removed)", 0.01, 0.95)],
    "two-in-one": [("lambda-feature", "λ_feat (feature distillation, both branches)", 0.0, 100.0),
                   ("lambda-kd", "λ_kd (output KD)", 0.0, 100.0), ("kd-temperature", "T (KD temperature)", 0.1, 20.0)],
}
STUDENT_FIELDS = [  # (flag, label, default shown when the preset gives none)
    ("kd-temperature", "T (KD temperature)", 3.0),
    ("tau-start", "τ0 (Gumbel start)", 1.0),
    ("tau-end", "τE (Gumbel end)", 0.2),
    ("lambda-kd", "λ1 (KD)", 1.0),
    ("lambda-rl", "λ2 (feature reconstruction)", 1.0),
    ("lambda-prune", "λ3 (pruning)", None),
]


def dataset_choice(prefix: str) -> tuple[str, str | None] | None:
    """The dataset widgets (keys ``<prefix>_data_kind``...): ``(spec, data_root)``, or None until one is given."""
    kind = st.radio("Dataset", ["Embedded benchmark", "Registered dataset", "Folder or CSV"], key=f"{prefix}_data_kind")
    if kind == "Embedded benchmark":
        source = st.selectbox("Source", ["all sources", *SOURCES], index=2, key=f"{prefix}_source")
        return ("synthetic" if source == "all sources" else f"synthetic:{source}"), None
    if kind == "Registered dataset":
        name = st.selectbox("Name", sorted(DATASETS), key=f"{prefix}_registered")
        root = _checked_path(st.text_input("Root folder", key=f"{prefix}_root", placeholder="/data/rvf10k"), "root")
        return (name, str(root)) if root else None
    path = _checked_path(st.text_input("Folder or CSV path", key=f"{prefix}_path", placeholder="/data/my_faces"), "dataset")
    return (str(path), None) if path else None


def _dataset_arguments() -> list[str]:
    choice = dataset_choice("launch")
    if choice is None:
        return []
    spec, root = choice
    summary = dataset_summary(spec, root)
    if "error" in summary:
        st.error(f"Cannot train on it: {summary['error']}")
    else:  # the images the run will use, and why (declared, carved, 80/10/10)
        st.caption("  \n".join(summary["lines"]))
    return ["--data", spec, *(["--data-root", root] if root else [])]


def _checked_path(text: str, kind: str):
    """The typed path resolved and checked (core.launcher.check_data_path), or None with the reason shown."""
    if not text:
        return None
    try:
        return launcher.check_data_path(text, kind)
    except ValueError as error:
        st.error(f"Cannot use this path: {error}")
        return None


def _checkpoint_choice(label: str, default: str, wanted, key: str) -> str | None:
    """A picker over shipped checkpoints and runs whose header passes ``wanted``; None = the ``default`` entry."""
    from common import header

    found = {}
    for name, path in all_checkpoints().items():
        try:
            if wanted(header(path)):
                found[name] = path
        except Exception:  # noqa: BLE001 - a damaged checkpoint is listed elsewhere with its error
            continue
    choice = st.selectbox(label, [default, *found], key=key)
    return found.get(choice)


def _method_arguments(method: str) -> list[str]:
    """The method's own choices: architecture, its hyperparameters, one-shot/local switches, the network to prune."""
    arguments = []
    if method in ARCHITECTURE_CHOICES:
        arguments += ["--arch", st.selectbox("Architecture", ARCHITECTURE_CHOICES[method], key="launch_arch")]
    for flag, label, low, high in METHOD_FIELDS.get(method, []):
        value = st.number_input(label, low, high, value=None, format="%.3f", key=f"launch_{flag}")
        if value is not None:
            arguments += [f"--{flag}", str(value)]
    if method == "taylor":
        steps = st.number_input("Pruning steps (each fine-tuned)", 1, 20, value=None, key="launch_steps")
        arguments += ["--steps", str(int(steps))] if steps is not None else []
        arguments += ["--local"] if st.checkbox("Local (every layer loses the same fraction)", key="launch_local") else []
        start = _checkpoint_choice(
            "Network to prune", "default (shipped EfficientNet-Lite0 of this dataset)",
            lambda h: h.get("method") in ("teacher", "taylor") and h["model"].get("arch", "").startswith("efficientnet"),
            "launch_init")
        arguments += ["--init-checkpoint", start] if start else []
    if method == "two-in-one":
        mode = st.selectbox("Mode", MODES, index=MODES.index("two-in-one"), key="launch_mode",
                            help="spatial: spatial-branch KD only; naive: one shared projector, losses summed; dedicated: a "
                                 "projector per branch; two-in-one: a projector per branch + gradient homogenisation")
        arguments += ["--mode", mode]
        start = _checkpoint_choice("Student to start from", "none (the architecture above, from scratch)",
                                   lambda h: h["model"].get("type") in ("compact-resnet", "masked-resnet"), "launch_student_init")
        arguments += ["--init-checkpoint", start] if start else []
    if method in ("lth", "taylor") and st.checkbox("One-shot (prune to the target in one step)", key="launch_one_shot"):
        arguments.append("--one-shot")
    return arguments


def launch_form() -> None:
    method = st.selectbox("Method", TRAINABLE, index=TRAINABLE.index("pearson") if "pearson" in TRAINABLE else 0,
                          key="launch_method", help="\n".join(f"**{m}**: {METHODS[m].description}" for m in TRAINABLE))
    arguments = ["--method", method, *_dataset_arguments(), *_method_arguments(method)]
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
        default = {"taylor": "default (shipped EfficientNet-B0 of this dataset)",
                   "two-in-one": "default (shipped dual-branch ResNet-18 teacher of this dataset)"}.get(
            method, "default (shipped ResNet-50 teacher of this dataset)")
        dual = method == "two-in-one"  # it distils a dual-branch teacher, and only that
        teacher = _checkpoint_choice("Teacher checkpoint", default,
                                     lambda h: h.get("method") == "teacher" and is_dual(h["model"].get("arch")) == dual,
                                     "launch_teacher")
        arguments += ["--teacher", teacher] if teacher else []
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
                terms = {k: v for k, v in step.items() if k in ("loss", "bce", "kd", "rl", "prune", "mask_macs_ratio",
                                                                   "feature_spatial", "feature_frequency")}
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
