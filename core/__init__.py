"""Lightweight deepfake face detection: teachers, distilled and pruned students, analyses.

The public Python API (see docs/interfaces.md):

- :func:`load_model` rebuilds any checkpoint this project writes, in eval mode,
  with a single-logit output (logit > 0 means *fake*) and a ``preprocess``
  attribute: the exact transform (size, normalisation) the checkpoint expects.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


RUNTIMES = ("torch", "onnx")


def load_model(path: str | os.PathLike, device: str = "cpu", serve: bool = True, runtime: str = "torch"):
    """Load a checkpoint file (or a run directory's best checkpoint) as an eval-mode module, ready to serve.

    The module carries ``preprocess`` (PIL image -> normalised tensor) and
    ``header`` (the checkpoint's JSON header: method, dataset, metrics, ...).

    By default the network is returned as it should run for inference: each BatchNorm folded into the
    conv before it, channels_last weights and inputs, gradients off (:func:`core.models.loading.served`);
    its logits equal the trained form's within float rounding (measured 6e-6). ``serve=False`` returns the
    network as trained, with its BatchNorms and gradients (fine-tuning, Grad-CAM, BatchNorm statistics).
    ``runtime="onnx"`` runs it with ONNX Runtime through a cached export (:mod:`core.deploy.serving`).
    A ``.onnx`` file written by ``export --format onnx|onnx-int8`` loads as a
    :class:`core.deploy.onnx.OnnxModel` (onnxruntime on CPU, torch tensors in and out).
    """
    import core.deploy.onnx  # noqa: F401  (registers the ONNX runner)
    from core.models.loading import load_model as load
    from core.models.loading import served

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnx":
        if device != "cpu":
            raise ValueError("runtime='onnx' runs on the CPU (onnxruntime's CPU provider)")
        from core.deploy.serving import load_serving

        return load_serving(path)
    model = load(path, device)
    return served(model) if serve else model


__all__ = ["__version__", "load_model"]
