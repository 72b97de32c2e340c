"""Masks -> a physically smaller network: the *how* of pruning, shared by every masked method.

:func:`compact_from_masked` removes each dropped filter of a :class:`MaskedResNet`
(its conv output channel and BN entry), slices the next conv's input channels, and
copies the surviving weights. The block's last conv writes into the residual
stream; instead of coupling whole stages (a filter could only go where every block
of the stage drops it), the kept channels are scattered back into the stream:
``out = relu(identity.index_add(1, kept, bn(conv(...))))``. That is exact, lets
every block prune its own filters, and costs one channel-indexed add.

A stage-masked student (``residual_mask: stage``) has one mask over each stage's stream, so there
the stream itself narrows: the writers' filters (downsample or stem, every block's last conv), the
readers' input channels (the next blocks' first convs, the next downsample, the head) are cut to the
stage's kept channels, and nothing is scattered. One walk over the student's :class:`MaskWiring` does
both modes: each conv it lists keeps its output mask's filters and its input mask's columns.

Because the masked model applies its mask after BN, the compact model's logits
equal the masked model's eval logits (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.compact import CompactResNet
from core.models.masked import DROP, KEEP, MaskedConv, MaskedResNet, MaskWiring, block_convs, residual_blocks
from core.models.ticket import Ticket
from core.pruning.correlation import redundancy_scores


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    target.weight.copy_(source.weight[keep])
    target.bias.copy_(source.bias[keep])
    target.running_mean.copy_(source.running_mean[keep])
    target.running_var.copy_(source.running_var[keep])
    target.num_batches_tracked.copy_(source.num_batches_tracked)
    target.eps, target.momentum = source.eps, source.momentum


def _rewired(wiring: MaskWiring) -> tuple[str, ...]:
    """The modules whose tensors the masks cut (their state-dict prefixes): the masked convs and BNs, the head."""
    names = [name for conv in wiring.convs for name in (conv.conv, conv.bn)] + (["fc"] if wiring.head is not None else [])
    return tuple(f"{name}." for name in names)


@torch.no_grad()
def compact_from_masked(masked: MaskedResNet) -> CompactResNet:
    """The physically pruned network of ``masked``'s eval (argmax) masks, weights copied."""
    masked.warn_empty_layers()
    wiring = masked.wiring
    keep_masks = masked.sampler.split(masked.sampler.eval_mask().cpu().bool())
    kept = [torch.nonzero(mask).flatten().to(masked.sampler.layer_index.device) for mask in keep_masks]
    compact = CompactResNet(masked.arch, [len(kept[conv.output]) for conv in wiring.block_convs],
                            masked.residual_mask).to(masked.sampler.layer_index.device)
    cut = _rewired(wiring)
    compact.load_state_dict({k: v for k, v in masked.state_dict().items()
                             if not k.startswith(("sampler.", *cut))}, strict=False)
    for conv in wiring.convs:
        keep = kept[conv.output]
        weight = masked.get_submodule(conv.conv).weight[keep]
        if conv.input is not None:
            weight = weight[:, kept[conv.input]]
        compact.get_submodule(conv.conv).weight.copy_(weight)
        _copy_bn(compact.get_submodule(conv.bn), masked.get_submodule(conv.bn), keep)
        if _scatters(wiring, conv):  # where this block's kept channels go in the full-width stream
            compact.get_submodule(conv.conv.rpartition(".")[0]).residual_index.copy_(keep)
    if wiring.head is not None:
        compact.fc.weight.copy_(masked.fc.weight[:, kept[wiring.head]])
        if masked.fc.bias is not None:
            compact.fc.bias.copy_(masked.fc.bias)
    return compact.eval()


def _scatters(wiring: MaskWiring, conv: MaskedConv) -> bool:
    """A block's last conv with its own mask: its kept channels scatter into the full-width stream."""
    return wiring.residual_mask == "block" and conv.block and wiring.layers[conv.output].residual


@torch.no_grad()
def filter_record(masked: MaskedResNet, digits: int = 4) -> dict[str, list[list]]:
    """What the search decided, per block conv and filter, for the header of the student and its compact model.

    With stage masks, the last conv of every block of a stage lists its stream's record (one mask for all of them).

    ``kept``: the eval mask's filter indices (where each compact channel came from);
    ``keep_probability``: the sampler's (Gumbel: ``softmax(P / tau)[keep]`` at its current temperature);
    ``redundancy``: the Pearson redundancy score of each filter's weights at that moment.
    The compact model loses the dropped filters' weights, so analyses of "before vs after"
    read these lists instead.
    """
    sampler = masked.sampler
    keep_probability = sampler.keep_probability().detach().cpu()
    masks = masked.per_conv(sampler.eval_mask().cpu().bool())
    convs = [conv for _, block in residual_blocks(masked) for conv, _ in block_convs(block)]
    return {
        "kept": [torch.nonzero(mask).flatten().tolist() for mask in masks],
        "keep_probability": [[round(p, digits) for p in layer.tolist()] for layer in masked.per_conv(keep_probability)],
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
        header["model"] = compact.spec()
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
    lanes. For a compact checkpoint without its masked twin (the dropped filters' weights are gone). A stage-masked
    network's streams are padded too (zero channels, and zero input columns where they are read)."""
    wiring = compact.wiring
    widths = [layer.channels for layer in wiring.layers]
    targets = rounded_counts(compact.layer_counts, widths, multiple)
    padded = CompactResNet(compact.arch, [targets[conv.output] for conv in wiring.block_convs],
                           compact.residual_mask).to(next(compact.parameters()).device)
    padded.load_state_dict({k: v for k, v in compact.state_dict().items() if not k.startswith(_rewired(wiring))
                            and not k.endswith("residual_index")}, strict=False)
    for conv in wiring.convs:
        source, target = compact.get_submodule(conv.conv), padded.get_submodule(conv.conv)
        bn, new_bn = compact.get_submodule(conv.bn), padded.get_submodule(conv.bn)
        kept, inputs = source.out_channels, source.in_channels
        rows = torch.arange(kept)
        if _scatters(wiring, conv):
            block, new_block = (model.get_submodule(conv.conv.rpartition(".")[0]) for model in (compact, padded))
            index, total = block.residual_index, len(new_block.residual_index)
            if total == new_block.residual_channels:  # padded to the stream's width: filter c writes channel c, so
                rows = index  # the block adds without a scatter (CompactBlock's plain add reads the filters in order)
                new_block.residual_index.copy_(torch.arange(total))
            else:  # the zero filters add nothing wherever they land: on the first kept channel (no channel is added
                # to the ones the stage's blocks write: core.models.split_stream)
                new_block.residual_index.copy_(torch.cat([index, index[:1].expand(total - kept)]))
        target.weight.zero_()
        target.weight[rows, :inputs] = source.weight
        new_bn.weight.zero_(), new_bn.bias.zero_(), new_bn.running_mean.zero_(), new_bn.running_var.fill_(1.0)
        new_bn.weight[rows], new_bn.bias[rows] = bn.weight, bn.bias
        new_bn.running_mean[rows], new_bn.running_var[rows] = bn.running_mean, bn.running_var
    if wiring.head is not None:
        padded.fc.weight.zero_()
        padded.fc.weight[:, :compact.fc.in_features] = compact.fc.weight
        if compact.fc.bias is not None:
            padded.fc.bias.copy_(compact.fc.bias)
    return padded.eval()
