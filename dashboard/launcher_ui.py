"""The shared sidebar: launch a training run (now, or queued behind the ones training), watch it live, cancel it.

The launch runs the CLI as its own process (``core.launcher``), so the UI never
blocks; a launch that finds no free slot waits in the runs folder's queue, served by a
dispatcher process that outlives the dashboard. The live panel reads the run directory
and the queue every two seconds, so a reload or a new tab finds both again.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from access_ui import allowed, can, guarded_path, policy, record, visitor
from common import all_checkpoints, checkpoint_label, dataset_summary, listing
from core import launcher
from core.access import refused
from core.access import relative_to_root as relative_to_roots
from core.config import load_presets, training_settings
from core.data.datasets import DATASETS
from core.data.synthetic import SOURCES
from core.methods import METHODS, trainable_methods
from core.models.dual import is_dual
from core.runs import default_runs_dir
from core.training.requests import command_line


def dataset_choice(prefix: str) -> tuple[str, str | None] | None:
    """The dataset widgets (keys ``<prefix>_data_kind``...): ``(spec, data_root)``, or None until one is given."""
    kind = st.radio("Dataset", ["Embedded benchmark", "Registered dataset", "Folder or CSV"], key=f"{prefix}_data_kind")
    if kind == "Embedded benchmark":
        source = st.selectbox("Source", ["all sources", *SOURCES], index=2, key=f"{prefix}_source")
        return ("synthetic" if source == "all sources" else f"synthetic:{source}"), None
    if kind == "Registered dataset":
        name = st.selectbox("Name", sorted(DATASETS), key=f"{prefix}_registered")
        root = _checked_path(st.text_input("Root folder", key=f"{prefix}_root", placeholder="/data/rvf10k",
                                           disabled=not can("read_folder")), "root")
        return (name, str(root)) if root else None
    path = _checked_path(st.text_input("Folder or CSV path", key=f"{prefix}_path", placeholder="/data/my_faces",
                                       disabled=not can("read_folder")), "dataset")
    return (str(path), None) if path else None


def _dataset_values() -> dict:
    choice = dataset_choice("launch")
    if choice is None:
        return {}
    spec, root = choice
    summary = dataset_summary(spec, root)
    if "error" in summary:  # nothing to launch: the button stays disabled
        st.error(f"Cannot train on it: {summary['error']}")
        return {}
    st.caption("  \n".join(summary["lines"]))  # the images the run will use, and why (declared, carved, 80/10/10)
    return {"data": spec, **({"data_root": root} if root else {})}


def relative_to_root(path) -> str:
    return relative_to_roots(path, policy().roots)


def _checked_path(text: str, kind: str):
    """The typed path inside a data root (``access_ui.guarded_path``: a trainer's action, audited when refused), then
    checked as a dataset (core.launcher.check_data_path); None with the reason shown."""
    path = guarded_path(text)
    if path is None:
        return None
    try:
        checked = launcher.check_data_path(str(path), kind)
    except ValueError as error:
        st.error(f"Cannot use this path: {error}")
        return None
    st.caption(f"`{relative_to_root(checked)}`")
    return checked


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
    choice = st.selectbox(label, [default, *found], key=key, format_func=checkpoint_label)
    return found.get(choice)


def option_widgets(method: str) -> dict:
    """A widget per option the method declares with a label (core.methods.options); empty = the preset's value."""
    options_class = METHODS[method].options_class
    return declared_widgets([o for o in options_class.declarations() if o.used_by(method)] if options_class else [])


def declared_widgets(declarations) -> dict:
    """A widget per declared setting with a label (:mod:`core.options`: a method's options, the training settings),
    its range and help from the declaration; the values of those set (empty number = the preset's value)."""
    values = {}
    for option in declarations:
        if option.label is None:
            continue
        key = f"launch_{option.flag}"
        if option.switch:
            if st.checkbox(option.label, key=key, help=option.help):
                values[option.name] = not option.default
        elif option.choices:
            value = st.selectbox(option.label, option.choices, index=option.choices.index(option.default), key=key,
                                 help=option.help)
            values[option.name] = value
        else:
            low, high = (None if bound is None else option.kind(bound) for bound in (option.low, option.high))
            number = st.number_input(option.label, low, high, value=None, key=key, help=option.help,
                                     format="%.6f" if option.kind is float else "%d", step=None if option.kind is float else 1)
            if number is not None and not (option.low_open and number == option.low):  # 0 for lr > 0: not given
                values[option.name] = option.kind(number)
    return values


def _method_values(method: str) -> dict:
    """The method's own choices: architecture, its declared options, one-shot, the network to start from."""
    declared = METHODS[method]
    values = {}
    if len(declared.architectures) > 1:
        values["arch"] = st.selectbox("Architecture", declared.architectures, key="launch_arch")
    values.update(option_widgets(method))
    if method == "taylor":
        start = _checkpoint_choice(
            "Network to prune", "default (shipped EfficientNet-Lite0 of this dataset)",
            lambda h: h.get("method") in ("teacher", "taylor") and h["model"].get("arch", "").startswith("efficientnet"),
            "launch_init")
        values.update({"init_checkpoint": start} if start else {})
    if method == "two-in-one":
        start = _checkpoint_choice("Student to start from", "none (the architecture above, from scratch)",
                                   lambda h: h["model"].get("type") in ("compact-resnet", "masked-resnet"), "launch_student_init")
        values.update({"init_checkpoint": start} if start else {})
    if declared.driver is not None and st.checkbox("One-shot (prune to the target in one step)", key="launch_one_shot"):
        values["one_shot"] = True
    return values


def launch_form() -> None:
    trainable = trainable_methods()  # the registry as it is now (a method of $CORE_METHOD_PATH too)
    method = st.selectbox("Method", trainable, index=trainable.index("pearson") if "pearson" in trainable else 0,
                          key="launch_method", help="\n".join(f"**{m}**: {METHODS[m].description}" for m in trainable))
    request = {"method": method, **_dataset_values(), **_method_values(method)}  # a train request, by name
    presets = load_presets()
    preset = st.selectbox("Preset", list(presets), index=list(presets).index("quick"), key="launch_preset",
                          help="\n".join(f"**{k}**: {v.get('description', '')}" for k, v in presets.items()))
    request["preset"] = preset
    with st.expander("Hyperparameters (empty = the preset's)"):
        request.update(declared_widgets(training_settings()))
    if METHODS[method].needs_teacher:
        default = f"default ({METHODS[method].teacher_kind})"
        dual = method == "two-in-one"  # it distils a dual-branch teacher, and only that
        teacher = _checkpoint_choice("Teacher checkpoint", default,
                                     lambda h: h.get("method") == "teacher" and is_dual(h["model"].get("arch")) == dual,
                                     "launch_teacher")
        request.update({"teacher": teacher} if teacher else {})
    runs_dir = default_runs_dir()
    gpus = "one"
    if launcher.gpu_count() >= 2:  # one run per free GPU, or one DDP job over all of them
        gpus = st.radio("GPUs", list(launcher.GPU_REQUESTS), format_func=launcher.GPU_REQUESTS.get, key="launch_gpus")
    if not can("launch"):
        st.info(f"Read-only: as a {visitor().role} you may explore runs and checkpoints, but not launch training. "
                "Ask for the trainer role.")
    arguments = command_line("train", request)[1:]  # rendered from the request, for the record and the message
    if st.button("Launch", type="primary", disabled="data" not in request or not can("launch"), key="launch_button"):
        command = f"python -m core train {' '.join(arguments)}"
        if not allowed("launch", command):  # on the server: a forged click of the disabled button stops here
            return
        who = visitor()
        try:
            launched = launcher.launch(request, runs_dir, gpus=gpus, user=who.identity,
                                       max_per_user=policy().max_queued_per_user)
        except ValueError as error:  # the user's quota of queued and running runs
            record("launch", ["python", "-m", "core", "train", *arguments], refused(str(error)))
            st.error(f"Refused: {error}")
            return
        record("launch", ["python", "-m", "core", "train", *arguments], launch_id=launched.id,
               result="started" if launched.started else f"queued at {launched.position}")
        listing.clear()
        if launched.started:
            st.session_state["launched_pid"] = launched.pid
            st.success(f"Started (pid {launched.pid}): `{command}`")
        else:
            st.info(f"Queued (position {launched.position}): `{command}`")


def _sparkline(values: list[float], label: str, key: str) -> None:
    """A tiny line of ``values`` (no axes, no legend) titled with the latest value."""
    figure = go.Figure(go.Scatter(y=values, mode="lines+markers" if len(values) < 3 else "lines", line={"width": 2},
                                  hovertemplate="%{y:.4f}<extra></extra>"))
    figure.update_layout(height=90, margin={"l": 0, "r": 0, "t": 20, "b": 0}, showlegend=False,
                         title={"text": f"{label} {values[-1]:.4f}", "font": {"size": 12}})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    st.plotly_chart(figure, width="stretch", key=key, config={"displayModeBar": False})


@st.fragment(run_every=2)
def live_panel() -> None:
    runs_dir = default_runs_dir()
    launcher.dispatch(runs_dir)  # a cheap look: the dispatcher process starts queued launches without any browser
    active = launcher.activities(runs_dir)
    waiting = launcher.queued(runs_dir)
    if not active and not waiting:
        return
    st.subheader("Training now")
    for activity in active:
        if activity.run is None:
            st.progress(0.0, text=f"pid {activity.pid}: starting (loading data and models)...")
        else:
            state = launcher.progress(activity.run)
            st.caption(activity.run.dir.name + (f" · GPU {', '.join(map(str, activity.gpus))}" if activity.gpus else "")
                       + (f" · by {activity.user}" if activity.user else ""))
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
            if state["losses"]:
                _sparkline(state["losses"], "loss", f"spark_loss_{activity.pid}")
            if state["val_accuracies"]:
                _sparkline(state["val_accuracies"], "val acc", f"spark_val_{activity.pid}")
        if st.button("Cancel", key=f"cancel_{activity.pid}", disabled=not can("cancel")):
            target = str(activity.run.dir) if activity.run is not None else f"pid {activity.pid}"
            if allowed("cancel", target):
                launcher.cancel(activity)
                record("cancel", target)
                st.info("Cancel sent; the run stops at the next step and can be resumed with `train --resume`.")
    if any(activity.run is not None for activity in active):
        st.page_link("views/curves.py", label="Training curves", icon=":material/show_chart:")
    if waiting:
        st.caption("Queued (they start in this order)")
    for entry in waiting:
        st.write(f"{entry.position}. {entry.describe()}" + (f" · by {entry.user}" if entry.user else ""))
        st.button("Cancel", key=f"cancel_queued_{entry.id}", on_click=_cancel_queued, args=(runs_dir, entry.id),
                  help="remove it from the queue before it starts", disabled=not can("queue"))


def _cancel_queued(runs_dir, launch_id: str) -> None:
    """Remove a queued launch, if the visitor may change the queue (checked on the server, audited)."""
    if allowed("queue", f"queued launch {launch_id}"):
        removed = launcher.cancel_queued(runs_dir, launch_id)
        record("queue", f"queued launch {launch_id}", result="removed" if removed else "already started or gone")


def render_launcher() -> None:
    with st.sidebar:
        st.header("Train")
        launch_form()
        live_panel()
