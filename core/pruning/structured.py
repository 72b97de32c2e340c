"""Structured (channel) pruning through Torch-Pruning's dependency graph, and the record that rebuilds its result.

*What* to remove: group-level first-order Taylor importance (Molchanov et al., CVPR 2019,
``tp.importance.TaylorImportance``). For channel ``c`` of a coupled group,
``I_c = mean_over_layers( sum_k |w_k * dL/dw_k| )`` over the weights ``k`` that channel
owns in each layer of the group (a conv's filter, the next conv's input slice, the BN's
scale), divided by the group's mean importance so that groups compare globally.

*How*: ``tp.pruner.MetaPruner`` removes a group's channels together (expand conv,
depthwise conv, their BNs, the project conv's inputs; the residual stream of a stage),
so the result is a physically smaller network of the same architecture.

A pruned network is recorded as the widths of its layers (:func:`layer_shapes`);
:func:`with_shapes` rebuilds the registry architecture at those widths, and the
checkpoint's state dict then fills it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def prunable_channels(model: nn.Module, example_images: torch.Tensor) -> int:
    """The channels of every coupled group the pruner may remove, each group counted once (what a ``ratio`` refers to)."""
    import torch_pruning as tp  # imported when Taylor pruning runs

    graph = tp.DependencyGraph().build_dependency(model, example_images)
    groups = graph.get_all_groups(ignored_layers=[output_head(model)], root_module_types=[nn.Conv2d, nn.Linear])
    return sum(graph.get_out_channels(group[0][0].target.module) for group in groups)


def output_head(model: nn.Module) -> nn.Linear:
    """The single-logit classifier (the last linear layer): never pruned."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError("the model has no linear classifier head")
    return heads[-1]


TIE_BREAK = 1e-9  # weight of the magnitude term that orders channels of equal Taylor importance


def tie_broken_taylor_importance() -> Callable:
    """``tp``'s group Taylor importance, plus ``1e-9 x`` the group L2 magnitude (both mean-normalised per group).

    Dead channels (ReLU6 clipped or zero over the batches) all score exactly 0, and
    the global ranking removes every channel at or under its threshold, which
    overshoots the ratio; the tiny magnitude term orders them (smallest weights go
    first) without changing any other decision. A group whose channels all score 0
    divides 0 by 0 in the normalisation: those NaNs read as 0.
    """
    import torch_pruning as tp  # imported when Taylor pruning runs

    taylor, magnitude = tp.importance.TaylorImportance(), tp.importance.GroupMagnitudeImportance()

    def importance(group) -> torch.Tensor | None:
        score = taylor(group)
        return None if score is None else torch.nan_to_num(score, nan=0.0) + TIE_BREAK * magnitude(group)

    return importance


def taylor_prune(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ratio: float, global_pruning: bool,
                 max_layer_ratio: float = 1.0) -> nn.Module:
    """Remove ``ratio`` of the prunable channels of ``model`` (in place) by Taylor importance.

    ``loss(images, labels)`` is accumulated over ``batches`` to give ``dL/dw``; the
    model runs in eval mode for this (BN running statistics and dropout untouched).
    ``global_pruning`` ranks all groups together (layers lose different fractions),
    otherwise each group loses ``ratio``; ``max_layer_ratio`` caps any one group's loss.
    """
    import torch_pruning as tp  # imported when Taylor pruning runs

    batches = list(batches)
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, batches[0][0][:1], importance=tie_broken_taylor_importance(), global_pruning=global_pruning,
        pruning_ratio=ratio, max_pruning_ratio=max_layer_ratio, ignored_layers=[output_head(model)], round_to=None,
    )
    model.zero_grad(set_to_none=True)
    for images, labels in batches:
        loss(images, labels).backward()  # gradients add up over the batches
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return model
