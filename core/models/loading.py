"""Any checkpoint back as a network: the header's model spec, built, with the tensors loaded."""

from __future__ import annotations

import os

from torch import nn

from core.checkpoint import CheckpointError, load_checkpoint, load_state_into, resolve_checkpoint, runner_for
from core.data.images import Normalization, eval_transform
from core.models import build_from_spec


def load_model(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """A checkpoint file (or a run directory's best checkpoint) as an eval-mode module.

    The module carries ``preprocess`` (PIL image -> normalised tensor) and ``header`` (the
    checkpoint's JSON header). A graph format (``.onnx``) is run by the runner its layer registered
    (:func:`core.checkpoint.register_runner`); ``core.load_model`` makes sure it is registered.
    """
    path = resolve_checkpoint(path)
    runner = runner_for(path)
    if runner is not None:
        return runner(path)
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
