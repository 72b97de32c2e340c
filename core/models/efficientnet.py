"""EfficientNet-B0 and the Lite0 derived from it, with a single-logit head (logit > 0 means *fake*).

``efficientnet_lite0`` is the issue's derivation: torchvision's B0 with every
squeeze-excitation block removed and every SiLU replaced by ReLU6 (both are what
makes B0 slow or awkward on CPUs and quantised targets). Google's published Lite0 also
fixes the stem and head widths against depth/width scaling; at the B0 scale that
changes nothing in the widths, but its weights and exact block layout are not
torchvision's, so this is "B0 without SE and with ReLU6", not a port of Google's
checkpoints.

``--pretrained imagenet`` (online) or ``--pretrained efficientnet_b0_rwightman-7f5810bc.pth``
(torchvision's file, offline) starts both from B0's ImageNet weights: everything but
the head ``classifier.1``, and for Lite0 everything but the squeeze-excitation tensors.
Lite0's ReLU6 is not B0's SiLU, so its ImageNet start is a start, not a Lite0 model.
"""

from __future__ import annotations

import math

from torch import nn
from torchvision import models as tv
from torchvision.ops.misc import SqueezeExcitation

from core.models.registry import DERIVED_FROM, HEAD_PREFIX, IMAGENET_WEIGHTS, register_architecture

IMAGENET_WEIGHTS.register("efficientnet_b0", tv.EfficientNet_B0_Weights.IMAGENET1K_V1)
DERIVED_FROM.register("efficientnet_lite0", "efficientnet_b0")
HEAD_PREFIX.register("efficientnet_b0", "classifier.")
HEAD_PREFIX.register("efficientnet_lite0", "classifier.")


@register_architecture("efficientnet_b0")
def efficientnet_b0() -> nn.Module:
    return _single_logit(tv.efficientnet_b0(num_classes=1))


@register_architecture("efficientnet_lite0")
def efficientnet_lite0() -> nn.Module:
    return to_lite(efficientnet_b0())


def _single_logit(model: nn.Module) -> nn.Module:
    """Re-initialise the head as U(-1/sqrt(fan_in), 1/sqrt(fan_in)), zero bias.

    torchvision draws it from U(-1/sqrt(out_features), ...), which for one output is
    U(-1, 1) over 1280 features: the first logits are +-20 and training from scratch
    stalls at chance.
    """
    head = model.classifier[1]
    bound = 1 / math.sqrt(head.in_features)
    nn.init.uniform_(head.weight, -bound, bound)
    nn.init.zeros_(head.bias)
    return model


def to_lite(model: nn.Module) -> nn.Module:
    """B0 -> Lite0 in place: squeeze-excitation -> identity, SiLU -> ReLU6.

    Swapping modules at the same positions keeps every other state-dict key, so the
    remaining weights line up one to one with B0's.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, SqueezeExcitation):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.SiLU):
                setattr(parent, name, nn.ReLU6(inplace=child.inplace))
    return model
