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

from core.models import build_model
from core.models.compact import CompactResNet
from core.models.masked import DROP, KEEP, MaskedResNet, block_convs, masked_layers, residual_blocks
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


def rounded_counts(counts: list[int], widths: list[int], multiple: int) -> list[int]:
    """Each count rounded up to a multiple of ``multiple``, at most its layer's width."""
    if multiple < 1:
        raise ValueError(f"round-to must be >= 1, got {multiple}")
    return [min(width, -(-count // multiple) * multiple) for count, width in zip(counts, widths, strict=True)]


@torch.no_grad()
def round_masks(masked: MaskedResNet, multiple: int) -> MaskedResNet:
    """``masked`` (in place) keeping, in every layer, its kept filters plus the dropped ones with the highest keep
    probability, up to a multiple of ``multiple`` filters. The sampler's logits are moved just enough for its eval
    mask to say so, so the masked network and the compact one cut from it (:func:`compact_from_masked`) agree."""
    sampler = masked.sampler
    if not hasattr(sampler, "logits"):
        raise ValueError("round-to needs a Gumbel keep/drop sampler (KDFS, Pearson); this student's sampler has none")
    probability = sampler.keep_probability().detach().cpu()
    masks = sampler.split(sampler.eval_mask().cpu().bool())
    widths = [len(mask) for mask in masks]
    targets = rounded_counts([int(mask.sum()) for mask in masks], widths, multiple)
    offset = 0
    for mask, target in zip(masks, targets, strict=True):
        extra = target - int(mask.sum())
        if extra:
            candidates = torch.nonzero(~mask).flatten()
            chosen = candidates[torch.argsort(probability[offset + candidates], descending=True)[:extra]] + offset
            logits = sampler.logits
            logits[chosen, KEEP] = torch.maximum(logits[chosen, KEEP], logits[chosen, DROP] + 1e-3).to(logits.dtype)
        offset += len(mask)
    return masked


@torch.no_grad()
def pad_compact(compact: CompactResNet, multiple: int) -> CompactResNet:
    """A copy of ``compact`` whose every pruned conv has a multiple of ``multiple`` filters, the added ones all zero
    (weights, BatchNorm scale and shift): the same outputs, exactly, with channel counts that fill the CPU's vector
    lanes. For a compact checkpoint without its masked twin (the dropped filters' weights are gone)."""
    widths = [layer.channels for layer in masked_layers(build_model(compact.arch))]
    counts = rounded_counts(compact.active_filters, widths, multiple)
    padded = CompactResNet(compact.arch, counts).to(next(compact.parameters()).device)
    padded.load_state_dict({k: v for k, v in compact.state_dict().items() if not k.startswith("layer")}, strict=False)
    for (_, source), (_, target) in zip(residual_blocks(compact), residual_blocks(padded), strict=True):
        previous = None
        for position in range(1, source.depth + 1):
            conv, bn = getattr(source, f"conv{position}"), getattr(source, f"bn{position}")
            new_conv, new_bn = getattr(target, f"conv{position}"), getattr(target, f"bn{position}")
            kept, inputs = conv.out_channels, conv.in_channels
            new_conv.weight.zero_()
            new_conv.weight[:kept, :inputs] = conv.weight
            new_bn.weight.zero_(), new_bn.bias.zero_(), new_bn.running_mean.zero_(), new_bn.running_var.fill_(1.0)
            new_bn.weight[:kept], new_bn.bias[:kept] = bn.weight, bn.bias
            new_bn.running_mean[:kept], new_bn.running_var[:kept] = bn.running_mean, bn.running_var
            previous = kept
        index = source.residual_index
        target.residual_index.copy_(torch.cat([index, index[:1].expand(len(target.residual_index) - previous)]))
        if source.downsample is not None:
            target.downsample.load_state_dict(source.downsample.state_dict())
    return padded.eval()
