"""PDD: pruning during distillation (the comparison system of the published Pearson work).

A ResNet-18 student learns from a ResNet-50 teacher through ``BCE + lambda_kd * L_KD``
(the same binary KD as KDFS/Pearson). Every block conv of the student carries one
real mask score per output channel (:class:`core.models.masked.SignSampler`): the
forward pass multiplies the channel by ``1[m > 0]``, the backward pass uses the
ApproxSign polynomial's gradient ``max(0, 1 - |m|)`` (straight-through), and the
scores train jointly with the weights. As in the PDD authors' code, the scores start
near zero, ``m ~ N(0, 0.001^2)`` (``initial_score``, ``initial_score_std``), so about
half the channels start off and a small push flips any of them, and the optimiser's
weight decay acts on them as on the weights (``sampler_weight_decay: null``; the
authors' single SGD optimiser decays every parameter). Nothing but the distillation
loss and that decay moves the scores in the published method (``lambda_prune: 0``);
``lambda_prune > 0`` adds an L1 pull ``mean((ApproxSign(m) + 1) / 2)`` toward fewer
channels, as an option.

Channels whose score ends <= 0 are then removed by the same surgery as every masked
student (:func:`core.pruning.surgery.compact_from_masked`): the compact ResNet-18's
configuration comes from the masks, not from hand-copied numbers, and its cost is
reported against the dense ResNet-18 (11.18 M params / 2,381 M MACs at 256 px).
The published search and fine-tune settings (SGD, lr 0.01, momentum 0.9) are in the
dataset presets (``configs/presets.yaml``); ``python -m core finetune`` of a PDD student
without a preset takes the fine-tune of the ``paper`` preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.config import TrainConfig
from core.methods.distillation import Distiller, MaskedStudentMethod, StudentOptions


@dataclass
class PDDOptions(StudentOptions):
    """PDD's defaults (the authors' code): KD + BCE only, a student trained from scratch (its architecture
    differs from the teacher's), scores drawn around zero and decayed like the weights."""

    lambda_rl: float = 0.0
    lambda_prune: float = 0.0
    student_init: str = "scratch"
    initial_score: float = 0.0  # the mean of the starting scores (PDD code: 0)
    initial_score_std: float = 1e-3  # their spread (PDD code: randn * 0.001); 0 = every score equals initial_score
    sampler_weight_decay: float | None = None  # the weights' decay acts on the scores (PDD code: one SGD for all)

    @classmethod
    def from_config(cls, config: TrainConfig) -> PDDOptions:
        options = super().from_config(config)
        if not -1 < options.initial_score < 1:
            raise ValueError(f"initial_score must lie in (-1, 1), where ApproxSign has a gradient; got {options.initial_score}")
        if options.initial_score_std < 0:
            raise ValueError(f"initial_score_std must be >= 0, got {options.initial_score_std}")
        return options


class PDDMethod(MaskedStudentMethod):
    name = "pdd"
    description = "PDD: ResNet-18 student with sign masks (ApproxSign gradient) trained during KD from a ResNet-50 teacher."
    sampler = "sign"
    options_class = PDDOptions
    same_arch_teacher = False

    def build(self, config: TrainConfig) -> Distiller:
        distiller = super().build(config)
        options = self.options(config)
        with torch.no_grad():  # seeded: the engine calls torch.manual_seed(config.seed) before build
            distiller.student.sampler.scores.normal_(options.initial_score, options.initial_score_std)
        return distiller

    def prune_loss(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        return keep_probability.mean()
