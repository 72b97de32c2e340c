"""int8 post-training static quantisation of an ONNX checkpoint (ONNX Runtime).

The fp32 graph is first pre-processed (``quant_pre_process``: shape inference and graph
optimisation), then ``quantize_static`` writes it in QDQ form: every conv/linear weight as
int8 with one scale per output channel (symmetric), and every activation those layers read
as int8 with a scale and zero point from MinMax calibration, i.e. ``x ≈ s (q − z)`` with
``s = (max − min) / 255`` over the activations seen on the calibration images. Biases become
int32. ONNX Runtime fuses each DequantizeLinear → Conv → QuantizeLinear into an integer
convolution at load time.

Calibration images come from the training split of the checkpoint's own dataset
(``header["config"]["data"]``), ``images`` of them spread evenly over the split (fixed
positions, so a re-export is identical), preprocessed with the checkpoint's ``preprocess``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.checkpoint import read_onnx_header
from core.data.datasets import Sample, resolve_dataset
from core.data.images import ImageDataset, collate_skipping
from core.deploy.onnx import INPUT, OnnxModel, quiet_exporter_logs, set_header
from core.io import atomic_write

CALIBRATION_IMAGES = 300  # the training images whose activation ranges set the int8 scales
INT8_CHECK_IMAGES = 32  # real training images on which an int8 graph is compared with its source
CALIBRATION_BATCH = 16
CALIBRATION_SPLIT = "train"


def training_data(header: dict) -> tuple[str, str | None]:
    """(dataset spec, data root) the checkpoint was trained on, from its header."""
    data = header.get("config", {}).get("data") or header.get("dataset")
    if not data:
        raise ValueError("the checkpoint's header names no training dataset: give the calibration data with --data")
    return data, header.get("data_root") or header.get("config", {}).get("data_root")


def calibration_samples(data: str, data_root: str | None = None, images: int = CALIBRATION_IMAGES,
                        split: str = CALIBRATION_SPLIT) -> list[Sample]:
    """``images`` samples spread evenly over ``split`` of ``data`` (all of it when smaller): deterministic."""
    if images < 1:
        raise ValueError(f"--calibration-images must be at least 1, got {images}")
    samples = resolve_dataset(data, data_root).split(split)
    if len(samples) <= images:
        return samples
    return [samples[i] for i in np.linspace(0, len(samples) - 1, images).round().astype(int)]


def preprocessed_batches(samples: list[Sample], preprocess, batch_size: int = CALIBRATION_BATCH,
                         progress: bool = True, desc: str = "calibrate int8") -> Iterator[torch.Tensor]:
    """Batches of preprocessed images (unreadable files skipped), with a progress bar over the images."""
    loader = DataLoader(ImageDataset(samples, preprocess), batch_size=batch_size, shuffle=False, collate_fn=collate_skipping)
    with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in loader:
            bar.update(batch["skipped"] + (0 if batch["images"] is None else len(batch["images"])))
            if batch["images"] is not None:
                yield batch["images"]


def _reader(batches: Iterator[torch.Tensor]):
    from onnxruntime.quantization import CalibrationDataReader  # optional runtime, imported on use

    class ImageReader(CalibrationDataReader):
        """Feeds the calibration batches to onnxruntime's calibrator, once."""

        def get_next(self) -> dict[str, np.ndarray] | None:
            images = next(batches, None)
            return None if images is None else {INPUT: images.numpy()}

    return ImageReader()


def quantize_int8(fp32: str | os.PathLike, out: str | os.PathLike, data: str | None = None, data_root: str | None = None,
                  images: int = CALIBRATION_IMAGES, progress: bool = True) -> dict:
    """Write the int8 (QDQ, per-channel) version of the fp32 ONNX checkpoint ``fp32`` to ``out``.

    Calibrated on ``images`` training images of ``data`` (default: the checkpoint's own dataset).
    The written file carries the fp32 header with ``deploy`` saying int8 and how it was calibrated.
    Returns ``{"bytes", "fp32_bytes", "size_ratio", "calibration"}``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # optional runtime, imported on use
    from onnxruntime.quantization.shape_inference import quant_pre_process  # optional runtime, imported on use


    quiet_exporter_logs()
    header = read_onnx_header(fp32)
    if data is None:
        data, data_root = training_data(header)
    samples = calibration_samples(data, data_root, images)
    preprocess = OnnxModel(fp32, header).preprocess
    out = Path(out)
    # MinMax keeps one (min, max) pair per tensor and batch, so all batches are held until the ranges merge.
    # Not CalibMaxIntermediateOutputs: it drops the batches it flushes (microsoft/onnxruntime#18893), which set
    # the logit's range from the last few batches alone (max 0 when they were all real: every P(fake) = 0.5).
    with tempfile.TemporaryDirectory(prefix="core-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        batches = preprocessed_batches(samples, preprocess, progress=progress)

        def write(tmp: str) -> None:
            quantize_static(str(prepared), tmp, _reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)

        atomic_write(out, write)
    calibration = {"data": data, "data_root": data_root, "split": CALIBRATION_SPLIT, "images": len(samples),
                   "method": "MinMax", "selection": "evenly spread over the split"}
    quantization = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8, per output channel",
                    "activations": "int8, per tensor", "pre_process": "quant_pre_process", "calibration": calibration}
    set_header(out, {**header, "deploy": {**header.get("deploy", {}), "precision": "int8", "quantization": quantization}})
    fp32_bytes, size = Path(fp32).stat().st_size, out.stat().st_size
    return {"bytes": size, "fp32_bytes": fp32_bytes, "size_ratio": size / fp32_bytes, "calibration": calibration}


@torch.no_grad()
def int8_agreement(reference: torch.nn.Module, quantized: torch.nn.Module, data: str, data_root: str | None = None,
                   images: int = INT8_CHECK_IMAGES) -> dict:
    """How far ``quantized`` is from ``reference`` on ``images`` real training images of ``data`` (the int8 error
    depends on the inputs' distribution, which random images do not have): ``max_abs_diff`` of the logits,
    ``probability_max_abs_diff`` of P(fake), ``check_images``."""
    check = torch.cat(list(preprocessed_batches(calibration_samples(data, data_root, images), reference.preprocess,
                                                progress=False)))
    expected, actual = reference(check).reshape(len(check), -1), quantized(check).reshape(len(check), -1)
    return {"max_abs_diff": float((actual - expected).abs().max()),
            "probability_max_abs_diff": float((torch.sigmoid(actual) - torch.sigmoid(expected)).abs().max()),
            "check_images": len(check)}
