"""KDFS: knowledge distillation + Gumbel filter selection with a MACs target (the baseline).

``L_prune = (MACs(student; pi) / MACs(teacher) - (1 - target_rate))^2``

``MACs(student; pi)`` is :class:`core.pruning.flops.MaskedCost` of the straight-through
mask: its value is the exact MACs of the compact model the sampled mask gives (at the
real input size), and its gradient reaches the keep probabilities.
"""

from __future__ import annotations

import torch

from core.methods import register_method
from core.methods.distillation import Distiller, MaskedStudentMethod, Penalty


class MacsPenalty(Penalty):
    """``(MACs(student; pi) / MACs(teacher) - (1 - target_rate))^2``."""

    def __init__(self, target_rate: float) -> None:
        self.remaining = 1.0 - target_rate

    def __call__(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        return (distiller.cost.macs(mask.float()) / distiller.teacher_macs - self.remaining).pow(2)


@register_method
class KDFSMethod(MaskedStudentMethod):
    name = "kdfs"
    description = "KDFS: masked ResNet-50 student, KD + feature reconstruction, MACs penalty toward a target rate."
    rank = 10
    compared_in = ("pearson-paper",)
    baseline = True

    def penalty(self) -> Penalty:
        return MacsPenalty(self.options.target_rate)
