"""PDD: pruning during distillation (the comparison system of the published Pearson work).

A ResNet-18 student learns from a ResNet-50 teacher through ``BCE + lambda_kd * L_KD``
(the same binary KD as KDFS/Pearson). Every block conv of the student carries one
real mask score per output channel (:class:`core.models.masked.SignSampler`): the
forward pass multiplies the channel by ``1[m > 0]``, the backward pass uses the
ApproxSign polynomial's gradient ``max(0, 1 - |m|)`` (straight-through), and the
scores train jointly with the weights. Nothing but the distillation loss moves the
scores in the published method (``lambda_prune: 0``); ``lambda_prune > 0`` adds an
L1 pull ``mean((ApproxSign(m) + 1) / 2)`` toward fewer channels, as an option.

Channels whose score ends <= 0 are then removed by the same surgery as every masked
student (:func:`core.pruning.surgery.compact_from_masked`): the compact ResNet-18's
configuration comes from the masks, not from hand-copied numbers, and its cost is
reported against the dense ResNet-18 (11.18 M params / 2,381 M MACs at 256 px).
The published fine-tune of the compact network is SGD, lr 0.01, momentum 0.9
(``python -m core finetune`` applies it to a PDD student unless told otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.methods.distillation import Distiller, MaskedStudentMethod, StudentOptions
from core.training.config import TrainConfig

# the published fine-tune of the compact student
FINETUNE = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}


@dataclass
class PDDOptions(StudentOptions):
    """PDD's defaults: KD + BCE only, a student trained from scratch (its architecture differs from the teacher's)."""

    lambda_rl: float = 0.0
    lambda_prune: float = 0.0
    student_init: str = "scratch"
    initial_score: float = 0.5  # every channel starts kept, inside ApproxSign's gradient window (|m| < 1)

    @classmethod
    def from_config(cls, config: TrainConfig) -> PDDOptions:
        options = super().from_config(config)
        if not -1 < options.initial_score < 1:
            raise ValueError(f"initial_score must lie in (-1, 1), where ApproxSign has a gradient; got {options.initial_score}")
        return options


class PDDMethod(MaskedStudentMethod):
    name = "pdd"
    description = "PDD: ResNet-18 student with sign masks (ApproxSign gradient) trained during KD from a ResNet-50 teacher."
    sampler = "sign"
    options_class = PDDOptions
    same_arch_teacher = False

    def build(self, config: TrainConfig) -> Distiller:
        distiller = super().build(config)
        with torch.no_grad():
            distiller.student.sampler.scores.fill_(self.options(config).initial_score)
        return distiller

    def prune_loss(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        return keep_probability.mean()
