"""Live inference on one image: validate an upload, crop the face, and ask one or several models.

Latency is wall time (``time.perf_counter``) under ``torch.inference_mode``, split into
the parts a deployment pays for: ``decode_ms`` (upload bytes -> RGB image),
``face_crop_ms`` (face detection, :mod:`core.data.faces`, + crop) and ``model_ms`` (preprocess + forward). When
several models judge one image the crop is done once and shared; each prediction's
``latency_ms`` is then ``face_crop_ms + model_ms``, what that model alone would cost.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.data.datasets import FAKE, LABEL_NAMES, REAL
from core.data.faces import FACE_MARGIN, Box, crop_face
from core.data.images import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, ImageLoadError, load_image
from core.evaluation.ood import OODModel, Scorer

UPLOAD_FORMATS = "JPEG, PNG, WebP, BMP or TIFF"
UPLOAD_RULE = f"Accepted: {UPLOAD_FORMATS} images, {MIN_IMAGE_SIDE} px a side up to {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."


def decode_upload(data: bytes, name: str) -> Image.Image:
    """Untrusted upload bytes -> an 8-bit RGB image, or ImageLoadError with a one-line message.

    Empty, truncated, non-image and oversized files (checked on the header, before
    any pixel is decoded) are refused; CMYK, 16-bit, palette and alpha images are
    converted to RGB (alpha composited on white).
    """
    try:
        return load_image(io.BytesIO(data), name=name)
    except ImageLoadError as error:
        raise ImageLoadError(f"{error}. {UPLOAD_RULE}") from None


def crop_input(image: Image.Image, face_crop: bool = True, margin: float = FACE_MARGIN) -> dict:
    """``{"crop", "face_box", "face_confidence", "face_crop_ms"}``: the largest face's square crop, or the whole image
    when disabled.

    With no face found the crop is the image's centre square and ``face_box`` is None.
    """
    started = time.perf_counter()
    crop, face = crop_face(image, margin) if face_crop else (image, None)
    return {"crop": crop, "face_box": None if face is None else face.box,
            "face_confidence": None if face is None else face.confidence, "face_crop_ms": (time.perf_counter() - started) * 1000}


@torch.inference_mode()
def predict_crop(model: nn.Module, crop: Image.Image, ood: OODModel | None = None) -> dict:
    """``{"logit", "probability", "label", "model_ms", "ood_score", "in_distribution"}`` of ``model`` on an already
    cropped image.

    ``probability`` is sigmoid(logit), the probability of *fake*; ``model_ms`` covers
    ``model.preprocess`` and the forward pass (which also gives the out-of-distribution score, with ``ood``;
    ``ood_score`` <= 1 is in distribution, None without an ood model).
    """
    started = time.perf_counter()
    logits, scores = Scorer(model, ood)(model.preprocess(crop)[None])
    logit = logits[0]
    model_ms = (time.perf_counter() - started) * 1000
    score = None if scores is None else float(scores[0])
    return {"logit": float(logit), "probability": float(torch.sigmoid(logit)), "label": LABEL_NAMES[FAKE if logit > 0 else REAL],
            "model_ms": model_ms, "ood_score": score, "in_distribution": None if score is None else score <= 1}


def predict_image(model: nn.Module, image: Image.Image, face_crop: bool = True, margin: float = FACE_MARGIN,
                  ood: OODModel | None = None) -> dict:
    """One model's verdict on ``image``: probability, label, ``latency_ms`` (face crop + preprocess + forward),
    the parts ``face_crop_ms`` and ``model_ms``, ``face_box`` (None: no face found, or cropping off), ``crop`` and,
    with ``ood``, ``ood_score``/``in_distribution``."""
    return predict_models({"model": model}, image, face_crop, margin, {"model": ood})["predictions"]["model"]


def predict_models(models: Mapping[str, nn.Module], image: Image.Image, face_crop: bool = True,
                   margin: float = FACE_MARGIN, oods: Mapping[str, OODModel | None] | None = None) -> dict:
    """Several models on one image, the face cropped once.

    Returns ``{"crop", "face_box", "face_crop_ms", "predictions": {name: prediction}}``; each
    prediction is :func:`predict_crop`'s plus ``latency_ms`` (shared crop + its own model
    time), ``face_crop_ms``, ``face_box`` and ``crop``.
    """
    cropped = crop_input(image, face_crop, margin)
    predictions = {}
    for name, model in models.items():
        prediction = predict_crop(model, cropped["crop"], (oods or {}).get(name))
        predictions[name] = {**prediction, **cropped, "latency_ms": cropped["face_crop_ms"] + prediction["model_ms"]}
    return {**cropped, "predictions": predictions}


def time_upload(data: bytes, models: Mapping[str, nn.Module], face_crop: bool = True, repeats: int = 30, warmup: int = 5,
                threads: int | None = 2) -> dict[str, dict]:
    """Median and p90 milliseconds of decode, face crop, model and total for one upload through each model.

    Every repeat runs the whole path (decode -> crop -> preprocess -> forward) once
    per model, round-robin, so a slow spell of the machine hits all models alike.
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    parts = ("decode_ms", "face_crop_ms", "model_ms", "total_ms")
    timings = {name: {part: [] for part in parts} for name in models}
    try:
        for repeat in range(warmup + repeats):
            for name, model in models.items():
                started = time.perf_counter()
                image = decode_upload(data, "upload")
                decode_ms = (time.perf_counter() - started) * 1000
                prediction = predict_image(model, image, face_crop)
                total_ms = (time.perf_counter() - started) * 1000
                if repeat >= warmup:
                    for part, value in zip(parts, (decode_ms, prediction["face_crop_ms"], prediction["model_ms"], total_ms),
                                           strict=True):
                        timings[name][part].append(value)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: {part: {"median": statistics.median(values), "p90": float(np.percentile(values, 90))}
                   for part, values in by_part.items()} for name, by_part in timings.items()}


def describe_crop(face_box: Box | None, face_crop: bool) -> str:
    """What the model was shown, in words, for captions and logs."""
    if not face_crop:
        return "whole image (face cropping off)"
    return "largest face" if face_box is not None else "no face found: centre square of the image"
