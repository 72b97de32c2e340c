"""Benchmarks, outside the library: ``python -m core bench NAME [--smoke]``, one module per topic.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.io import atomic_write_json
from core.registry import Registry

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


@dataclass
class Benchmark:
    name: str
    description: str
    run: Callable[[bool], dict]  # run(smoke) -> {"config", "raw", "medians", "ratios", "targets", "summary", ...}


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(name: str, description: str):
    """``@register_benchmark(name, description)`` on ``run(smoke) -> dict``."""
    def decorate(run: Callable[[bool], dict]) -> Callable[[bool], dict]:
        BENCHMARKS.register(name, Benchmark(name, description, run))
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
    benchmark = BENCHMARKS.lookup(name)
    started = time.perf_counter()
    result = benchmark.run(smoke)
    result = {"benchmark": name, "smoke": smoke, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "seconds": round(time.perf_counter() - started, 1), **result}
    folder = Path(out) if out else RESULTS_DIR / ("smoke" if smoke else "")
    path = folder / f"{name}.json"
    atomic_write_json(path, result)
    return result, path


def target(value: float, goal: float, higher_is_better: bool = True) -> dict:
    """A measured ratio against its target."""
    return {"value": round(value, 4), "target": goal, "met": value >= goal if higher_is_better else value <= goal}


def timings(measured: dict[str, dict]) -> tuple[dict, dict]:
    """(raw seconds, median milliseconds) per contender, JSON-ready."""
    raw = {name: [round(s, 6) for s in timing["raw_s"]] for name, timing in measured.items()}
    medians = {name: round(1000 * timing["median_s"], 4) for name, timing in measured.items()}
    return raw, medians


SHIPPED_RESNET50 = {  # the shipped faceswap teacher and its two compact students
    "teacher": "checkpoints/teacher-resnet50-synthetic-faceswap.safetensors",
    "kdfs": "checkpoints/student-kdfs-resnet50-synthetic-faceswap.safetensors",
    "pearson": "checkpoints/student-pearson-resnet50-synthetic-faceswap.safetensors",
}


# one module per topic; importing them registers their benchmarks
from bench import (  # noqa: E402, F401
    checkpoints,
    dashboard,
    data,
    deploy,
    faces,
    frames,
    inference,
    int8,
    predict,
    residual_mask,
    runtimes,
    serving,
    split_stream,
    training,
    video,
)
