"""The dual-branch (spatial + frequency) teacher of two-in-one distillation.

``DualBranchNet`` runs two ResNets side by side: the *spatial* branch on the
normalised RGB image, the *frequency* branch on its block-DCT log-magnitude
representation (:func:`core.data.frequency.frequency_representation`, computed
inside ``forward``, so the checkpoint takes the same input as every other model).
Each branch ends in global average pooling (its ``fc`` is an identity); the two
pooled feature vectors are concatenated and one linear layer gives the single
logit::

    s = ResNet_s(x),  f = ResNet_f(F(x)),  logit = W [s; f] + b

``forward_branches`` returns ``(logits [N], s, f)`` for distillation and the
Embeddings page. Registered as ``dual_resnet18`` (two ResNet-18s, 512 + 512
features) and ``dual_resnet_tiny`` (two one-block ResNets, for tests); both train
with ``--method teacher --arch dual_resnet18`` and checkpoint as type ``resnet``.

Costs follow the thop convention (:mod:`core.pruning.flops`): the DCT is
parameter-free and counts as its two dense matrix products, ``C H W (H + W)``
multiply-adds per image (1.6 M at 64 px, about 0.5% of the two branches).
"""

from __future__ import annotations

import torch
from torch import nn

from core.data.frequency import FrequencyTransform
from core.models.registry import build_model, register_architecture
from core.registry import Registry

BRANCHES = ("spatial", "frequency")
DUAL_ARCHITECTURES: Registry[str] = Registry("dual-branch architecture")  # name -> the architecture of each branch


class DualBranchNet(nn.Module):
    """Spatial ResNet on RGB + frequency ResNet on the DCT representation, fused by one linear head."""

    def __init__(self, backbone: str, frequency: str = "dct"):
        super().__init__()
        self.backbone = backbone
        self.spatial = build_model(backbone)
        self.frequency = build_model(backbone)
        self.feature_widths = (self.spatial.fc.in_features, self.frequency.fc.in_features)
        self.spatial.fc = nn.Identity()  # each branch ends at its pooled features
        self.frequency.fc = nn.Identity()
        self.to_frequency = FrequencyTransform(frequency)
        self.fc = nn.Linear(sum(self.feature_widths), 1)

    def forward_branches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [N], spatial features [N, D_s], frequency features [N, D_f])`` in one pass."""
        spatial = self.spatial(images)
        frequency = self.frequency(self.to_frequency(images))
        return self.fc(torch.cat([spatial, frequency], dim=1)).reshape(-1), spatial, frequency

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_branches(images)[0].reshape(-1, 1)


def is_dual(arch: str | None) -> bool:
    return arch in DUAL_ARCHITECTURES


def _register_dual(name: str, backbone: str) -> None:
    DUAL_ARCHITECTURES.register(name, backbone)
    register_architecture(name)(lambda: DualBranchNet(backbone))


_register_dual("dual_resnet18", "resnet18")
_register_dual("dual_resnet_tiny", "resnet-tiny")  # tests and smoke runs
