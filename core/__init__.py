"""Lightweight deepfake face detection: teachers, distilled and pruned students, analyses.

The public Python API (see INTERFACES.md):

- :func:`load_model` rebuilds any checkpoint this project writes, in eval mode,
  with a single-logit output (logit > 0 means *fake*) and a ``preprocess``
  attribute: the exact transform (size, normalisation) the checkpoint expects.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Load a checkpoint file (or a run directory's best checkpoint) as an eval-mode module.

    The module carries ``preprocess`` (PIL image -> normalised tensor) and
    ``header`` (the checkpoint's JSON header: method, dataset, metrics, ...).
    A ``.onnx`` file written by ``export --format onnx|onnx-int8`` loads as a
    :class:`core.deploy.onnx.OnnxModel` (onnxruntime on CPU, torch tensors in and out).
    """
    from core.data.images import Normalization, eval_transform
    from core.models import build_from_spec
    from core.training.checkpoint import CheckpointError, is_onnx, load_checkpoint, load_state_into, resolve_checkpoint

    path = resolve_checkpoint(path)
    if is_onnx(path):
        from core.deploy.onnx import load_onnx

        return load_onnx(path)
    state, header = load_checkpoint(path)
    try:
        model = build_from_spec(header["model"])
        norm = header["normalization"]
        preprocess = eval_transform(int(header["image_size"]), Normalization(tuple(norm["mean"]), tuple(norm["std"])))
    except Exception as error:  # noqa: BLE001 - a damaged or foreign header can fail in any builder: say so, in one line
        raise CheckpointError(f"{path}: its header does not describe a model this version can build "
                              f"({type(error).__name__}: {error})") from None
    load_state_into(model, state, source=str(path))
    model.preprocess = preprocess
    model.header = header
    return model.to(device).eval()


__all__ = ["__version__", "load_model"]
