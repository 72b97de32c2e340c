"""Grad-CAM heatmaps (captum's ``LayerGradCam``) for every model kind this project builds.

Grad-CAM at a layer ``A`` with ``K`` channels: ``relu(sum_k mean_ij(d y / d A_k) * A_k)``,
with ``y`` the logit of *fake*, or ``-logit`` when the verdict is *real*, so the map
shows the evidence for the verdict the model gave.

Where to hook: a ResNet *stage* ``layerK`` is read as the input of the module that
consumes it (the next stage's first ``conv1``, or ``avgpool`` after ``layer4``). That
input is the stage output for all three model kinds, including
:class:`~core.models.masked.MaskedResNet`, whose forward runs the blocks' convs
itself and never calls ``layerK`` as a module (a hook on it would never fire).
A dual-branch teacher (:mod:`core.models.dual`) is explained at its spatial (RGB)
branch's stages: that is the branch whose maps line up with the face; its frequency
branch's modules can still be named directly (e.g. ``frequency.layer3``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

STAGES = ("layer1", "layer2", "layer3", "layer4")
# At the shipped models' 64 px input layer4 is 2x2 and layer3 4x4: layer3 is the last
# stage whose map still says *where* in the face the evidence is.
DEFAULT_STAGE = "layer3"
TARGETS = ("predicted", "fake", "real")
OVERLAY_OPACITY = 0.45  # of the heatmap over the image


@contextlib.contextmanager
def relu_not_inplace(model: nn.Module) -> Iterator[nn.Module]:
    """Every ``nn.ReLU`` of ``model`` out-of-place while inside, restored on exit.

    torchvision's blocks call one in-place ReLU several times, overwriting activations
    that hook-based attributions hold for the backward pass (captum 0.9's LayerGradCam
    copes at stage boundaries, other layers and methods are not guaranteed to).
    Out-of-place ReLU computes the same outputs, so this only costs memory.
    """
    inplace_relus = [module for module in model.modules() if isinstance(module, nn.ReLU) and module.inplace]
    for module in inplace_relus:
        module.inplace = False
    try:
        yield model
    finally:
        for module in inplace_relus:
            module.inplace = True


# EfficientNet's blocks at the output strides of ResNet's four stages (4, 8, 16, 32), so a stage name means the same map size
EFFICIENTNET_STAGES = {"layer1": "features.2", "layer2": "features.3", "layer3": "features.5", "layer4": "features.7"}


def _hook_point(model: nn.Module, layer: str) -> tuple[nn.Module, bool]:
    """``(module, attribute_to_its_input)`` whose input (stages) or output (any other module name) is ``layer``."""
    if layer in STAGES and not hasattr(model, "layer1") and hasattr(model, "net"):  # a lottery ticket: hook its network
        module, on_input = _hook_point(model.net, layer)
        return module, on_input
    if layer in STAGES and not hasattr(model, "layer1") and hasattr(model, "spatial"):  # a dual-branch teacher: its RGB branch
        return _hook_point(model.spatial, layer)
    if layer in STAGES and not hasattr(model, "layer1") and hasattr(model, "features") and len(model.features) > 7:
        layer = EFFICIENTNET_STAGES[layer]
    elif layer in STAGES and not hasattr(model, "layer1"):  # MesoNet, CNN-5: no stages; their last conv's map
        layer = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)][-1]
    elif layer in STAGES:
        index = STAGES.index(layer)
        if index + 1 < len(STAGES):
            return getattr(model, STAGES[index + 1])[0].conv1, True
        return model.avgpool, True
    try:
        return model.get_submodule(layer), False
    except AttributeError:
        raise ValueError(f"unknown layer {layer!r}: use one of {', '.join(STAGES)} or a module name of the model") from None


def grad_cam(model: nn.Module, tensor: torch.Tensor, layer: str = DEFAULT_STAGE, target: str = "predicted") -> np.ndarray:
    """Grad-CAM of one preprocessed image ``tensor`` (``[3, H, W]`` or ``[1, 3, H, W]``): ``[H, W]`` in [0, 1].

    ``target``: ``predicted`` (the model's own verdict), ``fake`` or ``real``. The map is
    upsampled bilinearly to the input size and divided by its maximum; a map with no
    positive evidence is all zeros.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    images = tensor[None] if tensor.dim() == 3 else tensor
    if images.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image at a time, got a batch of {images.shape[0]}")
    images = images.detach().clone()  # an inference-mode tensor cannot enter autograd
    module, to_input = _hook_point(model, layer)
    with relu_not_inplace(model), torch.enable_grad():
        if target == "predicted":
            with torch.no_grad():
                target = "fake" if float(model(images).reshape(-1)[0]) > 0 else "real"
        sign = 1.0 if target == "fake" else -1.0
        cam = LayerGradCam(lambda batch: sign * model(batch).reshape(-1, 1), module)
        attribution = cam.attribute(images, target=0, attribute_to_layer_input=to_input, relu_attributions=True)
    heatmap = LayerAttribution.interpolate(attribution.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    heatmap = heatmap[0, 0].clamp_min(0)  # bilinear upsampling of a non-negative map stays non-negative, up to rounding
    peak = float(heatmap.max())
    return (heatmap / peak if peak > 0 else torch.zeros_like(heatmap)).cpu().numpy().astype(np.float32)


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = OVERLAY_OPACITY) -> Image.Image:
    """``heatmap`` ([h, w] in [0, 1]) in the jet colormap, resized to ``image`` and blended over it."""
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(image.size, Image.Resampling.BILINEAR)
    colours = cv2.applyColorMap(np.asarray(heat), cv2.COLORMAP_JET)[..., ::-1]  # OpenCV gives BGR
    return Image.blend(image.convert("RGB"), Image.fromarray(np.ascontiguousarray(colours)), opacity)
