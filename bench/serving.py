"""``serving-profile``: where the served student's CPU time goes, layer by layer, beside the teacher's.

Each network runs as ``core.load_model`` serves it in PyTorch (BN folded, channels_last). The end-to-end ratios come
from a round-robin timing of the unhooked networks (:func:`core.evaluation.latency.measure_latency`); the breakdown
from :func:`core.evaluation.layer_profile.layer_profile` (hooked, per layer). The summary says how much of the
student's time is in the convs pruning shrank, how much in what it left at full width (the stem, the downsample
projections, the residual adds), how much is overhead, and two bounds: the speed-up if the pruned convs ran at the
teacher's convs' MACs per second, and if the full-width residual stream cost nothing.
"""

from __future__ import annotations

import torch

from bench import REPO, SHIPPED_RESNET50, register_benchmark, timings

PROFILE_SIZES = (64, 256)
FIGURE = REPO / "docs" / "img" / "serving-profile.png"


def _bounds(teacher: dict, student: dict, speedup: float) -> dict:
    """What the student's profile says about its limit (all from the hooked profiles' medians)."""
    categories = student["by_category"]
    total = student["total_ms"]
    pruned = categories["pruned convs"]
    teacher_rate = teacher["by_category"]["full-width convs"]["gmacs_per_s"]  # the teacher's convs' MACs per second
    at_teacher_rate = total - pruned["ms"] + (pruned["macs"] / (teacher_rate * 1e9) * 1000 if teacher_rate else 0.0)
    stream = categories["downsample"]["ms"] + categories["add + relu"]["ms"]
    scale = speedup * total  # the hooked teacher time that makes the bounds ratios of the round-robin speed-up
    return {"student_ms_share": {name: group["time_share"] for name, group in categories.items()},
            "pruned_convs_gmacs_per_s": pruned["gmacs_per_s"], "teacher_convs_gmacs_per_s": teacher_rate,
            "speedup_if_pruned_convs_ran_at_teacher_rate": round(scale / at_teacher_rate, 3) if at_teacher_rate else None,
            "speedup_if_the_full_width_stream_were_free": round(scale / (total - stream), 3) if total > stream else None,
            "full_width_stream_ms": round(stream, 4)}


@register_benchmark("serving-profile", "per-layer time, MACs and bytes of the served teacher and students (PyTorch, CPU)")
def bench_serving_profile(smoke: bool) -> dict:
    from core import load_model
    from core.evaluation.latency import measure_latency
    from core.evaluation.layer_profile import category_figure, layer_profile, profile_figure

    sizes = (32,) if smoke else PROFILE_SIZES
    repeats = 3 if smoke else 20
    models = {name: load_model(REPO / path, runtime="torch") for name, path in SHIPPED_RESNET50.items()}
    config = {"checkpoints": SHIPPED_RESNET50, "image_sizes": list(sizes), "batch": 1, "repeats": repeats,
              "threads": torch.get_num_threads(), "precision": "fp32", "form": "PyTorch served (BN folded, channels_last)"}
    raw, medians, ratios, profiles, analysis = {}, {}, {}, {}, {}
    for size in sizes:
        key = f"{size}px"
        raw[key], medians[key] = timings(measure_latency(models, size, batch=1, repeats=repeats))
        profiles[key] = {name: layer_profile(model, size, repeats=repeats) for name, model in models.items()}
        teacher = profiles[key]["teacher"]
        ratios[key], analysis[key] = {}, {}
        for name in ("kdfs", "pearson"):
            macs_ratio = sum(layer["macs"] for layer in teacher["layers"]) / sum(layer["macs"] for layer in profiles[key][name]["layers"])
            speedup = medians[key]["teacher"] / medians[key][name]
            ratios[key][name] = {"speedup": round(speedup, 3), "macs_ratio": round(macs_ratio, 3),
                                 "share_of_macs_ratio": round(speedup / macs_ratio, 3)}
            analysis[key][name] = _bounds(teacher, profiles[key][name], speedup)
    largest = f"{sizes[-1]}px"
    if not smoke:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        figure = profile_figure(profiles[largest], f"Served in PyTorch at {sizes[-1]} px, batch 1, "
                                                   f"{torch.get_num_threads()} threads")
        FIGURE.write_bytes(figure.to_image(format="png", width=1100, height=400, scale=1))
        category_figure(profiles[largest]).write_image(str(FIGURE.with_name("serving-categories.png")), width=1100,
                                                        height=300)
    pearson, bounds = ratios[largest]["pearson"], analysis[largest]["pearson"]
    shares = bounds["student_ms_share"]
    summary = (f"serving-profile at {largest}: the Pearson student is {pearson['speedup']:.2f}x faster than the teacher "
               f"for {pearson['macs_ratio']:.2f}x fewer MACs ({pearson['share_of_macs_ratio']:.0%} of the MACs ratio); its "
               f"time: pruned convs {shares['pruned convs']:.0%} (at {bounds['pruned_convs_gmacs_per_s']:.1f} GMAC/s vs the "
               f"teacher's {bounds['teacher_convs_gmacs_per_s']:.1f}), downsample {shares['downsample']:.0%}, "
               f"add+relu {shares['add + relu']:.0%}, stem {shares['stem']:.0%}, overhead {shares['overhead']:.0%}; "
               f"bounds: {bounds['speedup_if_pruned_convs_ran_at_teacher_rate']}x if the pruned convs ran at the "
               f"teacher's rate, {bounds['speedup_if_the_full_width_stream_were_free']}x if the full-width stream were free")
    return {"config": config, "raw_s": raw, "median_ms": medians, "ratios": ratios, "analysis": analysis,
            "profiles": profiles, "targets": {}, "summary": summary}
