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
from core.methods import register_method
from core.methods.distillation import Distiller, MaskedStudentMethod, Penalty, StudentOptions
from core.methods.options import option


@dataclass
class PDDOptions(StudentOptions):
    """PDD's defaults (the authors' code): KD + BCE only, a student trained from scratch (its architecture
    differs from the teacher's), scores drawn around zero and decayed like the weights."""

    lambda_rl: float = 0.0
    lambda_prune: float = 0.0
    student_init: str = "scratch"
    initial_score: float = option(0.0, "pdd: mean of the starting mask scores (the PDD code: 0); inside (-1, 1), where "
                                       "ApproxSign has a gradient", low=-1, high=1, low_open=True, high_open=True)
    initial_score_std: float = option(1e-3, "pdd: their spread (the PDD code's randn * 0.001; 0: all equal)", low=0)
    sampler_weight_decay: float | None = None  # the weights' decay acts on the scores (PDD code: one SGD for all)


class KeptShare(Penalty):
    """``mean((ApproxSign(m) + 1) / 2)``: the L1 pull toward fewer channels (``lambda_prune > 0``)."""

    def __call__(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        return keep_probability.mean()


@register_method
class PDDMethod(MaskedStudentMethod):
    name = "pdd"
    description = "PDD: ResNet-18 student with sign masks (ApproxSign gradient) trained during KD from a ResNet-50 teacher."
    rank = 30
    compared_in = ("pearson-paper",)
    sampler = "sign"
    options_class = PDDOptions
    same_arch_teacher = False

    def build(self, config: TrainConfig) -> Distiller:
        distiller = super().build(config)
        options = self.options
        with torch.no_grad():  # seeded: the engine calls torch.manual_seed(config.seed) before build
            distiller.student.sampler.scores.normal_(options.initial_score, options.initial_score_std)
        return distiller

    def penalty(self) -> Penalty:
        return KeptShare()
