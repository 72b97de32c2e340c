"""Export: any student checkpoint -> its compact model as a file, checked against the source.

Formats:

- ``safetensors``: this project's checkpoint (tensors + JSON header); ``core.load_model`` and the dashboard read it.
- ``pt``: ``{"format", "header", "state_dict"}`` via ``torch.save``; it loads with
  ``torch.load(path, weights_only=True)`` (no unpickling of code) and with ``core.load_model``.
- ``onnx``: an ONNX graph with a dynamic batch axis, input ``images`` ``[N, 3, S, S]``
  (normalised as the checkpoint's ``preprocess`` does), output ``logits`` ``[N, 1]``.

Every export reloads what it wrote, runs it (ONNX through onnxruntime on CPU) next to
the source model on the same batch, and reports the largest absolute logit difference.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from core.models.masked import MaskedResNet
from core.pruning.flops import profile_model
from core.pruning.surgery import compact_from_masked
from core.training.checkpoint import save_checkpoint, save_pt

FORMATS = ("safetensors", "pt", "onnx")


def compact_of(model: nn.Module) -> tuple[nn.Module, dict]:
    """The deployable network of a loaded checkpoint and its header: a masked student becomes its compact model."""
    header = dict(model.header)
    if isinstance(model, MaskedResNet):
        compact = compact_from_masked(model)
        header["model"] = {"type": "compact-resnet", "arch": model.arch, "active_filters": compact.active_filters}
        header["compacted_from"] = "masked-resnet"
        return compact, header
    return model, header


def export(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, batch: int = 4) -> dict:
    """Write ``checkpoint``'s compact model as ``fmt`` to ``out`` and check it against the source."""
    import core

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    source = core.load_model(checkpoint)
    compact, header = compact_of(source)
    size = header["image_size"]
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(images).reshape(batch, -1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cost = profile_model(compact, size)
    header.update(params=cost["params"], macs=cost["macs"])
    if fmt == "onnx":
        actual = _export_onnx(compact, images, out)
    else:
        if fmt == "pt":
            save_pt(out, compact, header)
        else:
            save_checkpoint(out, compact, header)
        with torch.no_grad():
            actual = core.load_model(out)(images).reshape(batch, -1)
    return {
        "path": str(out), "format": fmt, "kind": header["model"]["type"],
        "max_abs_diff": float((actual - expected).abs().max()),
        "params": cost["params"], "macs": cost["macs"], "image_size": size, "bytes": out.stat().st_size,
    }


def _export_onnx(model: nn.Module, images: torch.Tensor, out: Path) -> torch.Tensor:
    import onnxruntime

    from core.io import atomic_write

    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)

    def write(tmp: str) -> None:
        program = torch.onnx.export(model, (images,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
        program.save(tmp)

    atomic_write(out, write)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    return torch.from_numpy(logits).reshape(len(images), -1)
