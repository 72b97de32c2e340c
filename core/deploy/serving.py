"""The cached graphs a checkpoint is served from: ``core.load_model(path, runtime="onnx"|"openvino"|...)``.

The first call exports the checkpoint's deployable network (:func:`deployable`: a masked student's compact form, as
``export`` does; with ``round_to``, every pruned layer padded with zero filters to a multiple of it) to
``<cache>/serving/<name>-<sha256[:16]>[-round<N>][-ood][-int8].onnx``, keyed by the checkpoint's content, so a changed
checkpoint is exported again and an unchanged one never is. When the checkpoint has an out-of-distribution model
(:mod:`core.evaluation.ood`), the graph also outputs the statistics of its stages (``-ood``), and the model is copied
beside the export as a sidecar: one run of the graph gives the verdict and how far the input is from the training
data. The int8 graph (``-int8``) is the fp32 one quantised (:mod:`core.deploy.quantize`: static, QDQ, per-channel
weights, calibrated on the checkpoint's training split), its agreement with the checkpoint on real training images
recorded in its header (``deploy.check``). ONNX Runtime and OpenVINO both run these files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import has_ood_calibration, is_onnx, read_header, resolve_checkpoint, sidecar_path
from core.deploy.onnx import OnnxModel, deployed_header, load_onnx, set_header, write_onnx
from core.deploy.quantize import int8_agreement, quantize_int8, training_data
from core.evaluation.evaluate import file_digest
from core.evaluation.ood import load_ood, save_sidecar
from core.io import DiskCache
from core.models.compact import CompactResNet
from core.models.loading import load_model
from core.pruning.surgery import compact_of, pad_compact

PRECISIONS = ("fp32", "int8")
# the serving exports, one per (checkpoint, rounding, precision); version 4: graphs of block-masked students are written
# with split residual streams (core.models.split_stream)
SERVING_CACHE = DiskCache("serving", 4, ".onnx")


def deployable(model: nn.Module, round_to: int = 1) -> tuple[nn.Module, dict]:
    """The network a served graph runs, and its header: ``compact_of(model)`` (a masked student's compact network, a
    ticket's plain one), with ``round_to`` > 1 every pruned layer padded with zero filters up to a multiple of it
    (:func:`core.pruning.surgery.pad_compact`: the same logits, exactly). It carries ``header`` and ``preprocess``."""

    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    network, header = compact_of(model)
    if round_to > 1:
        if not isinstance(network, CompactResNet):
            raise ValueError(f"round_to is for pruned ResNet students; {header['model']['type']} has no kept-filter counts")
        network = pad_compact(network, round_to)
        header["model"] = {**header["model"], "active_filters": network.active_filters}
        header["round_to"] = round_to
    network.header, network.preprocess = header, model.preprocess
    return network, header


def serving_path(checkpoint: str | os.PathLike, round_to: int = 1, precision: str = "fp32") -> Path:
    """Where the serving export of ``checkpoint`` is cached (its name, content hash, rounding, statistics, precision)."""

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path = resolve_checkpoint(checkpoint)
    statistics = has_ood_calibration(path, read_header(path))
    name = (path.name.removesuffix(path.suffix) + (f"-round{round_to}" if round_to > 1 else "")
            + ("-ood" if statistics else "") + ("-int8" if precision == "int8" else ""))
    return SERVING_CACHE.path({"checkpoint": file_digest(path), "round_to": round_to, "statistics": statistics,
                               "precision": precision}, prefix=name)


def serving_export(checkpoint: str | os.PathLike, round_to: int = 1, precision: str = "fp32", progress: bool = False) -> Path:
    """The cached ONNX export of ``checkpoint`` for serving (written on first use, atomically)."""


    path = resolve_checkpoint(checkpoint)
    out = serving_path(path, round_to, precision)
    if out.is_file():
        return out
    if precision == "int8":
        return _quantized_export(path, serving_export(path, round_to, progress=progress), out, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    network, header = deployable(load_model(path), round_to)
    ood = load_ood(path)
    deploy = {"format": "onnx", "precision": "fp32", "source": str(path), "source_sha256": file_digest(path),
              "exporter": f"torch.onnx dynamo (torch {torch.__version__})", "serving": True,
              "statistics": ood.stages if ood is not None else []}
    if ood is not None:
        save_sidecar(ood, sidecar_path(out))  # first: the export's existence means both are there
    write_onnx(network, {**deployed_header(header), "deploy": deploy}, header["image_size"], out,
               statistics=ood.stages if ood is not None else None)
    return out


def _quantized_export(source: Path, fp32: Path, out: Path, progress: bool) -> Path:
    """``fp32`` quantised to int8 (calibrated on the checkpoint's training split), its agreement with ``source`` on real
    training images in its header, then renamed to ``out``: a file there is always a checked one."""


    header = read_header(fp32)
    data, data_root = training_data(header)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out.parent) as scratch:
        staged = Path(scratch) / out.name
        quantize_int8(fp32, staged, data, data_root, progress=progress)
        check = int8_agreement(load_model(source), load_onnx(staged), data, data_root)
        quantized = read_header(staged)
        set_header(staged, {**quantized, "deploy": {**quantized["deploy"], "check": check}})
        ood = load_ood(fp32)
        if ood is not None:
            save_sidecar(ood, sidecar_path(out))
        os.replace(staged, out)
    return out


def load_serving(checkpoint: str | os.PathLike, threads: int | None = None, round_to: int = 1,
                 precision: str = "fp32") -> OnnxModel:
    """``checkpoint`` run by ONNX Runtime (an ``.onnx`` file as it is; anything else through its cached export)."""
    path = resolve_checkpoint(checkpoint)
    return load_onnx(path if is_onnx(path) else serving_export(path, round_to, precision), threads)
