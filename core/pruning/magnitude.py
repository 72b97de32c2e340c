"""Unstructured magnitude pruning: the lottery-ticket masks.

A :class:`Ticket` is a dense registry network whose conv and linear weights are
multiplied by fixed 0/1 masks in every forward pass, and which carries the weights
it rewinds to (its initialisation, or an early point of the dense run). The masks
stay masks: zeros in dense tensors do not make a dense CPU kernel any faster, which
``python -m core bench``-style latency measurements of the dense and ticket networks
show side by side.

:func:`magnitude_masks` is global magnitude pruning: among the weights still kept,
drop the smallest ``|w|`` across all layers until the requested fraction of all
prunable weights is zero.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def magnitude_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning to ``sparsity`` (fraction of all prunable weights at zero).

    Weights already pruned stay pruned; among the kept ones the largest ``|w|`` over all
    layers survive (ties broken by position, so the count is exact).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    names = list(weights)
    scores = torch.cat([torch.where(masks[n].bool(), weights[n].abs(), -1.0).flatten() for n in names])
    keep = round((1 - sparsity) * scores.numel())
    if keep > int((scores >= 0).sum()):
        raise ValueError(f"cannot lower the sparsity: the source already prunes more than {sparsity:.1%}")
    flat = torch.zeros_like(scores)
    flat[torch.topk(scores, keep, sorted=False).indices] = 1.0
    return {n: chunk.view_as(weights[n]) for n, chunk in zip(names, torch.split(flat, [weights[n].numel() for n in names]), strict=True)}
