"""Masks -> a physically smaller network: the *how* of pruning, shared by every masked method.

:func:`compact_from_masked` removes each dropped filter of a :class:`MaskedResNet`
(its conv output channel and BN entry), slices the next conv's input channels, and
copies the surviving weights. The block's last conv writes into the residual
stream; instead of coupling whole stages (a filter could only go where every block
of the stage drops it), the kept channels are scattered back into the stream:
``out = relu(identity.index_add(1, kept, bn(conv(...))))``. That is exact, lets
every block prune its own filters, and costs one channel-indexed add.

Because the masked model applies its mask after BN, the compact model's logits
equal the masked model's eval logits (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.compact import CompactResNet
from core.models.masked import MaskedResNet, block_convs, residual_blocks
from core.models.ticket import Ticket
from core.pruning.correlation import redundancy_scores


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    target.weight.copy_(source.weight[keep])
    target.bias.copy_(source.bias[keep])
    target.running_mean.copy_(source.running_mean[keep])
    target.running_var.copy_(source.running_var[keep])
    target.num_batches_tracked.copy_(source.num_batches_tracked)
    target.eps, target.momentum = source.eps, source.momentum


@torch.no_grad()
def compact_from_masked(masked: MaskedResNet) -> CompactResNet:
    """The physically pruned network of ``masked``'s eval (argmax) masks, weights copied."""
    masked.warn_empty_layers()
    keep_masks = masked.sampler.split(masked.sampler.eval_mask().cpu().bool())
    kept = [torch.nonzero(mask).flatten() for mask in keep_masks]
    compact = CompactResNet(masked.arch, [len(k) for k in kept]).to(masked.sampler.layer_index.device)
    compact.load_state_dict({k: v for k, v in masked.state_dict().items()
                             if not k.startswith(("layer", "sampler."))}, strict=False)
    kept_iter = iter(kept)
    for (_, source), (_, target) in zip(residual_blocks(masked), residual_blocks(compact), strict=True):
        previous = None
        for position, (conv, bn) in enumerate(block_convs(source)):
            keep = next(kept_iter).to(conv.weight.device)
            weight = conv.weight[keep]
            if previous is not None:
                weight = weight[:, previous]
            getattr(target, f"conv{position + 1}").weight.copy_(weight)
            _copy_bn(getattr(target, f"bn{position + 1}"), bn, keep)
            previous = keep
        target.residual_index.copy_(previous)
        if source.downsample is not None:
            target.downsample.load_state_dict(source.downsample.state_dict())
    return compact.eval()



@torch.no_grad()
def filter_record(masked: MaskedResNet, digits: int = 4) -> dict[str, list[list]]:
    """What the search decided, per layer and filter, for the header of the student and its compact model.

    ``kept``: the eval mask's filter indices (where each compact channel came from);
    ``keep_probability``: the sampler's (Gumbel: ``softmax(P / tau)[keep]`` at its current temperature);
    ``redundancy``: the Pearson redundancy score of each filter's weights at that moment.
    The compact model loses the dropped filters' weights, so analyses of "before vs after"
    read these lists instead.
    """
    sampler = masked.sampler
    keep_probability = sampler.keep_probability().detach().cpu()
    masks = sampler.split(sampler.eval_mask().cpu().bool())
    convs = [conv for _, block in residual_blocks(masked) for conv, _ in block_convs(block)]
    return {
        "kept": [torch.nonzero(mask).flatten().tolist() for mask in masks],
        "keep_probability": [[round(p, digits) for p in layer.tolist()] for layer in sampler.split(keep_probability)],
        "redundancy": [[round(r, digits) for r in redundancy_scores(conv.weight.detach().cpu()).tolist()] for conv in convs],
    }


def compact_of(model: nn.Module) -> tuple[nn.Module, dict]:
    """The deployable network of a loaded checkpoint and its header: a masked student becomes its compact model,
    a lottery ticket its plain network with the pruned weights at zero."""
    header = dict(model.header)
    if isinstance(model, Ticket):
        header["model"] = {"type": "resnet", "arch": model.arch}
        header["compacted_from"] = "ticket"
        return model.sparse_network(), header
    if isinstance(model, MaskedResNet):
        compact = compact_from_masked(model)
        header["model"] = {"type": "compact-resnet", "arch": model.arch, "active_filters": compact.active_filters}
        header["compacted_from"] = "masked-resnet"
        return compact, header
    return model, header
