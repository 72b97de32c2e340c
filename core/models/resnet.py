"""ResNet backbones with a single-logit head (logit > 0 means *fake*).

The registry maps an architecture name to a builder, so configs, the CLI and the
checkpoint header all name models the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}

# torchvision's ImageNet weights for each architecture (downloaded when online; other families add theirs)
IMAGENET_WEIGHTS = {
    "resnet18": tv.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tv.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tv.ResNet50_Weights.IMAGENET1K_V1,
}
# the parameter prefix of an architecture's classifier head, which ImageNet weights (1000 classes) never fill
HEAD_PREFIX: dict[str, str] = {}
# architectures derived from another by removing modules (EfficientNet-Lite0 from B0): they start from the
# other's ImageNet weights and keep the tensors they still have
DERIVED_FROM: dict[str, str] = {}


def register_architecture(name: str):
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = builder
        return builder

    return decorate


@register_architecture("resnet18")
def resnet18() -> nn.Module:
    return tv.resnet18(num_classes=1)


@register_architecture("resnet34")
def resnet34() -> nn.Module:
    return tv.resnet34(num_classes=1)


@register_architecture("resnet50")
def resnet50() -> nn.Module:
    return tv.resnet50(num_classes=1)


@register_architecture("resnet-tiny")
def resnet_tiny() -> nn.Module:
    """A one-block-per-stage ResNet for tests and smoke runs (not a paper model)."""
    return tv.ResNet(tv.resnet.BasicBlock, [1, 1, 1, 1], num_classes=1)


def build_model(arch: str, pretrained: str | None = None) -> nn.Module:
    """Build ``arch`` with one output; ``pretrained`` is None, "imagenet" or a weights file.

    ImageNet weights load everything but the 1000-class head, which stays freshly
    initialised for the single logit. A derived architecture (Lite0) drops the tensors
    of the modules it removed (squeeze-excitation).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}'; choose from {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[arch]()
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
                from safetensors.torch import load_file

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


def stages(model: nn.Module) -> list[nn.Module]:
    """The four residual stages (feature maps that distillation and analyses read)."""
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def forward_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits [N], the four stage feature maps)`` of a torchvision ResNet in one pass."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    features = []
    for stage in stages(model):
        x = stage(x)
        features.append(x)
    return model.fc(torch.flatten(model.avgpool(x), 1)).reshape(-1), features


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A frozen eval copy of ``model`` whose convs absorb the BatchNorm that follows them (as ONNX Runtime does at load).

    ``conv{i}``/``bn{i}`` siblings and ``Sequential(conv, bn)`` downsamples: the layout of
    torchvision's ResNets and of the compact network. The BNs become identities (their hooks
    still fire), so the output equals the source's up to float rounding (~1e-6 relative), for
    about 15% less time in a 64 px ResNet-50 forward on a CPU. For networks that only run
    forward in eval mode: a distillation teacher, a benchmarked deployable.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d) \
                and isinstance(module[1], nn.BatchNorm2d):
            module[0], module[1] = fuse_conv_bn_eval(module[0], module[1]), nn.Identity()
        for name, child in list(module.named_children()):
            conv = getattr(module, name.replace("bn", "conv"), None) if name.startswith("bn") else None
            if isinstance(child, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
                setattr(module, name.replace("bn", "conv"), fuse_conv_bn_eval(conv, child))
                setattr(module, name, nn.Identity())
    return folded.requires_grad_(False)


RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def pooled_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N], pooled features [N, D])``: the head's input, of a torchvision ResNet or a CompactResNet."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    features = torch.flatten(model.avgpool(x), 1)
    return model.fc(features).reshape(-1), features


def set_trainable(model: nn.Module, trainable: str) -> None:
    """"all" trains every layer; "layer4" freezes all but layer4 and the head (the paper's fine-tune)."""
    if trainable == "all":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return
    if trainable != "layer4":
        raise ValueError(f"trainable must be 'all' or 'layer4', got {trainable!r}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(("layer4.", "fc.")))


