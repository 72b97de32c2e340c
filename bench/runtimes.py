"""``runtimes``: the teacher and the Pearson student in every serving runtime, side by side in one process.

Every runtime of :mod:`core.deploy.runtimes` (PyTorch eager served, ``torch.compile``, ONNX Runtime fp32 and int8,
OpenVINO fp32 and int8), each form checked against the trained model when it is built (fp32 within
``FP32_TOLERANCE``; int8 by its recorded agreement), timed round-robin per (image size, threads, batch). The student
is also timed with its widths rounded to 8 and 16 at 256 px, batch 1, default threads. For each runtime: the
student's speed-up over the same runtime's teacher, over the PyTorch served teacher, and as a share of the MACs
ratio. ``bench inference`` includes this matrix; ``bench runtimes`` runs it alone.

The shipped checkpoints are 64 px; a graph runtime compiles for one input size, so each is re-saved with the
header's ``image_size`` set to the timed size (the weights do not depend on it: the head pools globally).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target, timings

SIZES = (256, 64)
BATCHES = {1: (15, 2), 32: (3, 1)}  # batch -> (repeats, warm-up rounds)
BEST_VS_TORCH_TEACHER_TARGET = 5.5  # issue 31: the best runtime's student vs the PyTorch served teacher, 256 px, b1
AUTO_TARGET = 5.5  # issue 31's acceptance: the Pearson student served as auto picks, vs the PyTorch served teacher
AUTO_SEGMENTS, AUTO_REPEATS = 5, 20  # auto's pick and the teacher: this many separate round-robin timings of this many
SAME_RUNTIME_TARGET = 5.0  # issue 31: fp32, student vs the same runtime's teacher


def at_size(checkpoint: Path, size: int, folder: Path) -> Path:
    """``checkpoint`` re-saved with ``image_size`` = ``size`` (what a graph export is compiled for)."""
    from core.checkpoint import save_checkpoint
    from core.models.loading import load_model

    model = load_model(checkpoint)  # read once: the network and its header
    out = folder / f"{checkpoint.stem}-{size}px.safetensors"
    save_checkpoint(out, model, {**model.header, "image_size": size})
    return out


def _forms(checkpoints: dict[str, Path], runtimes: tuple[str, ...], threads: int, roundings: dict[str, tuple[int, ...]],
           refused: dict) -> dict:
    from core.deploy.runtimes import ParityError, RuntimeUnavailable, load_runtime

    forms = {}
    for name, path in checkpoints.items():
        for runtime in runtimes:
            for round_to in roundings.get(name, (1,)):
                label = f"{name} · {runtime}" + (f" · round-to {round_to}" if round_to > 1 else "")
                try:
                    forms[label] = load_runtime(path, runtime, round_to, threads=threads)
                except (RuntimeUnavailable, ParityError, ValueError, RuntimeError) as error:
                    refused[f"{label} @ {threads} threads"] = f"{type(error).__name__}: {error}"[:500]
    return forms


def runtime_matrix(smoke: bool, runtimes: tuple[str, ...] | None = None, progress: bool = True) -> dict:
    from core.deploy.runtimes import RUNTIME_NAMES, available_runtimes
    from core.evaluation.latency import measure_latency
    from core.models.loading import load_model
    from core.pruning.flops import profile_model

    available = available_runtimes()
    runtimes = tuple(r for r in (runtimes or RUNTIME_NAMES) if available[r] is None)
    sizes = (32,) if smoke else SIZES
    batches = {1: (2, 1)} if smoke else BATCHES
    default_threads = torch.get_num_threads()
    thread_counts = (default_threads,) if smoke else tuple(dict.fromkeys((default_threads, 1)))
    shipped = {name: REPO / SHIPPED_RESNET50[name] for name in ("teacher", "pearson")}
    raw, medians, refused, parity, ratios, macs, auto = {}, {}, {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="core-bench-runtimes-") as scratch:
        for size in sizes:
            checkpoints = {name: at_size(path, size, Path(scratch)) for name, path in shipped.items()}
            macs[f"{size}px"] = {name: profile_model(load_model(path), size)["macs"] for name, path in checkpoints.items()}
            for threads in thread_counts:
                headline = size == sizes[0] and threads == default_threads
                rounding = {"pearson": (1, 8, 16)} if headline else {}
                # torch.compile compiles each form anew in this process (~35 s cold on 2 cores): the headline setting only
                timed_runtimes = runtimes if headline else tuple(r for r in runtimes if r != "torch-compile")
                forms = _forms(checkpoints, timed_runtimes, threads, rounding, refused)
                for label, form in forms.items():
                    parity[label] = {"precision": form.precision, "exact": form.exact, **(form.parity or {})}
                for batch, (repeats, warmup) in batches.items():
                    key = f"{size}px b{batch} {threads} threads"
                    if progress:
                        print(f"runtimes: {key}: {len(forms)} forms", flush=True)
                    timed = forms if batch == 1 else {k: v for k, v in forms.items() if "round-to" not in k}
                    measured = measure_latency(timed, size, batch=batch, repeats=repeats, warmup=warmup, threads=threads,
                                               settle=1)
                    raw[key], medians[key] = timings(measured)
                    ratios[key] = runtime_ratios(medians[key], macs[f"{size}px"], runtimes)
            if not smoke:  # auto measures every runtime at every rounding: tests/test_runtimes.py times a tiny one
                if progress:
                    print(f"runtimes: {size}px: auto's pick beside the teacher", flush=True)
                auto[f"{size}px"] = auto_vs_teacher(checkpoints, size)
    headline = ratios[f"{sizes[0]}px b1 {default_threads} threads"]
    best = max(headline.values(), key=lambda r: r["vs PyTorch served teacher"]) if headline else None
    targets = {}
    if best is not None and not smoke:
        targets["best runtime: Pearson vs PyTorch served teacher, 256 px b1 default threads"] = target(
            best["vs PyTorch served teacher"], BEST_VS_TORCH_TEACHER_TARGET)
        targets["auto's pick: Pearson vs PyTorch served teacher, 256 px b1 default threads (acceptance)"] = target(
            auto[f"{sizes[0]}px"]["speedup"], AUTO_TARGET)
        fp32 = [r for name, r in headline.items() if name.split(" · ")[0] in ("torch", "torch-compile", "onnx", "openvino")]
        if fp32:
            targets["fp32: Pearson vs the same runtime's teacher (best), 256 px b1 default threads"] = target(
                max(r["vs same-runtime teacher"] for r in fp32), SAME_RUNTIME_TARGET)
    return {"runtimes": list(runtimes), "unavailable": {r: reason for r, reason in available.items() if reason},
            "refused": refused, "sizes": list(sizes), "threads": list(thread_counts),
            "batches": {f"b{b}": {"repeats": r, "warmup_rounds": w} for b, (r, w) in batches.items()},
            "macs": macs, "parity": parity, "raw_s": raw, "median_ms": medians, "ratios": ratios,
            "best_at_256px_b1": best, "auto": auto, "targets": targets}


def auto_vs_teacher(checkpoints: dict[str, Path], size: int, segments: int = AUTO_SEGMENTS,
                    repeats: int = AUTO_REPEATS) -> dict:
    """The Pearson student as ``auto`` serves it (its choice measured afresh here), timed beside the PyTorch served
    teacher with no other form in the timing, as a serving process holds one model: :data:`AUTO_SEGMENTS` separate
    round-robin timings, each giving a ratio of medians; the speed-up is their median, with the range."""
    from core.deploy.runtimes import auto_selection, describe, load_runtime, serve
    from core.evaluation.latency import measure_latency

    record = auto_selection(checkpoints["pearson"], progress=False, remeasure=True)
    forms = {"teacher · torch": load_runtime(checkpoints["teacher"], "torch"),
             "pearson · auto": serve(checkpoints["pearson"], "auto", progress=False)}
    timed = []
    for _ in range(segments):
        _, medians = timings(measure_latency(forms, size, batch=1, repeats=repeats, warmup=1, settle=1))
        timed.append({**medians, "speedup": round(medians["teacher · torch"] / medians["pearson · auto"], 3)})
    speedups = sorted(segment["speedup"] for segment in timed)
    return {"chosen": record["chosen"], "answered_by": describe(forms["pearson · auto"]),
            "candidates": record["candidates"], "refused": record["refused"], "segments": timed,
            "speedup": statistics.median(speedups), "range": [speedups[0], speedups[-1]]}


def runtime_ratios(medians: dict, macs: dict, runtimes: tuple[str, ...]) -> dict:
    """Per runtime (and rounding) of the student: vs the same runtime's teacher, vs the PyTorch served teacher, and
    the share of the MACs ratio those are."""
    macs_ratio = macs["teacher"] / macs["pearson"]
    torch_teacher = medians.get("teacher · torch")
    out = {}
    for label, ms in medians.items():
        if not label.startswith("pearson · "):
            continue
        runtime = label.split(" · ")[1]
        same = medians.get(f"teacher · {runtime}")
        row = {"student_ms": ms, "teacher_ms": same, "macs_ratio": round(macs_ratio, 3)}
        if same:
            row["vs same-runtime teacher"] = round(same / ms, 3)
            row["share of the MACs ratio (same runtime)"] = round(same / ms / macs_ratio, 3)
        if torch_teacher:
            row["vs PyTorch served teacher"] = round(torch_teacher / ms, 3)
            row["share of the MACs ratio (vs PyTorch teacher)"] = round(torch_teacher / ms / macs_ratio, 3)
        name = label.removeprefix("pearson · ")
        row["runtime"], row["round_to"] = name.split(" · ")[0], int(name.rsplit(" ", 1)[1]) if "round-to" in name else 1
        out[name] = row
    return out


@register_benchmark("runtimes", "the teacher and the Pearson student in every serving runtime (PyTorch, torch.compile, "
                                "ONNX Runtime fp32/int8, OpenVINO fp32/int8), widths as trained and rounded, CPU")
def bench_runtimes(smoke: bool) -> dict:
    matrix = runtime_matrix(smoke, runtimes=("torch", "onnx") if smoke else None, progress=not smoke)
    best = matrix["best_at_256px_b1"] if not smoke else None
    summary = "runtimes: " + ("; ".join(
        f"{name}: {r.get('vs same-runtime teacher', float('nan')):.2f}x its teacher, "
        f"{r.get('vs PyTorch served teacher', float('nan')):.2f}x the PyTorch teacher"
        for name, r in matrix["ratios"][next(iter(matrix["ratios"]))].items()))
    if best is not None:
        summary += f" (best vs the PyTorch teacher: {best['vs PyTorch served teacher']:.2f}x)"
    for size, pick in matrix["auto"].items():
        chosen = pick["chosen"]
        summary += (f"; auto at {size}: {chosen['runtime']} round-to {chosen['round_to']}, {pick['speedup']:.2f}x the PyTorch "
                    f"teacher ({pick['range'][0]:.2f}-{pick['range'][1]:.2f}x over {len(pick['segments'])} timings)")
    return {"config": {k: matrix[k] for k in ("runtimes", "sizes", "threads", "batches")}, **matrix,
            "summary": summary}
