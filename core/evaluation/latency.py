"""Side-by-side CPU latency: several models timed in one process, interleaved, so ratios
between them survive a noisy machine."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def measure_latency(models: dict[str, nn.Module], image_size: int, batch: int = 1, repeats: int = 30,
                    warmup: int = 5, threads: int | None = None, settle: int = 0, seconds: float | None = None,
                    max_repeats: int = 1000) -> dict[str, dict]:
    """Median / p10 / p90 seconds per forward pass of each model on one random batch.

    The models run round-robin (one pass of each per round), so a slow spell of the
    machine hits them all alike. ``settle`` untimed passes precede each timed one: models of
    different runtimes have their own thread pools, and the first pass after another pool ran
    pays a wake-up that a process serving one runtime never does. With ``seconds``, rounds go on
    after ``repeats`` until that much time has passed (at most ``max_repeats`` rounds): a time
    budget that holds on a busy machine too.
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        images = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        for model in models.values():
            model.eval()
            for _ in range(warmup):
                model(images)
        timings: dict[str, list[float]] = {name: [] for name in models}
        started_all, rounds = time.perf_counter(), 0
        while rounds < repeats or (seconds is not None and rounds < max_repeats
                                   and time.perf_counter() - started_all < seconds):
            rounds += 1
            for name, model in models.items():
                for _ in range(settle):
                    model(images)
                started = time.perf_counter()
                model(images)
                timings[name].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: {"median_s": statistics.median(values), "p10_s": _quantile(values, 0.1), "p90_s": _quantile(values, 0.9),
                   "raw_s": values} for name, values in timings.items()}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
