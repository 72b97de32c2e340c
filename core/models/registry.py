"""The architecture registry (:class:`core.registry.Registry`): every network a config, the CLI or a checkpoint header
names, by name, and :func:`build_model`, the one factory (ImageNet or local weights included).

Each family registers its builders where it is defined (``@register_architecture("resnet50")`` in
:mod:`core.models.resnet`, EfficientNets, the small CNNs, the dual-branch nets); importing :mod:`core.models`
imports every family, so any import of this module sees them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision import models as tv

from core.registry import Registry

ARCHITECTURES: Registry[Callable[[], nn.Module]] = Registry("architecture")  # name -> builder of the untrained network

# torchvision's ImageNet weights for each architecture (downloaded when online; other families add theirs)
IMAGENET_WEIGHTS: Registry = Registry("ImageNet weights", {
    "resnet18": tv.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tv.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tv.ResNet50_Weights.IMAGENET1K_V1,
})
# the parameter prefix of an architecture's classifier head, which ImageNet weights (1000 classes) never fill
HEAD_PREFIX: Registry[str] = Registry("classifier-head prefix")
# architectures derived from another by removing modules (EfficientNet-Lite0 from B0): they start from the
# other's ImageNet weights and keep the tensors they still have
DERIVED_FROM: Registry[str] = Registry("derived architecture")


register_architecture = ARCHITECTURES.register  # @register_architecture("name") on a builder of the network


def build_model(arch: str, pretrained: str | None = None) -> nn.Module:
    """Build ``arch`` with one output; ``pretrained`` is None, "imagenet" or a weights file.

    ImageNet weights load everything but the 1000-class head, which stays freshly
    initialised for the single logit. A derived architecture (Lite0) drops the tensors
    of the modules it removed (squeeze-excitation).
    """
    model = ARCHITECTURES.lookup(arch)()
    if pretrained:
        state = load_pretrained_state(arch, pretrained)
        head = HEAD_PREFIX.get(arch, "fc.")
        own = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
        state = {k: v for k, v in state.items() if not k.startswith(head) and (arch not in DERIVED_FROM or k in own)}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong_shape = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
        if missing or unexpected or wrong_shape:
            raise ValueError(f"pretrained weights do not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                             f"wrong shape {wrong_shape[:3]}")
        model.load_state_dict(state, strict=False)
    return model


def load_pretrained_state(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from torchvision's cache/download, or a local ``.pth``/``.safetensors`` file."""
    if pretrained != "imagenet":
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        try:
            if path.suffix == ".safetensors":

                return load_file(str(path))
            state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: never runs pickled code
        except Exception as error:  # noqa: BLE001 - unpickling refusals, zip and safetensors errors: one clear line
            raise ValueError(f"{path}: not a readable weights file ({type(error).__name__}); pass a .pth/.pt state dict "
                             "or a .safetensors file (pickled code is refused)") from None
        return state.get("state_dict", state) if isinstance(state, dict) else state
    source = DERIVED_FROM.get(arch, arch)
    if source not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights for '{arch}'; available for {sorted(IMAGENET_WEIGHTS | DERIVED_FROM)}")
    weights = IMAGENET_WEIGHTS[source]
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"cannot fetch torchvision ImageNet weights for {arch} ({type(error).__name__}): offline? "
            f"Download {weights.url} elsewhere and pass it with --pretrained PATH, or put it in {cache}, "
            "or train from scratch with --pretrained none."
        ) from None
