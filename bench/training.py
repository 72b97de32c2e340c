"""Training-step cost (teacher vs KDFS vs Pearson), the paper protocol on a GPU, the Pearson loss scale, GPU throughput."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target
from bench.deploy import smoke_checkpoint

PEARSON_OVERHEAD_TARGET = 0.03  # Pearson step / KDFS step - 1 (published: about +12%)


KDFS_VS_TEACHER_TARGET = 1.5  # KDFS step / plain teacher training step


def step_contenders(image_size: int, batch: int, device: torch.device, smoke: bool,
                     methods: tuple[str, ...] = ("teacher", "kdfs", "pearson"), preset: str = "full") -> dict:
    """``name -> step()`` closures: plain teacher training, a KDFS student step and a Pearson student step.

    A step trains on one resident random batch, or on ``step(images, labels)`` when given (a loader's).

    Each step is what the engine does: the method's loss, backward, the optimiser with the
    method's parameter groups, channels_last (and AMP on CUDA), as the engine.
    """
    from core.config import build_config
    from core.methods import create_method
    from core.training.engine import make_optimizer

    repo = REPO
    arch = "resnet-tiny" if smoke else "resnet50"
    teacher_path = None if smoke else str(repo / SHIPPED_RESNET50["teacher"])
    if smoke:  # an untrained tiny teacher checkpoint stands in for the shipped ResNet-50
        import tempfile

        teacher_path = str(smoke_checkpoint(Path(tempfile.mkdtemp(prefix="core-bench-step-"))))
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
        method = create_method(config)
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
    steps = step_contenders(image_size, batch, device, smoke, methods=("teacher", "kdfs", "pearson", refreshed))
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
    from core.config import build_config

    if not torch.cuda.is_available():
        return {"skipped": "no GPU: torch.cuda.is_available() is False", "config": {}, "targets": {},
                "summary": "protocol-gpu: skipped (no GPU)"}
    device = torch.device("cuda")
    size, batch, repeats = (32, 8, 2) if smoke else (256, 128, 10)
    steps = step_contenders(size, batch, device, smoke, preset="140k")
    timings = time_steps(steps, repeats, warmup=1 if smoke else 3, device=device)
    images = {name: batch / statistics.median(values) for name, values in timings.items()}
    del steps
    largest = {}
    for name in ("teacher", "kdfs", "pearson"):
        fits, trial = batch, batch * 2
        while trial <= (32 if smoke else 2048):
            torch.cuda.empty_cache()
            try:
                step = step_contenders(size, trial, device, smoke, methods=(name,), preset="140k")[name]
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
    from core.checkpoint import SHIPPED_DIR
    from core.config import build_config
    from core.data.datasets import resolve_dataset
    from core.data.images import ImageDataset, collate_skipping
    from core.methods.distillation import Distiller, StudentOptions
    from core.methods.pearson import correlation_loss, normalization_factor
    from core.models.masked import KEEP, MaskedResNet
    from core.models.registry import build_model
    from core.pruning.flops import MaskedCost, profile_model

    torch.manual_seed(0)
    if smoke:
        teacher, size = build_model("resnet-tiny").eval(), 32
        images, labels = torch.randn(8, 3, size, size), (torch.arange(8) % 2).float()
    else:
        teacher = core.load_model(SHIPPED_DIR / "teacher-resnet50-synthetic-faceswap.safetensors", runtime="torch")
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


GPU_THROUGHPUT_TARGET = 0.75  # student img/s / plain ResNet-50 img/s, AMP, same GPU


@register_benchmark("gpu", "GPU training throughput at 256 px with AMP: KDFS and Pearson students vs plain ResNet-50 "
                           "(skipped without CUDA)")
def bench_gpu(smoke: bool) -> dict:
    """Training steps as the engine runs them on CUDA (AMP, channels_last), round-robin; a CPU-only machine is a skip."""
    if not torch.cuda.is_available():
        return {"skipped": "no GPU: torch.cuda.is_available() is False", "config": {}, "targets": {},
                "summary": "gpu: skipped (no GPU)"}
    device = torch.device("cuda")
    size, batch, repeats = (32, 8, 3) if smoke else (256, 64, 20)
    steps = step_contenders(size, batch, device, smoke)
    timings = time_steps(steps, repeats, warmup=2 if smoke else 5, device=device)
    images = {name: batch / statistics.median(values) for name, values in timings.items()}
    ratios = {f"{method} / teacher img/s": images[method] / images["teacher"] for method in ("kdfs", "pearson")}
    targets = {f"{name}": target(value, GPU_THROUGHPUT_TARGET) for name, value in ratios.items()}
    summary = (f"gpu: {torch.cuda.get_device_name(0)}, {size} px b{batch} AMP: ResNet-50 {images['teacher']:.0f} img/s, KDFS "
               f"{images['kdfs']:.0f} ({ratios['kdfs / teacher img/s']:.0%}), Pearson {images['pearson']:.0f} "
               f"({ratios['pearson / teacher img/s']:.0%}; target >= {GPU_THROUGHPUT_TARGET:.0%})")
    return {"config": {"image_size": size, "batch": batch, "repeats": repeats, "amp": "float16", "channels_last": True,
                       "arch": "resnet-tiny" if smoke else "resnet50", "preset": "full"},
            "raw_s": {k: [round(v, 6) for v in vs] for k, vs in timings.items()},
            "images_per_s": {k: round(v, 2) for k, v in images.items()}, "ratios": ratios, "targets": targets,
            "summary": summary}
