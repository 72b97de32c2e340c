"""Where a served ResNet's CPU time goes, layer by layer: measured time, MACs and bytes moved per layer, grouped into
what pruning shrank, what it left at full width, and the overhead between layers.

:func:`layer_profile` runs the network as it serves (``core.models.loading.served``: BN folded, channels_last) with a
pre- and a post-forward hook on every conv, linear and pooling layer and on every residual block, for ``repeats``
passes, and keeps each layer's median. Hooked time is synchronous CPU time (``time.perf_counter`` around the call), so
the layers' times add up to the pass: what a block takes beyond its convs and its downsample is its residual add and
ReLU (and, in a compact block, the scatter of its kept channels into the stream); what the pass takes beyond its
top-level parts is the framework's overhead between layers. The same pass without hooks is timed too (round-robin
with the hooked one), so the hooks' own cost is known.

Each conv is *pruned* when it is narrower (in or out) than the same conv of the unpruned architecture, *full width*
otherwise; the downsample projections, the stem and the head are their own groups.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import torch
from torch import nn

from core.models.loading import load_model, served
from core.models.registry import build_model
from core.pruning.surgery import compact_of

CATEGORIES = ("stem", "pruned convs", "full-width convs", "downsample", "add + relu", "head", "overhead")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head", "overhead")


def _unpruned_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``name -> (out, in)`` channels of every conv of the architecture ``model`` was cut from."""

    arch = getattr(model, "arch", None) or (getattr(model, "header", None) or {}).get("model", {}).get("arch")
    if arch is None:
        return {}
    return {name: (module.out_channels, module.in_channels) for name, module in build_model(arch).named_modules()
            if isinstance(module, nn.Conv2d)}


def _stage(name: str) -> str:
    top = name.split(".", 1)[0]
    if top.startswith("layer"):
        return top
    return "head" if top in ("avgpool", "fc") else "stem"


def _is_block(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 2 and parts[0].startswith("layer") and parts[1].isdigit()


def _bytes(*tensors, element: int = 4) -> int:
    return sum(t.numel() for t in tensors if isinstance(t, torch.Tensor)) * element


class _Recorder:
    """Forward hooks that time every timed module and note its shapes once."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.starts: dict[str, float] = {}
        self.times: dict[str, list[float]] = defaultdict(list)
        self.shapes: dict[str, dict] = {}
        self.handles = []
        for name, module in model.named_modules():
            timed = isinstance(module, nn.Conv2d | nn.Linear | nn.MaxPool2d | nn.AdaptiveAvgPool2d) or _is_block(name) \
                or (isinstance(module, nn.ReLU) and "." not in name)  # the stem's; a block's ReLU runs thrice a call
            if timed:
                self.handles.append(module.register_forward_pre_hook(self._pre(name)))
                self.handles.append(module.register_forward_hook(self._post(name, module)))

    def _pre(self, name: str):
        def hook(module, args):
            self.starts[name] = time.perf_counter()
        return hook

    def _post(self, name: str, module: nn.Module):
        def hook(module_, args, output):
            self.times[name].append(time.perf_counter() - self.starts[name])
            if name not in self.shapes:
                self.shapes[name] = _describe(module, args[0], output)
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _describe(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Shapes, MACs and bytes moved (activations in and out, weights: fp32) of one call."""
    weights = list(module.parameters(recurse=False))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = y.numel() * (module.in_channels // module.groups) * kh * kw
        kind = "conv"
    elif isinstance(module, nn.Linear):
        macs = y.numel() * module.in_features
        kind = "linear"
    elif isinstance(module, nn.MaxPool2d | nn.AdaptiveAvgPool2d | nn.ReLU):
        macs, kind = 0, "pool" if not isinstance(module, nn.ReLU) else "relu"
    else:  # a residual block: its own parts are hooked; its bytes are the add's (identity and branch in, stream out)
        return {"kind": "block", "in": list(x.shape), "out": list(y.shape), "macs": 0, "bytes": _bytes(y) * 3}
    return {"kind": kind, "in": list(x.shape), "out": list(y.shape), "macs": int(macs),
            "bytes": _bytes(x, y) + _bytes(*weights)}


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def served_deployable(path) -> nn.Module:
    """A checkpoint's deployable network as PyTorch serves it: a masked student's compact form (what ``export``
    writes), BN folded, channels_last (``core.models.loading.served``); any other checkpoint as ``load_model`` serves
    it. Keeps ``header`` (of the deployable form) and ``arch``."""

    compact, header = compact_of(load_model(path))
    compact.header = header
    deployable = served(compact.eval())
    deployable.header = header
    return deployable


@torch.inference_mode()
def layer_profile(model: nn.Module, image_size: int, batch: int = 1, repeats: int = 20, warmup: int = 3,
                  threads: int | None = None, on_progress=None) -> dict:
    """The per-layer profile of ``model`` (served form) on one random ``batch`` at ``image_size`` px.

    Returns ``{"total_ms", "pass_ms", "unhooked_ms", "layers": [...], "by_category": {...}, "by_stage": {...}}``:
    every timed layer with its ``name``, ``stage``, ``category``, median ``ms``, ``macs``, ``bytes``, ``gmacs_per_s``
    and ``macs_per_byte``; each category's and each stage's ``ms``, ``macs``, ``bytes`` and share of ``total_ms``
    (the sum of the layers' medians). ``pass_ms`` is the hooked pass's median, ``unhooked_ms`` the same pass
    without hooks. ``on_progress(done,
    total)`` is called after each repeat.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model.eval()
        images = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        recorder = _Recorder(model)
        totals, plain = [], []
        try:
            for _ in range(warmup):
                model(images)
            recorder.times.clear()
            for repeat in range(repeats):
                started = time.perf_counter()
                model(images)
                totals.append(time.perf_counter() - started)
                recorder.remove()  # the same pass without hooks, round-robin with the hooked one
                started = time.perf_counter()
                model(images)
                plain.append(time.perf_counter() - started)
                recorder = _reattach(recorder)
                if on_progress is not None:
                    on_progress(repeat + 1, repeats)
        finally:
            recorder.remove()
    finally:
        torch.set_num_threads(previous)
    return _summarise(model, recorder, totals, _median_ms(plain))


def _reattach(recorder: _Recorder) -> _Recorder:
    fresh = _Recorder(recorder.model)
    fresh.times, fresh.shapes = recorder.times, recorder.shapes
    return fresh


def _summarise(model: nn.Module, recorder: _Recorder, totals: list[float], unhooked_ms: float) -> dict:
    """Per-layer medians. A block's add + relu and the overhead between layers are taken per pass (the block, or the
    pass, less its hooked parts in that same pass) before their medians; ``total_ms`` is the sum of every median, so
    the groups add up to it exactly (``pass_ms``: the hooked pass's own median)."""
    reference = _unpruned_shapes(model)
    times = {name: values for name, values in recorder.times.items()}
    layers, derived = [], {}
    for name, values in times.items():
        shape = recorder.shapes[name]
        if shape["kind"] == "block":
            inner = [sum(parts) for parts in zip(*(v for n, v in times.items() if n.startswith(name + ".")), strict=True)]
            derived[name] = [block - parts for block, parts in zip(values, inner, strict=True)]
            continue
        stage = _stage(name)
        if stage == "stem" or stage == "head":
            category = stage
        elif ".downsample." in name:
            category = "downsample"
        else:
            module = model.get_submodule(name)
            out_in = (module.out_channels, module.in_channels) if isinstance(module, nn.Conv2d) else None
            category = "pruned convs" if out_in and reference.get(name, out_in) != out_in else "full-width convs"
        layers.append(_layer(name, stage, category, _median_ms(values), shape))
    for name, rest in derived.items():  # each block's add + relu (+ scatter): the block beyond its own hooked parts
        layers.append(_layer(f"{name} add+relu", _stage(name), "add + relu", _median_ms(rest), recorder.shapes[name]))
    tops = [sum(parts) for parts in zip(*(v for n, v in times.items() if "." not in n or _is_block(n)), strict=True)]
    between = _median_ms([total - top for total, top in zip(totals, tops, strict=True)])
    layers.append({"name": "between layers", "stage": "overhead", "category": "overhead", "ms": round(between, 4),
                   "macs": 0, "bytes": 0, "in": [], "out": [], "gmacs_per_s": 0.0, "macs_per_byte": 0.0})
    total_ms = sum(layer["ms"] for layer in layers)
    return {"total_ms": round(total_ms, 4), "pass_ms": round(_median_ms(totals), 4), "unhooked_ms": round(unhooked_ms, 4),
            "layers": layers, "by_category": _group(layers, "category", total_ms, CATEGORIES),
            "by_stage": _group(layers, "stage", total_ms, STAGES)}


def _layer(name: str, stage: str, category: str, ms: float, shape: dict) -> dict:
    seconds = ms / 1000
    return {"name": name, "stage": stage, "category": category, "ms": round(ms, 4), "macs": shape["macs"],
            "bytes": shape["bytes"], "in": shape["in"], "out": shape["out"],
            "gmacs_per_s": round(shape["macs"] / seconds / 1e9, 3) if seconds > 0 else 0.0,
            "macs_per_byte": round(shape["macs"] / shape["bytes"], 3) if shape["bytes"] else 0.0}


def _group(layers: list[dict], key: str, total_ms: float, order: tuple[str, ...]) -> dict:
    groups = {name: {"ms": 0.0, "macs": 0, "bytes": 0, "layers": 0} for name in order}
    for layer in layers:
        group = groups.setdefault(layer[key], {"ms": 0.0, "macs": 0, "bytes": 0, "layers": 0})
        group["ms"] += layer["ms"]
        group["macs"] += layer["macs"]
        group["bytes"] += layer["bytes"]
        group["layers"] += 1
    for group in groups.values():
        group["ms"] = round(group["ms"], 4)
        group["time_share"] = round(group["ms"] / total_ms, 4) if total_ms else 0.0
        group["gmacs_per_s"] = round(group["macs"] / (group["ms"] / 1000) / 1e9, 3) if group["ms"] > 0 else 0.0
    return groups


def profile_figure(profiles: dict[str, dict], title: str = ""):
    """Time per stage beside MACs per stage, one bar per profiled network (plotly): where the MACs went and where the
    time went are seldom the same place."""
    import plotly.express as px  # imported when a figure is drawn (slow to import)
    import plotly.graph_objects as go  # imported when a figure is drawn (slow to import)
    from plotly.subplots import make_subplots  # imported when a figure is drawn (slow to import)

    figure = make_subplots(rows=1, cols=2, subplot_titles=("measured time per stage (ms)", "MACs per stage (M)"))
    palette = px.colors.qualitative.Plotly
    for index, (name, profile) in enumerate(profiles.items()):
        stages = [stage for stage in STAGES if stage in profile["by_stage"]]
        color = palette[index % len(palette)]  # one colour per network in both panels
        figure.add_trace(go.Bar(x=stages, y=[profile["by_stage"][s]["ms"] for s in stages], name=name, marker_color=color,
                                legendgroup=name, hovertemplate="%{x}: %{y:.2f} ms<extra>" + name + "</extra>"), 1, 1)
        figure.add_trace(go.Bar(x=stages[:-1], y=[profile["by_stage"][s]["macs"] / 1e6 for s in stages[:-1]], name=name,
                                marker_color=color, legendgroup=name, showlegend=False,
                                hovertemplate="%{x}: %{y:.1f} M MACs<extra>" + name + "</extra>"), 1, 2)
    figure.update_layout(barmode="group", height=380, margin={"t": 60, "b": 30}, title=title or None)
    return figure


def category_figure(profiles: dict[str, dict], title: str = ""):
    """Each network's pass split into what pruning shrank, what it left at full width, and the overhead (stacked, ms)."""
    import plotly.graph_objects as go  # imported when a figure is drawn (slow to import)

    figure = go.Figure()
    names = list(profiles)
    for category in CATEGORIES:
        figure.add_trace(go.Bar(y=names, x=[profiles[n]["by_category"].get(category, {}).get("ms", 0.0) for n in names],
                                name=category, orientation="h", hovertemplate="%{y}: %{x:.2f} ms<extra>" + category + "</extra>"))
    figure.update_layout(barmode="stack", height=120 + 60 * len(names), margin={"t": 40, "b": 30}, xaxis_title="ms",
                         title=title or None)
    return figure
