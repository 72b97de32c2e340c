"""Pruning: per-layer active filters of one or two students side by side, params/MACs, where the served time goes
(latency per stage beside MACs per stage), the mask history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from common import all_checkpoints, header, model, teacher_of
from core.runs import Run

st.title("Pruning")
choices = all_checkpoints()
students = {name: path for name, path in choices.items() if header(path).get("pruning")}
others = {name: path for name, path in choices.items() if header(path)["model"].get("type") in ("ticket", "pruned-net")}


def _other_networks() -> None:
    """Lottery tickets (weights kept per layer) and channel-pruned networks (channels kept per conv)."""
    if not others:
        return
    st.subheader("Lottery tickets and channel-pruned networks")
    named = [name for name in others if (header(others[name]).get("lth") or {}).get("round", 1) != 0]  # skip dense rounds
    picked_other = st.multiselect("Networks", named, default=named[-1:], max_selections=3, key="pruning_other")
    from core.evaluation.inspect import kept_per_layer

    for name in picked_other:
        layers, percent, unit = kept_per_layer(model(others[name]))
        figure = go.Figure(go.Bar(x=layers, y=percent))
        figure.update_layout(title=name, yaxis_title=f"% of {unit} kept", height=320, margin={"t": 40})
        st.plotly_chart(figure, width="stretch", key=f"pruning_other_{name}")


if not students:
    st.info("No pruned student yet: train one with method kdfs, pearson or pdd from the sidebar.")
    _other_networks()
    st.stop()
default = [c for c in st.session_state.get("selected", []) if c in students] or list(students)[:2]
picked = st.multiselect("Students", list(students), default=default[:2], max_selections=2, key="pruning_pick")
if not picked:
    st.stop()

bars, rows = go.Figure(), []
for name in picked:
    pruning = header(students[name])["pruning"]
    percent = [100 * a / c for a, c in zip(pruning["active_filters"], pruning["channels"], strict=True)]
    bars.add_trace(go.Bar(x=pruning["layers"], y=percent, name=name))
    rows.append({"checkpoint": name, "params (M)": pruning["compact_params"] / 1e6, "MACs (M)": pruning["compact_macs"] / 1e6,
                 "params ↓": f"{pruning['params_reduction']:.1%}", "MACs ↓": f"{pruning['macs_reduction']:.1%}",
                 "filters kept": f"{sum(pruning['active_filters']):,} of {sum(pruning['channels']):,}",
                 "teacher params (M)": pruning["teacher_params"] / 1e6, "teacher MACs (M)": pruning["teacher_macs"] / 1e6})
bars.update_layout(barmode="group", yaxis_title="% of filters kept", height=450, margin={"t": 30})
st.subheader("Active filters per layer")
st.plotly_chart(bars, width="stretch")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _latency(path: str, stamp: float, size: int, threads: int) -> dict:
    """A checkpoint's layer profile, kept in this session (a timing is of this machine now: not shared, not on disk)."""
    from core.evaluation.layer_profile import layer_profile, served_deployable

    kept = st.session_state.setdefault("pruning_latency_profiles", {})
    key = (path, stamp, size, threads)
    if key not in kept:
        bar = st.progress(0.0, text=f"Timing {Path(path).name} layer by layer at {size} px...")
        kept[key] = layer_profile(served_deployable(path), size, threads=threads,
                                  on_progress=lambda done, total: bar.progress(done / total, text=f"{Path(path).name}: "
                                                                                f"pass {done}/{total}"))
        bar.empty()
    return kept[key]


def _latency_view() -> None:
    """Time per stage beside MACs per stage, of the picked students' compact forms (and their teacher) as served."""
    import torch

    from core.checkpoint import resolve_checkpoint
    from core.evaluation.layer_profile import category_figure, profile_figure

    st.subheader("Latency (CPU, as served)")
    st.caption("Each network as PyTorch serves it (BN folded, channels_last), batch 1, timed layer by layer: where the "
               "time goes is seldom where the MACs are. `python -m core bench serving-profile` writes the same profile.")
    left, right = st.columns(2)
    size = left.select_slider("Image size (px)", [64, 128, 256], value=64, key="pruning_latency_size")
    threads = right.number_input("Threads", 1, max(1, torch.get_num_threads()), torch.get_num_threads(),
                                 key="pruning_latency_threads")
    if not st.toggle("Profile", key="pruning_latency_on"):
        return
    networks = {name: students[name] for name in picked}
    teacher = teacher_of(students[picked[0]])
    if teacher:
        networks = {"teacher": teacher, **networks}
    profiles = {}
    for name, path in networks.items():
        resolved = resolve_checkpoint(path)
        profiles[name] = _latency(str(resolved), resolved.stat().st_mtime, int(size), int(threads))
    st.plotly_chart(profile_figure(profiles), width="stretch", key="pruning_latency_stages")
    st.plotly_chart(category_figure(profiles), width="stretch", key="pruning_latency_categories")
    st.dataframe(pd.DataFrame([{"network": name, "ms (layers summed)": p["total_ms"], "ms (no hooks)": p["unhooked_ms"],
                                "MACs (M)": sum(layer["macs"] for layer in p["layers"]) / 1e6,
                                **{f"{category} ms": group["ms"] for category, group in p["by_category"].items()}}
                               for name, p in profiles.items()]), hide_index=True, width="stretch")


_latency_view()


def _history(path: str) -> list[dict]:
    """Per-epoch mask records: the run's metrics, or the history a fine-tuned/shipped checkpoint carries."""
    folder = Path(path)
    if folder.is_dir() and (folder / "metrics.jsonl").is_file():
        records = [r for r in Run(folder).metrics("epoch") if "active_filters" in r]
        if records:
            return records
    return header(path).get("mask_history") or []


st.subheader("Mask history (layer × epoch)")
for name in picked:
    history = _history(students[name])
    if not history:
        st.caption(f"{name}: no per-epoch mask history recorded.")
        continue
    pruning = header(students[name])["pruning"]
    matrix = [[100 * a / c for a, c in zip(r["active_filters"], pruning["channels"], strict=True)] for r in history]
    figure = px.imshow(pd.DataFrame(matrix, index=[r["epoch"] + 1 for r in history], columns=pruning["layers"]).T,
                       labels={"x": "epoch", "y": "layer", "color": "% kept"}, aspect="auto", color_continuous_scale="Viridis",
                       title=name)
    figure.update_layout(height=700)
    st.plotly_chart(figure, width="stretch")


_other_networks()
