"""The training input pipeline: loader throughput against training consumption."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from bench import register_benchmark, target
from bench.training import step_contenders, time_steps


def _reencode(samples: list, folder: Path, side: int, suffix: str) -> list:
    """Copies of ``samples`` resized to ``side`` px and saved as ``suffix`` (``.jpg``: quality 95)."""
    from dataclasses import replace

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, sample in enumerate(samples):
        path = folder / f"{index:05d}{suffix}"
        with Image.open(sample.path) as image:
            image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(path, quality=95)
        copies.append(replace(sample, path=str(path)))
    return copies


def _rendered_samples(folder: Path, count: int, size: int) -> list:
    """``count`` freshly rendered benchmark-style images (smoke: no benchmark on disk needed)."""
    import numpy as np
    from PIL import Image

    from core.data.datasets import Sample
    from core.data.synthetic import SynthConfig, render_image

    folder.mkdir(parents=True, exist_ok=True)
    rng, samples = np.random.default_rng(0), []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        Image.fromarray(render_image(SynthConfig(image_size=size), "faceswap", index % 2, rng)).save(path)
        samples.append(Sample(str(path), index % 2, "faceswap"))
    return samples


@register_benchmark("data", "training input pipeline (decode + augment, DataLoader workers 0/1/2) vs ResNet-50 training, CPU")
def bench_data(smoke: bool) -> dict:
    """Images/s of the engine's training loader against the images/s a training step consumes.

    Loader contenders: ``ImageDataset`` + ``train_transform`` + ``collate_skipping`` in a fresh
    ``DataLoader`` per pass (the engine builds one per epoch, so worker start-up counts) over
    the same images as stored by the benchmark (64 px PNG), as 256 px JPEGs (a typical face
    dataset: decode and resize cost more), and as those JPEGs pre-resized to the model input.
    Consumers: a ResNet-50 teacher step and a Pearson student step on a resident batch, and the
    teacher trained from the loader (the engine's CPU default of 1 worker) for a whole pass.
    """
    from torch.utils.data import DataLoader

    from core.data.datasets import resolve_dataset
    from core.data.images import IMAGENET, ImageDataset, collate_skipping, train_transform

    size, batch, count, repeats, warmup = (32, 8, 32, 1, 0) if smoke else (64, 32, 640, 3, 1)
    workers, engine_workers = (0, 1) if smoke else (0, 1, 2), 1  # engine_workers: core.training.engine._num_workers on a CPU
    augments = ("light",) if smoke else ("light", "paper")  # the embedded presets' augmentation, and the default's
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="core-bench-data-") as scratch:
        if smoke:
            stored = _rendered_samples(Path(scratch) / "rendered", count, size)
        else:
            stored = resolve_dataset("synthetic:faceswap").split("train")[:count]
        large = _reencode(stored, Path(scratch) / "jpeg-256", 256, ".jpg")
        sources = {"benchmark PNG": stored, "256 px JPEG": large,
                   f"256 px JPEG pre-resized to {size} px PNG": _reencode(large, Path(scratch) / "pre-resized", size, ".png")}

        def loader(samples: list, augment: str, num_workers: int) -> DataLoader:
            dataset = ImageDataset(samples, train_transform(size, IMAGENET, augment))
            return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=num_workers, collate_fn=collate_skipping,
                              generator=torch.Generator().manual_seed(0))

        def read_all(samples: list, augment: str, num_workers: int) -> None:
            for _ in loader(samples, augment, num_workers):
                pass

        contenders = {}
        for source, samples in sources.items():
            for augment in augments if source == "benchmark PNG" else augments[:1]:
                for num_workers in workers:
                    contenders[f"loader: {source}, {augment}, workers {num_workers}"] = (
                        lambda s=samples, a=augment, w=num_workers: read_all(s, a, w))
        steps = step_contenders(size, batch, device, smoke, methods=("teacher", "pearson"))
        contenders["step: teacher"], contenders["step: pearson"] = steps["teacher"], steps["pearson"]

        def fed_teacher() -> None:
            for loaded in loader(stored, augments[0], engine_workers):
                steps["teacher"](loaded["images"], loaded["labels"])

        contenders[f"teacher trained from the loader, workers {engine_workers}"] = fed_teacher
        timings = time_steps(contenders, repeats, warmup=warmup, device=device)
    seconds = {name: statistics.median(values) for name, values in timings.items()}
    images = {name: (batch if name.startswith("step") else count) / s for name, s in seconds.items()}
    engine_loader = images[f"loader: benchmark PNG, {augments[0]}, workers {engine_workers}"]
    fed = images[f"teacher trained from the loader, workers {engine_workers}"]
    ratios = {"engine loader / teacher step": engine_loader / images["step: teacher"],
              "engine loader / pearson step": engine_loader / images["step: pearson"],
              "slowest loader / teacher step": min(v for k, v in images.items() if k.startswith("loader")) / images["step: teacher"],
              "teacher from the loader / on a resident batch": fed / images["step: teacher"],
              "256 px JPEG / pre-resized, workers 0": images[f"loader: 256 px JPEG, {augments[0]}, workers 0"]
              / images[f"loader: 256 px JPEG pre-resized to {size} px PNG, {augments[0]}, workers 0"]}
    targets = {"engine loader / teacher step (loader faster than training)": target(ratios["engine loader / teacher step"], 1.0),
               "teacher from the loader / on a resident batch": target(ratios["teacher from the loader / on a resident batch"], 0.9)}
    summary = (f"data: loader (workers {engine_workers}, {augments[0]}) {engine_loader:.0f} img/s vs ResNet-50 training "
               f"{images['step: teacher']:.0f} img/s ({ratios['engine loader / teacher step']:.1f}x) and Pearson "
               f"{images['step: pearson']:.0f} img/s; training from the loader runs at "
               f"{ratios['teacher from the loader / on a resident batch']:.0%} of the resident-batch rate; 256 px JPEG decode "
               f"at {ratios['256 px JPEG / pre-resized, workers 0']:.0%} of the pre-resized rate (workers 0)")
    config = {"image_size": size, "batch": batch, "images_per_pass": count, "repeats": repeats, "warmup_rounds": warmup,
              "workers": list(workers),
              "engine_workers_on_cpu": engine_workers, "augments": list(augments), "normalization": "ImageNet",
              "data": "rendered benchmark-style images" if smoke else "synthetic:faceswap train split (64 px PNG)",
              "consumers": "resnet-tiny" if smoke else "ResNet-50 teacher and Pearson student, preset 'full'",
              "pre_resize_cache": "core.data has none (images are decoded and resized on every read; only normalisation "
                                  "statistics are cached); measured here: the same images as 256 px JPEG vs pre-resized PNG"}
    return {"config": config, "raw_s": {k: [round(v, 6) for v in vs] for k, vs in timings.items()},
            "median_s": {k: round(v, 6) for k, v in seconds.items()}, "images_per_s": {k: round(v, 2) for k, v in images.items()},
            "ratios": ratios, "targets": targets, "summary": summary}
