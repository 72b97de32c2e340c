"""The one GPU-slot policy: which GPUs runs may use, which are busy, and which the next run gets.

The sidebar's launcher (:mod:`core.launcher`: its queue) and the local job engine (:mod:`core.training.executors`:
``--executor local``) both ask it, so a run gets a GPU the same way whoever starts it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Collection

import torch


def visible_gpus(device: str | None = "auto") -> list[str]:
    """The GPUs runs may use, as ``CUDA_VISIBLE_DEVICES`` entries (this process's own list, or indices): none when the
    runs' ``device`` (or ``$CORE_DEVICE``) names one (cpu, mps, cuda:1): each run then sees what this process sees."""
    requested = device if device not in (None, "auto") else os.environ.get("CORE_DEVICE") or "auto"
    count = torch.cuda.device_count() if requested in ("auto", "cuda") else 0
    if count == 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [entry.strip() for entry in visible.split(",")][:count] if visible else [str(i) for i in range(count)]


def gpu_count(device: str | None = "auto") -> int:
    """How many GPUs runs may use (:func:`visible_gpus`)."""
    return len(visible_gpus(device))


def busy_gpus() -> set[str]:
    """Indices and UUIDs of the GPUs some process computes on (``nvidia-smi``); empty without it."""
    def query(what: str) -> list[list[str]]:
        output = subprocess.run(["nvidia-smi", f"--query-{what}", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
        return [[field.strip() for field in line.split(",")] for line in output.splitlines() if line.strip()]

    try:
        used = {row[0] for row in query("compute-apps=gpu_uuid")}
        return {field for index, uuid in query("gpu=index,uuid") if uuid in used for field in (index, uuid)}
    except (OSError, subprocess.SubprocessError, ValueError):
        return set()


def assign_devices(request: str, device_count: int, busy: Collection) -> tuple[int, ...] | None:
    """The GPU slots (indices into the usable GPUs) the next run gets, ``()`` for the CPU, or None: it waits.

    ``busy``: the slots held by the runs this starter started; on a CPU-only machine (``device_count`` 0) the CPU is
    one slot, busy when ``busy`` is non-empty. ``request`` ``one`` takes the lowest free GPU, ``all`` waits until
    every GPU is free and takes them all (one torchrun DDP job).
    """
    if device_count <= 0:
        return None if busy else ()
    if request == "all":
        return None if any(0 <= index < device_count for index in busy) else tuple(range(device_count))
    free = [index for index in range(device_count) if index not in busy]
    return (free[0],) if free else None
