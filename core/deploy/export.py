"""Export: any student checkpoint -> its compact model as a file, checked against the source.

Formats:

- ``safetensors``: this project's checkpoint (tensors + JSON header); ``core.load_model`` and the dashboard read it.
- ``pt``: ``{"format", "header", "state_dict"}`` via ``torch.save``; it loads with
  ``torch.load(path, weights_only=True)`` (no unpickling of code) and with ``core.load_model``.
- ``onnx``: an ONNX graph with a dynamic batch axis, input ``images`` ``[N, 3, S, S]``
  (normalised as the checkpoint's ``preprocess`` does), output ``logits`` ``[N, 1]``, and the
  checkpoint's header in its metadata (:mod:`core.deploy.onnx`): ``core.load_model`` reads it.
- ``onnx-int8``: that graph quantised to int8 (:mod:`core.deploy.quantize`), calibrated on
  training images of the checkpoint's dataset; also a loadable checkpoint.
- ``openvino``: that fp32 graph as an OpenVINO IR (``.xml`` + ``.bin``, weights fp32), the header in its
  ``rt_info``, run with ``INFERENCE_PRECISION_HINT: f32`` (:mod:`core.deploy.openvino`); also a loadable checkpoint.

Every export reloads what it wrote, runs it (ONNX through onnxruntime on CPU) next to
the source model on the same batch, and reports the largest absolute logit difference
(``max_abs_diff``): on a fixed random batch, or for int8, whose error depends on the
input distribution, on real training images. A graph export (onnx, onnx-int8, openvino) is also timed against the
same checkpoint served by PyTorch eager, briefly, at batch 1 (``speedup_vs_torch``, also in the file's ``deploy``
record as ``speed``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import is_graph, is_onnx, load_extra_tensors, read_header, resolve_checkpoint, save_checkpoint, save_pt, sidecar_path
from core.deploy.onnx import deployed_header, load_onnx, set_header, write_onnx
from core.deploy.openvino import FP32_HINT, load_openvino, openvino_version, set_ir_header, write_ir
from core.deploy.quantize import CALIBRATION_IMAGES, int8_agreement, quantize_int8, training_data
from core.deploy.runtimes import time_round_robin
from core.deploy.serving import deployable
from core.evaluation.evaluate import file_digest
from core.evaluation.ood import load_ood, save_sidecar
from core.models.loading import load_model, served
from core.models.masked import MaskedResNet
from core.pruning.flops import profile_model
from core.pruning.surgery import round_masks

FORMATS = ("safetensors", "pt", "onnx", "onnx-int8", "openvino")
SPEED_SECONDS = 1.0  # the export's brief timing against PyTorch eager




def export(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, batch: int = 4, data: str | None = None,
           data_root: str | None = None, calibration_images: int | None = None, progress: bool = True,
           fp32_onnx: str | os.PathLike | None = None, round_to: int = 1) -> dict:
    """Write ``checkpoint``'s compact model as ``fmt`` to ``out`` and check it against the source.

    ``round_to`` > 1 rounds every pruned layer's kept filters up to a multiple of it: a masked student keeps its
    dropped filters with the highest keep probability (:func:`core.pruning.surgery.round_masks`; the check is then
    against that masked twin, and accuracy may move); a compact checkpoint, whose dropped filters are gone, is padded
    with zero filters (:func:`core.pruning.surgery.pad_compact`: the same outputs exactly).

    ``onnx-int8`` calibrates on ``calibration_images`` training images of ``data`` (default: the
    checkpoint's own dataset), quantising ``fp32_onnx`` when given (an ``onnx`` export of the same
    checkpoint) instead of exporting it again, and also reports the int8 and fp32 file sizes.
    ``openvino`` writes ``out`` (``.xml``) and its ``.bin``, and reports the compiled model's ``inference_precision``.
    """

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    if fmt != "onnx-int8" and (data or calibration_images or fp32_onnx):
        raise ValueError("--data and --calibration-images are for --format onnx-int8 (the calibration images)")
    path = resolve_checkpoint(checkpoint).resolve()
    if is_graph(path):
        raise ValueError(f"{path} is already an {'ONNX' if is_onnx(path) else 'OpenVINO IR'} export; export its source "
                         f"checkpoint ({read_header(path)['deploy']['source']})")
    source = load_model(path)
    if round_to > 1 and isinstance(source, MaskedResNet):
        round_masks(source, round_to)
    try:
        compact, header = deployable(source, round_to)
    except ValueError as error:
        raise ValueError(f"--round-to: {error}") from None
    size = header["image_size"]
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(images).reshape(batch, -1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cost = profile_model(compact, size)
    header.update(params=cost["params"], macs=cost["macs"])
    result = {"path": str(out), "format": fmt, "kind": header["model"]["type"], "params": cost["params"], "macs": cost["macs"],
              "image_size": size}
    if fmt == "onnx-int8":
        int8 = _export_int8(source, compact, header, path, out, images, expected, data, data_root, calibration_images,
                            progress, fp32_onnx)
        _carry_ood(path, out, fmt)
        speed = _record_speed(path, out, load_onnx(out), size)  # rewrites the header: the sizes after it
        int8.update(bytes=out.stat().st_size, size_ratio=out.stat().st_size / int8["fp32_bytes"])
        return {**result, **int8, "speedup_vs_torch": speed}
    if fmt == "onnx":
        _write_onnx(compact, header, path, out)
        reloaded = load_onnx(out)
    elif fmt == "openvino":
        reloaded = _export_openvino(compact, header, path, out)
        result.update(bin_path=str(out.with_suffix(".bin")), inference_precision=reloaded.inference_precision)
    else:
        if fmt == "pt":
            save_pt(out, compact, header)
        else:
            save_checkpoint(out, compact, header, extra=load_extra_tensors(path))  # its ood model rides along
        reloaded = load_model(out)
    with torch.no_grad():
        actual = reloaded(images).reshape(batch, -1)
    _carry_ood(path, out, fmt)
    if fmt in ("onnx", "openvino"):  # first: it rewrites the header
        result["speedup_vs_torch"] = _record_speed(path, out, reloaded, size)
    result.update(max_abs_diff=float((actual - expected).abs().max()), bytes=out.stat().st_size)
    if fmt == "openvino":
        result["bytes"] += out.with_suffix(".bin").stat().st_size
    return result


def _export_openvino(compact: nn.Module, header: dict, source: Path, out: Path) -> nn.Module:
    """The fp32 ONNX graph (in a scratch folder) read by OpenVINO and saved as the IR ``out``, reloaded."""


    with tempfile.TemporaryDirectory(prefix="core-export-") as scratch:
        graph = Path(scratch) / "fp32.onnx"
        _write_onnx(compact, header, source, graph)
        onnx_header = read_header(graph)
        deploy = {**onnx_header["deploy"], "format": "openvino", "inference_precision_hint": FP32_HINT,
                  "exporter": f"{onnx_header['deploy']['exporter']}, then OpenVINO {openvino_version()} read_model + "
                              "save_model(compress_to_fp16=False)"}
        write_ir(graph, {**onnx_header, "deploy": deploy}, out)
    return load_openvino(out)


def _record_speed(source: Path, out: Path, exported: nn.Module, image_size: int) -> dict:
    """``exported`` against ``source`` served by PyTorch eager (BatchNorm folded, channels_last), round-robin at batch 1
    for about :data:`SPEED_SECONDS`; written into the export's ``deploy`` record as ``speed``."""

    timing = time_round_robin({"torch": served(load_model(source)), "export": exported}, image_size, SPEED_SECONDS)
    speed = {"batch": 1, "threads": torch.get_num_threads(), "repeats": timing["repeats"],
             "torch_ms": round(timing["median_ms"]["torch"], 4), "export_ms": round(timing["median_ms"]["export"], 4),
             "speedup": round(timing["median_ms"]["torch"] / timing["median_ms"]["export"], 3),
             "against": "the same checkpoint served by PyTorch eager (BatchNorm folded, channels_last)"}
    header = read_header(out)
    (set_header if out.suffix == ".onnx" else set_ir_header)(out, {**header, "deploy": {**header["deploy"], "speed": speed}})
    return speed


def _carry_ood(source: Path, out: Path, fmt: str) -> None:
    """A format that cannot hold the out-of-distribution model gets it as a sidecar beside the export (the compact
    network's stages compute the same statistics as the source's: the surgery keeps every stage's output)."""

    if fmt == "safetensors":
        return
    ood = load_ood(source)
    if ood is not None:
        save_sidecar(ood, sidecar_path(out))


def _write_onnx(model: nn.Module, header: dict, source: Path, out: Path) -> None:
    """The fp32 ONNX checkpoint, its header saying where it came from."""

    deploy = {"format": "onnx", "precision": "fp32", "source": str(source), "source_sha256": file_digest(source),
              "exporter": f"torch.onnx dynamo (torch {torch.__version__})"}
    write_onnx(model, {**deployed_header(header), "deploy": deploy}, header["image_size"], out)


def _export_int8(source: nn.Module, compact: nn.Module, header: dict, path: Path, out: Path, images: torch.Tensor,
                 expected: torch.Tensor, data: str | None, data_root: str | None, calibration_images: int | None,
                 progress: bool, fp32_onnx: str | os.PathLike | None) -> dict:
    """fp32 ONNX (given, or written to a scratch folder), then int8 to ``out``, compared with the source on real
    training images (the int8 error depends on the inputs' distribution, which random images do not have)."""


    if data is None:
        data, data_root = training_data(header)
    with tempfile.TemporaryDirectory(prefix="core-export-") as scratch:
        if fp32_onnx is None:
            fp32_onnx = Path(scratch) / "fp32.onnx"
            _write_onnx(compact, header, path, fp32_onnx)
        elif read_header(fp32_onnx).get("deploy", {}).get("source_sha256") != file_digest(path):
            raise ValueError(f"{fp32_onnx} is not an ONNX export of {path}")
        with torch.no_grad():
            fp32_diff = float((load_onnx(fp32_onnx)(images) - expected).abs().max())
        sizes = quantize_int8(fp32_onnx, out, data, data_root, calibration_images or CALIBRATION_IMAGES, progress)
    return {**int8_agreement(source, load_onnx(out), data, data_root), "fp32_max_abs_diff": fp32_diff, **sizes}
