"""Pearson correlation of conv filters: the redundancy signal of the Pearson method.

For the ``C`` filters of one layer, each flattened to ``W`` weights:

- ``rho_ij = 1/(W-1) * sum_k ((w_ik - mu_i)/s_i) * ((w_jk - mu_j)/s_j)`` (``s`` the sample std);
- ``Score_i = 1/(C-1) * sum_{j != i} rho_ij^2`` (how well the other filters already say what filter i says).

A zero-variance filter has no direction: its standardised weights are defined as
0, so it correlates 0 with everything (no NaN, finite gradients). Every function
takes a batch of layers of one shape, ``[..., C, W]`` after flattening, so the
training loss computes all equally-shaped layers in one call.
"""

from __future__ import annotations

import torch

# variance floor: below it a filter counts as constant (float32 weights sit around 1e-4 .. 1e-1)
VARIANCE_FLOOR = 1e-20


def standardize(weight: torch.Tensor) -> torch.Tensor:
    """``(w - mean) / std`` over each filter's weights (sample std, ddof 1).

    Conv weights ``[C, C_in, kh, kw]`` (or a batch ``[B, C, C_in, kh, kw]``) flatten to
    ``[C, W]``; already-flat ``[C, W]`` / ``[B, C, W]`` pass through.
    """
    flat = (weight.flatten(-3) if weight.dim() >= 4 else weight).float()
    centred = flat - flat.mean(dim=-1, keepdim=True)
    variance = centred.pow(2).sum(dim=-1, keepdim=True) / (flat.shape[-1] - 1)
    # clamp before sqrt: a constant filter gives 0 / sqrt(floor) = 0 with a finite gradient
    return centred / variance.clamp_min(VARIANCE_FLOOR).sqrt()


def pearson_correlation(weight: torch.Tensor) -> torch.Tensor:
    """``rho``: the ``[C, C]`` Pearson correlation of the flattened filters of ``weight`` ``[C, ...]``.

    A batch of layers ``[B, C, C_in, k, k]`` gives ``[B, C, C]``.
    """
    z = standardize(weight)
    return z @ z.transpose(-1, -2) / (z.shape[-1] - 1)


def redundancy_scores(weight: torch.Tensor) -> torch.Tensor:
    """``Score_i``: mean squared correlation of each filter with the others, ``[C, ...] -> [C]``.

    Uses ``sum_j rho_ij^2 = z_i^T (Z^T Z) z_i / (W-1)^2`` when a layer has more filters
    than weights per filter, so the cost is ``C * W * min(C, W)`` either way.
    """
    z = standardize(weight)
    channels, width = z.shape[-2], z.shape[-1]
    if width < channels:
        gram = z.transpose(-1, -2) @ z  # [W, W]
        row_sums = ((z @ gram) * z).sum(dim=-1) / (width - 1) ** 2
    else:
        row_sums = (z @ z.transpose(-1, -2)).pow(2).sum(dim=-1) / (width - 1) ** 2
    self_correlation = z.pow(2).sum(dim=-1) / (width - 1)  # rho_ii: 1, or 0 for a constant filter
    return (row_sums - self_correlation.pow(2)).clamp_min(0) / (channels - 1)
