"""Model architectures. ``build_from_spec`` rebuilds any model a checkpoint header names."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

import core.models.dual  # noqa: F401  (registers dual_resnet18, dual_resnet_tiny)
import core.models.efficientnet  # noqa: F401  (registers efficientnet_b0, efficientnet_lite0)
import core.models.resnet  # noqa: F401  (registers resnet18, resnet34, resnet50, resnet-tiny)
import core.models.small  # noqa: F401  (registers mesonet, cnn5)
from core.models.compact import CompactResNet
from core.models.masked import MaskedResNet
from core.models.registry import ARCHITECTURES, build_model
from core.models.shapes import with_shapes
from core.models.ticket import Ticket
from core.registry import Registry


def _masked(spec: dict) -> nn.Module:

    return MaskedResNet(spec["arch"], spec.get("sampler", "gumbel"), spec.get("residual_mask", "block"))


def _compact(spec: dict) -> nn.Module:

    return CompactResNet(spec["arch"], spec["active_filters"], spec.get("residual_mask", "block"))


def _ticket(spec: dict) -> nn.Module:

    return Ticket(spec["arch"])


def _pruned(spec: dict) -> nn.Module:

    return with_shapes(build_model(spec["arch"]), spec["shapes"])


# spec["type"] -> builder(spec): every model kind a checkpoint can hold.
MODEL_TYPES: Registry[Callable[[dict], nn.Module]] = Registry("model type", {
    "resnet": lambda spec: build_model(spec["arch"]),
    "masked-resnet": _masked,
    "compact-resnet": _compact,
    "ticket": _ticket,
    "pruned-net": _pruned,
})

# spec["type"] -> what the network is, in the listings' words. "resnet" is a historical tag: it names every dense
# network of the architecture registry (ResNets, EfficientNets, the dual-stream ResNet, MesoNet), as in the shipped files.
MODEL_KINDS: dict[str, str] = {
    "resnet": "dense",
    "masked-resnet": "masked student",
    "compact-resnet": "compact student",
    "ticket": "lottery ticket",
    "pruned-net": "channel-pruned",
}


def model_kind(spec: dict) -> str:
    """What a checkpoint's network is (dense, masked or compact student, lottery ticket, channel-pruned)."""
    return MODEL_KINDS.get(spec.get("type"), f"unknown ({spec.get('type')})")


def build_from_spec(spec: dict) -> nn.Module:
    """Rebuild the (untrained) module described by a checkpoint's ``model`` spec."""
    return MODEL_TYPES.lookup(spec.get("type"))(spec)


__all__ = ["ARCHITECTURES", "MODEL_KINDS", "MODEL_TYPES", "build_from_spec", "build_model", "model_kind"]
