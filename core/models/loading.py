"""Any checkpoint back as a network: the header's model spec, built, with the tensors loaded."""

from __future__ import annotations

import os

import torch
from torch import nn

from core.checkpoint import CheckpointError, load_checkpoint, load_state_into, resolve_checkpoint, runner_for
from core.data.images import Normalization, eval_transform
from core.models import build_from_spec
from core.models.resnet import fold_batch_norms


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


SERVED_TYPES = ("resnet", "compact-resnet", "pruned-net")  # networks whose BatchNorms follow a conv and run in eval only


def _channels_last_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def served(model: nn.Module) -> nn.Module:
    """``model`` as it should serve: BatchNorm folded into the preceding conv (``fold_batch_norms``), channels_last
    weights, and inputs made channels_last on the way in (oneDNN's layout on CPU; max pooling is vectorised only in
    it). Gradients off. Other kinds (masked students, lottery tickets, ONNX) are returned as they are.
    Keeps ``header`` and ``preprocess``; ``model.served`` says which form it is."""

    header = getattr(model, "header", None) or {}
    if header.get("model", {}).get("type") not in SERVED_TYPES or next(model.parameters(), None) is None:
        return model  # a graph run elsewhere (ONNX Runtime) has no PyTorch weights to fold
    folded = fold_batch_norms(model).to(memory_format=torch.channels_last)
    folded.register_forward_pre_hook(_channels_last_input)
    folded.served = True
    return folded
