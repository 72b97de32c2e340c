"""ResNet backbones with a single-logit head (logit > 0 means *fake*), registered in the architecture registry
(:mod:`core.models.registry`), and what the toolkit reads of a ResNet: its stages, features, folded BatchNorms."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision import models as tv

from core.models.registry import register_architecture


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


