"""Pearson: knowledge distillation + filter pruning guided by the Pearson correlation of filters.

Per masked layer ``l`` with ``C`` filters and keep probabilities ``phi`` (from the
sampled ``pi_l``):

``L_corr,l = (1/C) sum_i Score_l,i * phi_i``, ``L_prune = (1/L) sum_l L_corr,l``

with ``Score`` from :func:`core.pruning.correlation.redundancy_scores`. A filter
that the others already explain pays to stay, so the sampler learns to drop it.
Layers of the same weight shape are scored in one batched call (ResNet-50's 48
layers fall into 16 shapes). ``correlation_weight_gradient: false`` stops the
gradient into the weights, so only the masks respond to redundancy.
"""

from __future__ import annotations

import torch

from core.methods.distillation import Distiller, MaskedStudentMethod
from core.models.masked import MaskedResNet
from core.pruning.correlation import redundancy_scores


def shape_groups(student: MaskedResNet) -> list[tuple[list[int], list[torch.nn.Conv2d]]]:
    """Masked-layer indices and their convs, grouped by weight shape (each group is scored in one call)."""
    modules = dict(student.named_modules())
    groups: dict[tuple, tuple[list[int], list]] = {}
    for index, layer in enumerate(student.layers):
        conv = modules[layer.name]
        indices, convs = groups.setdefault(tuple(conv.weight.shape), ([], []))
        indices.append(index)
        convs.append(conv)
    return list(groups.values())


def correlation_loss(student: MaskedResNet, keep_probability: torch.Tensor, weight_gradient: bool = True) -> torch.Tensor:
    """``(1/L) sum_l (1/C_l) sum_i Score_l,i * phi_l,i`` over all masked layers."""
    keep = student.sampler.split(keep_probability)
    groups = getattr(student, "_shape_groups", None)
    if groups is None:  # the architecture never changes: group once per model
        groups = student._shape_groups = shape_groups(student)
    total = keep_probability.new_zeros((), dtype=torch.float32)
    # correlations of thousands-long filters lose too much in fp16: score them in fp32 under AMP
    with torch.autocast(keep_probability.device.type, enabled=False):
        for indices, convs in groups:
            weights = torch.stack([conv.weight for conv in convs])
            if not weight_gradient:
                weights = weights.detach()
            scores = redundancy_scores(weights.float())  # [G, C]
            phi = torch.stack([keep[i] for i in indices]).float()
            total = total + (scores * phi).mean(dim=-1).sum()
    return total / len(student.layers)


class PearsonMethod(MaskedStudentMethod):
    name = "pearson"
    description = "Pearson (proposed): masked ResNet-50 student, KD + feature reconstruction, filter-correlation redundancy loss."

    def prune_loss(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        return correlation_loss(distiller.student, keep_probability, distiller.options.correlation_weight_gradient)
