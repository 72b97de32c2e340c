"""Lightweight deepfake face detection: teachers, distilled and pruned students, analyses.

The public Python API (see docs/interfaces.md):

- :func:`load_model` rebuilds any checkpoint this project writes, in eval mode,
  with a single-logit output (logit > 0 means *fake*) and a ``preprocess``
  attribute: the exact transform (size, normalisation) the checkpoint expects.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def load_model(path: str | os.PathLike, device: str = "cpu", serve: bool = False):
    """Load a checkpoint file (or a run directory's best checkpoint) as an eval-mode module.

    The module carries ``preprocess`` (PIL image -> normalised tensor) and
    ``header`` (the checkpoint's JSON header: method, dataset, metrics, ...).
    ``serve=True``: the network as it should run for inference, with each BatchNorm folded into the
    conv before it and channels_last weights and inputs (:func:`core.models.loading.served`); its
    logits equal the checkpoint's within float rounding. Default: the network as trained, with its
    BatchNorms and gradients (fine-tuning, Grad-CAM, feature-map hooks).
    A ``.onnx`` file written by ``export --format onnx|onnx-int8`` loads as a
    :class:`core.deploy.onnx.OnnxModel` (onnxruntime on CPU, torch tensors in and out).
    """
    import core.deploy.onnx  # noqa: F401  (registers the ONNX runner)
    from core.models.loading import load_model as load
    from core.models.loading import served

    model = load(path, device)
    return served(model) if serve else model


__all__ = ["__version__", "load_model"]
