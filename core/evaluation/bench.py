"""Benchmarks: ``python -m core bench NAME [--smoke]``.

Each benchmark measures its contenders side by side in one process (round-robin,
:func:`core.evaluation.latency.measure_latency`), so the ratios it reports survive a
noisy machine; absolute times are only for the machine named in the result. A result
is one JSON file, ``bench/results/<name>.json`` (``--smoke``: a tiny configuration
that runs in seconds, written under ``bench/results/smoke/``), holding the machine,
the library versions, the configuration, the raw timings, the medians, the ratios and
the targets met or missed, plus a one-line summary.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.io import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class Benchmark:
    name: str
    description: str
    run: Callable[[bool], dict]  # run(smoke) -> {"config", "raw", "medians", "ratios", "targets", "summary", ...}


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(name: str, description: str):
    def decorate(run: Callable[[bool], dict]) -> Callable[[bool], dict]:
        BENCHMARKS[name] = Benchmark(name, description, run)
        return run

    return decorate


def machine() -> dict:
    """What the timings ran on: CPU model, cores, torch threads, GPU, and the library versions."""
    import numpy
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                "numpy": numpy.__version__}
    for module in ("onnxruntime", "onnx"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {"host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "versions": versions}


def run_benchmark(name: str, smoke: bool = False, out: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """Run benchmark ``name`` and write its JSON; returns (result, path)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    started = time.perf_counter()
    result = BENCHMARKS[name].run(smoke)
    result = {"benchmark": name, "smoke": smoke, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "seconds": round(time.perf_counter() - started, 1), **result}
    folder = Path(out) if out else RESULTS_DIR / ("smoke" if smoke else "")
    path = folder / f"{name}.json"
    atomic_write_json(path, result)
    return result, path


def target(value: float, goal: float, higher_is_better: bool = True) -> dict:
    """A measured ratio against its target."""
    return {"value": round(value, 4), "target": goal, "met": value >= goal if higher_is_better else value <= goal}


def _timings(measured: dict[str, dict]) -> tuple[dict, dict]:
    """(raw seconds, median milliseconds) per contender, JSON-ready."""
    raw = {name: [round(s, 6) for s in timing["raw_s"]] for name, timing in measured.items()}
    medians = {name: round(1000 * timing["median_s"], 4) for name, timing in measured.items()}
    return raw, medians


# --- sparse: lottery tickets on a dense CPU kernel ---------------------------------------


@register_benchmark("sparse", "unstructured (lottery-ticket) sparsity: dense network vs masked ticket vs zero-filled export, CPU")
def bench_sparse(smoke: bool) -> dict:
    """Global magnitude masks at the target sparsity on each architecture, timed against the dense network.

    The timing of a dense kernel does not depend on the weights' values, so the masks come
    from the initial weights (the same global magnitude rule IMP uses) and no trained
    ticket is needed.
    """
    from core.evaluation.latency import measure_latency
    from core.pruning.magnitude import Ticket, magnitude_masks

    archs = ["mesonet"] if smoke else ["mesonet", "cnn5", "resnet18"]
    sizes = [32] if smoke else [64, 256]
    sparsity, repeats = 0.8, 5 if smoke else 30
    config = {"archs": archs, "image_sizes": sizes, "sparsity": sparsity, "batch": 1, "repeats": repeats}
    raw, medians, ratios = {}, {}, {}
    torch.manual_seed(0)
    for arch in archs:
        ticket = Ticket(arch)
        weights = dict(ticket.net.named_parameters())
        ticket.set_masks(magnitude_masks({n: weights[n].detach() for n in ticket.names}, ticket.masks(), sparsity))
        dense = Ticket(arch).net.eval()
        contenders = {"dense": dense, "ticket (masked)": ticket.eval(), "ticket (zeros)": ticket.sparse_network()}
        for size in sizes:
            key = f"{arch}@{size}"
            raw[key], medians[key] = _timings(measure_latency(contenders, size, batch=1, repeats=repeats))
            ratios[key] = {"dense / zeros": medians[key]["dense"] / medians[key]["ticket (zeros)"],
                           "dense / masked": medians[key]["dense"] / medians[key]["ticket (masked)"],
                           "nonzero params": ticket.counts()["surviving_params"], "dense params": ticket.counts()["dense_params"]}
    worst = max(abs(1 - r["dense / zeros"]) for r in ratios.values())
    summary = (f"sparse: at {sparsity:.0%} sparsity the zero-filled ticket runs at "
               + ", ".join(f"{k} {r['dense / zeros']:.2f}x" for k, r in ratios.items())
               + f" the dense speed (largest deviation from 1x: {worst:.0%}); the masked ticket at "
               + ", ".join(f"{r['dense / masked']:.2f}x" for r in ratios.values()))
    return {"config": config, "raw_s": raw, "median_ms": medians, "ratios": ratios, "summary": summary}


# --- onnx: the deployed runtimes (PyTorch fp32, ONNX fp32, ONNX int8) ---------------------

SHIPPED_RESNET50 = {  # the shipped faceswap teacher and its two compact students
    "teacher": "checkpoints/teacher-resnet50-synthetic-faceswap.safetensors",
    "kdfs": "checkpoints/student-kdfs-resnet50-synthetic-faceswap.safetensors",
    "pearson": "checkpoints/student-pearson-resnet50-synthetic-faceswap.safetensors",
}
INT8_SIZE_TARGET = 0.30  # int8 file size as a fraction of the fp32 ONNX
ONNX_PARITY_TARGET = 1e-4  # max |logit difference| of the fp32 ONNX from PyTorch


def _smoke_checkpoint(folder: Path) -> Path:
    """An untrained ``resnet-tiny`` at 32 px that names ``synthetic:faceswap`` as its data (seeded: same bytes each time)."""
    from core.models import build_model
    from core.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = folder / "smoke-resnet-tiny.safetensors"
    header = {"model": {"type": "resnet", "arch": "resnet-tiny"}, "method": "teacher", "image_size": 32,
              "dataset": "synthetic:faceswap", "config": {"data": "synthetic:faceswap"},
              "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_checkpoint(path, build_model("resnet-tiny").eval(), header)
    return path


@register_benchmark("onnx", "deployment: PyTorch fp32 vs ONNX fp32 vs ONNX int8 (size, CPU latency b1/b32, test accuracy)")
def bench_onnx(smoke: bool) -> dict:
    """The shipped ResNet-50 teacher and its KDFS / Pearson students in the three runtimes.

    Exports go to the cache (once per checkpoint); the int8 versions are calibrated on 300
    training images of ``synthetic:faceswap`` (smoke: an untrained tiny network, 16 images).
    """
    import tempfile

    from core.deploy.variants import compare_runtimes, markdown_table

    calibration, repeats = (16, 5) if smoke else (300, 30)
    with tempfile.TemporaryDirectory(prefix="core-bench-onnx-") as scratch:
        checkpoints = {"tiny": _smoke_checkpoint(Path(scratch))} if smoke else SHIPPED_RESNET50
        compared = compare_runtimes(checkpoints, calibration_images=calibration, repeats=repeats, progress=not smoke)
    rows = compared["rows"]
    by = {(row["checkpoint"], row["runtime"]): row for row in rows}
    ratios, targets = {}, {}
    for name in checkpoints:
        fp32, int8, eager = by[name, "ONNX fp32"], by[name, "ONNX int8"], by[name, "PyTorch fp32"]
        ratios[name] = {"int8 size / fp32 ONNX size": int8["bytes"] / fp32["bytes"],
                        "ONNX fp32 speed-up b1": fp32["speedup_b1"], "ONNX int8 speed-up b1": int8["speedup_b1"],
                        "ONNX fp32 speed-up b32": fp32["speedup_b32"], "ONNX int8 speed-up b32": int8["speedup_b32"],
                        "int8 accuracy change": int8["accuracy"] - eager["accuracy"], "int8 AUC change": int8["auc"] - eager["auc"]}
        targets[f"{name}: int8 size ratio"] = target(ratios[name]["int8 size / fp32 ONNX size"], INT8_SIZE_TARGET, False)
        parity = fp32["max_abs_diff"]  # not target(): its 4-digit rounding would print 0
        targets[f"{name}: ONNX fp32 parity"] = {"value": parity, "target": ONNX_PARITY_TARGET, "met": parity <= ONNX_PARITY_TARGET}
    summary = "onnx: " + "; ".join(
        f"{name} int8 {r['int8 size / fp32 ONNX size']:.1%} of fp32 size, b1 speed-up vs PyTorch ONNX fp32 "
        f"{r['ONNX fp32 speed-up b1']:.2f}x / int8 {r['ONNX int8 speed-up b1']:.2f}x, int8 accuracy "
        f"{100 * r['int8 accuracy change']:+.1f} pt" for name, r in ratios.items())
    config = {"checkpoints": {name: str(path) for name, path in checkpoints.items()}, "calibration_images": calibration,
              "repeats_b1": repeats, "batches": [1, 32], "split": "test"}
    medians = {f"b{batch}": {f"{row['checkpoint']} · {row['runtime']}": round(row[f"latency_b{batch}_ms"], 4) for row in rows}
               for batch in (1, 32)}
    return {"config": config, "raw_s": compared["timings"], "median_ms": medians, "ratios": ratios, "targets": targets,
            "rows": rows, "table": markdown_table(rows), "summary": summary}


# --- video: the video command end to end ------------------------------------------------

VIDEO_TARGET_S = 15.0  # a 10 s, 25 fps, 640x360 clip, 32 sampled frames, compact Pearson student, 2 CPU cores


@register_benchmark("video", "the video command on a synthetic 10 s 25 fps 640x360 clip: decode, detect, classify, encode")
def bench_video(smoke: bool) -> dict:
    """``python -m core video`` end to end (a fresh process: imports and model load included), and its stages in-process.

    The clip is a synthetic fake (a benchmark faceswap test face moving over a background);
    smoke: 2 s at 10 fps, 320x180, 8 sampled frames.
    """
    import json
    import statistics
    import subprocess
    import sys
    import tempfile

    import core
    from core.data.datasets import FAKE
    from core.data.synthetic_video import ClipConfig, sample_clip
    from core.data.video import SamplingOptions
    from core.evaluation.video import VideoOptions, analyse_video
    from core.io import cache_dir

    clip_config = ClipConfig(seconds=2, fps=10, width=320, height=180, face_side=110) if smoke else ClipConfig()
    frames, repeats = (8, 1) if smoke else (32, 3)
    checkpoint = SHIPPED_RESNET50["pearson"]
    clip = sample_clip(FAKE, cache_dir() / "videos", config=clip_config)
    model = core.load_model(Path(__file__).resolve().parents[2] / checkpoint)
    options = VideoOptions(sampling=SamplingOptions(num_frames=frames))
    stages, walls = [], []
    with tempfile.TemporaryDirectory(prefix="core-bench-video-") as scratch:
        for repeat in range(repeats):
            stages.append(analyse_video(clip, model, options, out=Path(scratch) / f"in-process-{repeat}.mp4", progress=False)["timing"])
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "core", "video", str(clip), "--checkpoint", checkpoint, "--num-frames",
                                   str(frames), "--out", str(Path(scratch) / f"cli-{repeat}.mp4"), "--quiet", "--json"],
                                  cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - started)
            result = json.loads(done.stdout.strip().splitlines()[-1])
    medians = {stage: round(statistics.median(t[stage] for t in stages), 3) for stage in stages[0]}
    wall = statistics.median(walls)
    summary = (f"video: {clip_config.seconds:g} s {clip_config.fps:g} fps {clip_config.width}x{clip_config.height} clip, {frames} "
               f"frames, compact Pearson: CLI end to end {wall:.2f} s (target < {VIDEO_TARGET_S:g} s); in-process "
               + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in medians.items()))
    return {"config": {"clip": clip_config.__dict__, "sampled_frames": frames, "checkpoint": checkpoint, "repeats": repeats},
            "raw_s": {"cli_wall": [round(w, 3) for w in walls], "stages": stages}, "median_s": {"cli_wall": round(wall, 3), **medians},
            "faces_found": result["faces_total"], "verdict": result["verdict"], "output": result["output"],
            "targets": {"cli end to end (s)": target(wall, VIDEO_TARGET_S, higher_is_better=False)}, "summary": summary}


# --- train-step: the cost of a training step, teacher vs KDFS vs Pearson ----------------------

PEARSON_OVERHEAD_TARGET = 0.03  # Pearson step / KDFS step - 1 (published: about +12%)
KDFS_VS_TEACHER_TARGET = 1.5  # KDFS step / plain teacher training step


def _step_contenders(image_size: int, batch: int, device: torch.device, smoke: bool,
                     methods: tuple[str, ...] = ("teacher", "kdfs", "pearson"), preset: str = "full") -> dict:
    """``name -> step()`` closures: plain teacher training, a KDFS student step and a Pearson student step.

    A step trains on one resident random batch, or on ``step(images, labels)`` when given (a loader's).

    Each step is what the engine does: the method's loss, backward, the optimiser with the
    method's parameter groups, channels_last (and AMP on CUDA), as the engine.
    """
    from core.methods import get_method
    from core.training.config import build_config
    from core.training.engine import make_optimizer

    repo = Path(__file__).resolve().parents[2]
    arch = "resnet-tiny" if smoke else "resnet50"
    teacher_path = None if smoke else str(repo / SHIPPED_RESNET50["teacher"])
    if smoke:  # an untrained tiny teacher checkpoint stands in for the shipped ResNet-50
        import tempfile

        teacher_path = str(_smoke_checkpoint(Path(tempfile.mkdtemp(prefix="core-bench-step-"))))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.randint(0, 2, (batch,), generator=generator).float().to(device)
    use_amp = device.type == "cuda"
    images = images.contiguous(memory_format=torch.channels_last)  # as the engine's batches (TrainConfig.channels_last)
    steps = {}
    for name in methods:
        # "pearson@N": the Pearson student with its redundancy scores refreshed every N steps (score_every)
        method_name, _, every = name.partition("@")
        config = build_config(preset=preset, method=method_name, arch=arch, pretrained="none",  # weights: timing only
                              teacher=None if method_name == "teacher" else teacher_path, image_size=image_size, batch_size=batch)
        if method_name == "pearson" and preset == "full":  # "pearson": the every-step student; `full` refreshes every 32
            config.method_options = {**config.method_options, "score_every": int(every or 1)}
        method = get_method(method_name)
        model = method.build(config).to(device).to(memory_format=torch.channels_last)
        model.train()
        method.on_epoch_start(model, 0, config)
        optimizer = make_optimizer(config, method.parameter_groups(model, config))
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        def step(inputs: torch.Tensor = images, targets: torch.Tensor = labels, method=method, model=model,
                 optimizer=optimizer, scaler=scaler) -> None:
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                # a loader's batch becomes channels_last as in the engine (a no-op for the resident batch)
                loss, _ = method.loss(model, inputs.to(device).contiguous(memory_format=torch.channels_last), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        step.model = model  # the trained module, for measurements beside the step
        steps[name] = step
    return steps


def time_steps(steps: dict, repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each closure, round-robin (one of each per round), after ``warmup`` rounds."""
    timings = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index >= warmup:
                timings[name].append(time.perf_counter() - started)
    return timings


def _profile_step(step, device: torch.device, top: int = 12) -> list[dict]:
    """The ops that dominate one step (torch.profiler, self time), for the record."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [{"op": e.key, "self_ms": round(getattr(e, key) / 1000, 3), "calls": e.count} for e in events]


SCORE_EVERY = 32  # the refresh period measured next to the every-step Pearson student


def _refresh_ms(student, device: torch.device, repeats: int = 5) -> list[float]:
    """Milliseconds of one redundancy-score refresh (all layers, no gradient) of a Pearson student, timed alone."""
    from core.methods.pearson import layer_scores

    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            layer_scores(student, weight_gradient=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - started))
    return times[1:]  # the first call groups the layers


def _train_step(device: torch.device, image_size: int, batch: int, smoke: bool, repeats: int) -> dict:
    """Medians per step; for ``pearson@N`` the expected step over a refresh period (one scoring step in N).

    A shared machine adds noise that no period mean of a few dozen steps averages out, so the
    refreshed student's step is estimated robustly: the median of its steps that reuse the
    scores plus 1/N of a refresh timed on its own (``refresh_ms``). The plain mean of its
    measured steps (whole periods) is kept next to it (``mean_ms``).
    """
    import statistics

    every = 2 if smoke else SCORE_EVERY
    warmup = 1 if smoke else 3
    refreshed = f"pearson@{every}"
    steps = _step_contenders(image_size, batch, device, smoke, methods=("teacher", "kdfs", "pearson", refreshed))
    timings = time_steps(steps, repeats, warmup=warmup, device=device)
    refresh = _refresh_ms(steps[refreshed].model.student, device, repeats=2 if smoke else 5)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    # the refreshed student rescored at its steps (warmup + i) % every == 0 (the counter starts at the epoch's first step)
    reusing = [t for i, t in enumerate(timings[refreshed]) if (warmup + i) % every]
    medians[refreshed] = statistics.median(reusing) + statistics.median(refresh) / 1000 / every
    means = {name: statistics.fmean(values) for name, values in timings.items()}
    profiles = {} if smoke else {name: _profile_step(steps[name], device) for name in ("kdfs", "pearson")}
    return {"raw_s": {k: [round(v, 6) for v in vs] for k, vs in timings.items()},
            "median_ms": {k: round(1000 * v, 3) for k, v in medians.items()},
            "mean_ms": {k: round(1000 * v, 3) for k, v in means.items()},
            "refresh_ms": [round(t, 3) for t in refresh],
            "score_every": every,
            "ratios": {"pearson overhead vs kdfs": medians["pearson"] / medians["kdfs"] - 1,
                       f"pearson (score_every {every}) overhead vs kdfs": medians[refreshed] / medians["kdfs"] - 1,
                       f"pearson (score_every {every}) overhead vs kdfs, plain means": means[refreshed] / means["kdfs"] - 1,
                       "refresh / kdfs step": statistics.median(refresh) / 1000 / medians["kdfs"],
                       "kdfs / teacher": medians["kdfs"] / medians["teacher"],
                       "pearson / teacher": medians["pearson"] / medians["teacher"]},
            "profile": profiles}


def _step_summary(key: str, result: dict) -> str:
    ms, ratios, every = result["median_ms"], result["ratios"], result["score_every"]
    return (f"{key} teacher {ms['teacher']:.0f} ms, KDFS {ms['kdfs']:.0f} ms ({ratios['kdfs / teacher']:.2f}x teacher), "
            f"Pearson {ms['pearson']:.0f} ms ({100 * ratios['pearson overhead vs kdfs']:+.1f}% vs KDFS; scores every "
            f"{every} steps: {100 * ratios[f'pearson (score_every {every}) overhead vs kdfs']:+.1f}%)")


@register_benchmark("train-step", "one training step side by side: plain teacher, KDFS student, Pearson student (CPU; GPU too)")
def bench_train_step(smoke: bool) -> dict:
    """Side-by-side step times at the embedded preset's size on CPU (64 px, batch 32), and at 256 px on a GPU when there is one."""
    settings = [("cpu", 32 if smoke else 64, 8 if smoke else 32, 2 if smoke else SCORE_EVERY)]  # repeats: whole refresh periods
    if torch.cuda.is_available() and not smoke:
        settings.append(("cuda", 256, 64, 2 * SCORE_EVERY))
    results, targets = {}, {}
    for device_name, size, batch, repeats in settings:
        key = f"{device_name}@{size}px-b{batch}"
        results[key] = _train_step(torch.device(device_name), size, batch, smoke, repeats)
        ratios = results[key]["ratios"]
        every = results[key]["score_every"]
        targets[f"{key}: Pearson overhead vs KDFS"] = target(ratios["pearson overhead vs kdfs"], PEARSON_OVERHEAD_TARGET, False)
        targets[f"{key}: Pearson (score_every {every}) overhead vs KDFS"] = target(
            ratios[f"pearson (score_every {every}) overhead vs kdfs"], PEARSON_OVERHEAD_TARGET, False)
        targets[f"{key}: KDFS / teacher"] = target(ratios["kdfs / teacher"], KDFS_VS_TEACHER_TARGET, False)
    summary = "train-step: " + "; ".join(_step_summary(key, r) for key, r in results.items())
    return {"config": {"settings": settings, "arch": "resnet-tiny" if smoke else "resnet50", "preset": "full"},
            "results": results, "targets": targets, "summary": summary}


# one 140k paper run: 100,000 training images; teacher 10 epochs, KDFS and Pearson 80 (the 140k preset)
PAPER_RUN_IMAGES = 100_000


@register_benchmark("protocol-gpu", "the pearson-paper protocol's published 140k steps at 256 px on a GPU (AMP, channels_last): "
                                    "img/s at batch 128, the largest batch, the projected wall time of a run (skipped without CUDA)")
def bench_protocol_gpu(smoke: bool) -> dict:
    """Teacher fine-tune (layer4 + head), KDFS and Pearson (author-code scores every step, weight gradient) as 140k
    publishes them, timed round-robin on resident batches; then each one's largest batch (doubling until out of memory)."""
    from core.training.config import build_config

    if not torch.cuda.is_available():
        return {"skipped": "no GPU: torch.cuda.is_available() is False", "config": {}, "targets": {},
                "summary": "protocol-gpu: skipped (no GPU)"}
    device = torch.device("cuda")
    size, batch, repeats = (32, 8, 2) if smoke else (256, 128, 10)
    steps = _step_contenders(size, batch, device, smoke, preset="140k")
    timings = time_steps(steps, repeats, warmup=1 if smoke else 3, device=device)
    images = {name: batch / statistics.median(values) for name, values in timings.items()}
    del steps
    largest = {}
    for name in ("teacher", "kdfs", "pearson"):
        fits, trial = batch, batch * 2
        while trial <= (32 if smoke else 2048):
            torch.cuda.empty_cache()
            try:
                step = _step_contenders(size, trial, device, smoke, methods=(name,), preset="140k")[name]
                step()
                torch.cuda.synchronize()
                fits, trial = trial, trial * 2
                del step
            except torch.cuda.OutOfMemoryError:
                break
        largest[name] = fits
    epochs = {name: build_config(preset="140k", method=name).epochs for name in ("teacher", "kdfs", "pearson")}
    hours = {name: epochs[name] * PAPER_RUN_IMAGES / images[name] / 3600 for name in epochs}
    summary = (f"protocol-gpu: {torch.cuda.get_device_name(0)}, {size} px b{batch} AMP, 140k settings: teacher "
               f"{images['teacher']:.0f} img/s, KDFS {images['kdfs']:.0f}, Pearson {images['pearson']:.0f}; largest batch "
               f"{largest}; one 140k run projected at {sum(hours.values()):.1f} h (teacher {hours['teacher']:.1f}, "
               f"KDFS {hours['kdfs']:.1f}, Pearson {hours['pearson']:.1f})")
    return {"config": {"image_size": size, "batch": batch, "repeats": repeats, "amp": "float16", "channels_last": True,
                       "preset": "140k", "paper_run_images": PAPER_RUN_IMAGES},
            "raw_s": {k: [round(v, 6) for v in vs] for k, vs in timings.items()},
            "images_per_s": {k: round(v, 2) for k, v in images.items()}, "largest_batch": largest,
            "projected_hours": {k: round(v, 2) for k, v in hours.items()}, "targets": {}, "summary": summary}


@register_benchmark("pearson-scale", "Pearson's redundancy loss at the paper's and at the authors' code's scale: its gradient "
                                    "on the keep logits against the task loss's (the shipped ResNet-50 teacher's weights)")
def bench_pearson_scale(smoke: bool) -> dict:
    """Mean |dL/dP_keep| over all masked filters of a student initialised from the shipped teacher.

    The masks are the published start (Kaiming logits, seed 0) sampled once at tau_0 = 1; the task
    loss is ``BCE + lambda_1 KD + lambda_2 L_RL`` at the 140k preset's published lambdas on one batch of
    ``synthetic:faceswap`` training images, the redundancy loss ``L_prune`` at lambda_3 = 1.
    """
    import core
    from core.data.datasets import resolve_dataset
    from core.data.images import ImageDataset, collate_skipping
    from core.methods.distillation import Distiller, StudentOptions
    from core.methods.pearson import correlation_loss, normalization_factor
    from core.models.masked import KEEP, MaskedResNet
    from core.models.resnet import build_model
    from core.pruning.flops import MaskedCost, profile_model
    from core.training.checkpoint import SHIPPED_DIR
    from core.training.config import build_config

    torch.manual_seed(0)
    if smoke:
        teacher, size = build_model("resnet-tiny").eval(), 32
        images, labels = torch.randn(8, 3, size, size), (torch.arange(8) % 2).float()
    else:
        teacher = core.load_model(SHIPPED_DIR / "teacher-resnet50-synthetic-faceswap.safetensors")
        size = teacher.header["image_size"]
        samples = resolve_dataset("synthetic:faceswap").split("train")[:32]
        batch = collate_skipping([ImageDataset(samples, teacher.preprocess)[i] for i in range(len(samples))])
        images, labels = batch["images"], batch["labels"].float()
    student = MaskedResNet("resnet-tiny" if smoke else teacher.header["model"]["arch"])
    student.load_state_dict(teacher.state_dict(), strict=False)
    student.train()
    student.sampler.seed(0)
    student.sampler.temperature = 1.0
    published = build_config(preset="140k", method="pearson").method_options
    options = StudentOptions(**{**published, "lambda_prune": 0.0})
    distiller = Distiller(student, teacher, options, lambda *_: torch.zeros(()), MaskedCost(student, size),
                          profile_model(teacher, size)["macs"])
    logits = student.sampler.logits

    def keep_gradient(loss: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(loss, logits, retain_graph=True)[0][:, KEEP].abs()

    task, terms = distiller(images, labels)
    gradients = {"task (BCE + KD + RL, 140k lambdas)": keep_gradient(task)}
    _, keep = student.sampler()
    for normalization in ("paper", "author-code"):
        gradients[f"L_prune, {normalization}"] = keep_gradient(correlation_loss(student, keep, normalization=normalization))
    means = {name: float(g.mean()) for name, g in gradients.items()}
    modules = dict(student.named_modules())
    widths = [modules[layer.name].weight[0].numel() for layer in student.layers]
    ratios = {"author-code / paper": means["L_prune, author-code"] / means["L_prune, paper"],
              "author-code / task": means["L_prune, author-code"] / means["task (BCE + KD + RL, 140k lambdas)"],
              "paper / task": means["L_prune, paper"] / means["task (BCE + KD + RL, 140k lambdas)"]}
    summary = (f"pearson-scale: mean |dL/dP_keep| task {means['task (BCE + KD + RL, 140k lambdas)']:.2e}, L_prune paper "
               f"{means['L_prune, paper']:.2e}, author-code {means['L_prune, author-code']:.2e} "
               f"({ratios['author-code / paper']:,.0f}x; W from {min(widths)} to {max(widths)}, (W-1)^2 from "
               f"{normalization_factor(min(widths), 'author-code'):,.0f} to {normalization_factor(max(widths), 'author-code'):,.0f})")
    return {"config": {"teacher": "resnet-tiny (random)" if smoke else "checkpoints/teacher-resnet50-synthetic-faceswap",
                       "image_size": size, "batch": len(images), "tau": 1.0, "mask_init": "kaiming (seed 0)",
                       "task_lambdas": {k: published[k] for k in ("kd_temperature", "lambda_kd", "lambda_rl")}},
            "medians": means, "ratios": ratios, "widths": {"min": min(widths), "max": max(widths)},
            "task_terms": {k: float(v) for k, v in terms.items()}, "targets": {}, "summary": summary}


import core.evaluation.bench_speed  # noqa: E402, F401  (registers inference, data, dashboard, gpu)
