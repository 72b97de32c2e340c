"""Checkpoints for ``checkpoints/``: the weights as fp16, the header made portable."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.checkpoint import SHIPPED_DIR, load_extra_tensors, resolve_checkpoint, save_checkpoint
from core.models.loading import load_model


def ship_checkpoint(source: str | os.PathLike, destination: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
    """Copy a checkpoint as ``dtype`` (fp16 halves the size) for ``checkpoints/``.

    Integer buffers (BatchNorm counters) stay as they are; ``core.load_model`` casts
    the floats back to the model's fp32 on load.
    """
    source = resolve_checkpoint(source)
    model = load_model(source)
    header = {**model.header, "stored_dtype": str(dtype).removeprefix("torch."), "shipped_from": source.parent.name}
    teacher = header.get("teacher")
    if teacher and Path(teacher).resolve().parent == SHIPPED_DIR:  # portable: relative to the repository
        header["teacher"] = f"checkpoints/{Path(teacher).name}"
    save_checkpoint(destination, model, header, dtype=dtype, extra=load_extra_tensors(source))  # e.g. its ood model
    return Path(destination)
