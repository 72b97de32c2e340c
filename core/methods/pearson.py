"""Pearson: knowledge distillation + filter pruning guided by the Pearson correlation of filters.

Per masked layer ``l`` with ``C`` filters and keep probabilities ``phi`` (from the
sampled ``pi_l``):

``L_corr,l = (1/C) sum_i Score_l,i * phi_i``, ``L_prune = (1/L) sum_l L_corr,l``

with ``Score`` from :func:`core.pruning.correlation.redundancy_scores` (the paper's
equations, ``correlation_normalization: paper``), or ``(W_l - 1)^2`` times it
(``author-code``, the default): the authors' published code standardises each filter
with its sample std but forms ``Zn Zn^T`` without the paper's ``1/(W-1)``, so its
scores are ``(W-1)^2`` larger per layer, and the published lambda_3 values (0.5-1) act at
that scale (at ``paper`` scale their gradient on a keep logit is about 10^5 times
smaller; ``python -m core bench pearson-scale`` measures it). A filter that the others
already explain pays to stay, so the sampler learns to drop it.
With stage masks (``residual_mask: stage``) a stream channel is one keep probability shared by every conv
that writes it (the stage's downsample, or the stem, and each block's last conv): each of those convs is
scored on its own filters, as a block conv is, and its term reads the shared ``phi``, so the stream mask
pays, per channel, the sum of what the filters it removes would pay one by one. The downsample joins the
scored convs there (L = 52 for a ResNet-50): its filter goes with the channel too. Per-block masks score
the 48 block convs only, as the paper does.
Layers of the same weight shape are scored in one batched call (ResNet-50's 48
layers fall into 16 shapes). ``correlation_weight_gradient: false`` stops the
gradient into the weights, so only the masks respond to redundancy.

The scores cost ``sum_l C_l W_l min(C_l, W_l)`` multiply-adds a step (about 8.6 G for a
ResNet-50, a sizeable share of a 64 px CPU step, a small one of a 256 px GPU step). With
``correlation_weight_gradient: false`` they are constants of the masks' gradient, and
``score_every: N`` recomputes them only every N-th step of an epoch (the first step of
each epoch always does, so a resumed run replays an unbroken one); in between, the last
scores are reused. Each refresh records how well the previous scores agree with the new
ones (Pearson correlation over all filters): the epoch's lowest value is ``score_agreement``
in the epoch record, so the staleness is measured, not assumed.
"""

from __future__ import annotations

import torch

from core.methods import register_method
from core.methods.distillation import Distiller, MaskedStudentMethod, Penalty, StudentOptions
from core.models.masked import MaskedResNet
from core.pruning.correlation import redundancy_scores


def shape_groups(student: MaskedResNet) -> list[tuple[list[int], list[torch.nn.Conv2d]]]:
    """The scored convs, grouped by weight shape (each group is scored in one call), with the masked layer whose
    mask multiplies each one's output: every conv a mask narrows (:class:`core.models.masked.MaskWiring`), so
    with per-block masks the 48 block convs, each with its own mask; with stage masks also each stage's
    downsample (or the stem), and a stage's last convs and downsample all read the stage's stream mask."""
    modules = dict(student.named_modules())
    groups: dict[tuple, tuple[list[int], list]] = {}
    for masked_conv in student.wiring.convs:
        conv = modules[masked_conv.conv]
        indices, convs = groups.setdefault(tuple(conv.weight.shape), ([], []))
        indices.append(masked_conv.output)
        convs.append(conv)
    return list(groups.values())


def _flat_filters(weight: torch.Tensor) -> torch.Tensor:
    """``[C, W]``: each filter's weights in memory order (a view, no copy, for channels_last weights too).

    Means, variances and dot products do not depend on the order of a filter's weights, as
    long as every filter of the layer uses the same order, so neither do the scores.
    """
    if weight.is_contiguous(memory_format=torch.channels_last):
        return weight.permute(0, 2, 3, 1).flatten(1)
    return weight.flatten(1)


def normalization_factor(width: int, normalization: str) -> float:
    """What a layer's paper-scale scores are multiplied by: ``(W-1)^2`` under ``author-code``, 1 under ``paper``."""
    return float((width - 1) ** 2) if normalization == "author-code" else 1.0


def layer_scores(student: MaskedResNet, weight_gradient: bool = True, normalization: str = "paper",
                 groups: list | None = None) -> list[torch.Tensor]:
    """``Score`` of every shape group's layers, ``[G, C]`` per group, in :func:`shape_groups` order (``groups``: given)."""
    groups = shape_groups(student) if groups is None else groups
    scores = []
    # correlations of thousands-long filters lose too much in fp16: score them in fp32 under AMP
    with torch.autocast(student.sampler.layer_index.device.type, enabled=False):
        for _, convs in groups:
            weights = torch.stack([_flat_filters(conv.weight) for conv in convs])
            group = redundancy_scores((weights if weight_gradient else weights.detach()).float())
            scores.append(group * normalization_factor(weights.shape[-1], normalization))
    return scores


def correlation_loss(student: MaskedResNet, keep_probability: torch.Tensor, weight_gradient: bool = True,
                     scores: list[torch.Tensor] | None = None, normalization: str = "paper",
                     groups: list | None = None) -> torch.Tensor:
    """``(1/L) sum_l (1/C_l) sum_i Score_l,i * phi_l,i`` over the L scored convs, ``phi_l`` the keep probabilities of the
    mask on conv l's output (``scores``: precomputed ones)."""
    keep = student.sampler.split(keep_probability)
    groups = shape_groups(student) if groups is None else groups
    scores = layer_scores(student, weight_gradient, normalization, groups) if scores is None else scores
    total = keep_probability.new_zeros((), dtype=torch.float32)
    for (indices, _), group_scores in zip(groups, scores, strict=True):
        phi = torch.stack([keep[i] for i in indices]).float()
        total = total + (group_scores * phi).mean(dim=-1).sum()
    return total / sum(len(indices) for indices, _ in groups)


def _agreement(old: list[torch.Tensor], new: list[torch.Tensor]) -> float:
    """Pearson correlation of two score sets over all filters (1 = the stale scores rank filters as the fresh ones)."""
    pair = torch.stack([torch.cat([s.flatten() for s in old]), torch.cat([s.flatten() for s in new])])
    return float(torch.corrcoef(pair)[0, 1])


class CorrelationPenalty(Penalty):
    """Pearson's ``L_prune``, with its state: the student's shape groups, and (``score_every > 1``) the cached
    scores, refreshed every ``score_every`` steps and at each epoch's first, with their agreement."""

    def __init__(self, options: StudentOptions) -> None:
        self.options = options
        self.groups: list | None = None  # the architecture never changes: grouped once
        self.new_epoch()

    def new_epoch(self) -> None:
        self.step, self.scores, self.agreement = 0, None, []

    def __call__(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        options, student = self.options, distiller.student
        if self.groups is None:
            self.groups = shape_groups(student)
        if options.score_every == 1:
            return correlation_loss(student, keep_probability, options.correlation_weight_gradient,
                                    normalization=options.correlation_normalization, groups=self.groups)
        if self.scores is None or self.step % options.score_every == 0:
            with torch.no_grad():
                fresh = layer_scores(student, False, options.correlation_normalization, self.groups)
            if self.scores is not None:
                self.agreement.append(_agreement(self.scores, fresh))
            self.scores = fresh
        self.step += 1
        return correlation_loss(student, keep_probability, scores=self.scores, groups=self.groups)

    def summary(self) -> dict:
        return {"score_agreement": min(self.agreement)} if self.agreement else {}


@register_method
class PearsonMethod(MaskedStudentMethod):
    name = "pearson"
    description = "Pearson (proposed): masked ResNet-50 student, KD + feature reconstruction, filter-correlation redundancy loss."
    rank = 20
    compared_in = ("pearson-paper",)

    def penalty(self) -> Penalty:
        return CorrelationPenalty(self.options)
