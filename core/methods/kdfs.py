"""KDFS: knowledge distillation + Gumbel filter selection with a MACs target (the baseline).

``L_prune = (MACs(student; pi) / MACs(teacher) - (1 - target_rate))^2``

``MACs(student; pi)`` is :class:`core.pruning.flops.MaskedCost` of the straight-through
mask: its value is the exact MACs of the compact model the sampled mask gives (at the
real input size), and its gradient reaches the keep probabilities.
"""

from __future__ import annotations

import torch

from core.methods.distillation import Distiller, MaskedStudentMethod


class KDFSMethod(MaskedStudentMethod):
    name = "kdfs"
    description = "KDFS: masked ResNet-50 student, KD + feature reconstruction, MACs penalty toward a target rate."

    def prune_loss(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        remaining = 1.0 - distiller.options.target_rate
        return (distiller.cost.macs(mask.float()) / distiller.teacher_macs - remaining).pow(2)
