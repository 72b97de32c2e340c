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
from torch.nn import functional as F

from core.models.masked import MaskedResNet, block_convs, masked_layers, residual_blocks
from core.models.resnet import build_model
from core.pruning.correlation import redundancy_scores


class CompactBlock(nn.Module):
    """A residual block with pruned convs; its last conv's channels scatter into the residual stream."""

    def __init__(self, block: nn.Module, active: list[int]):
        super().__init__()
        pairs = block_convs(block)
        in_channels = pairs[0][0].in_channels
        self.depth = len(pairs)
        for position, ((conv, _), out_channels) in enumerate(zip(pairs, active, strict=True)):
            setattr(self, f"conv{position + 1}", nn.Conv2d(
                in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                bias=False))
            setattr(self, f"bn{position + 1}", nn.BatchNorm2d(out_channels))
            in_channels = out_channels
        self.downsample = block.downsample
        self.residual_channels = pairs[-1][0].out_channels
        self.register_buffer("residual_index", torch.arange(active[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for position in range(1, self.depth + 1):
            out = getattr(self, f"bn{position}")(getattr(self, f"conv{position}")(out))
            if position < self.depth:
                out = F.relu(out, inplace=True)
        # In place wherever nothing else reads the tensor, as torchvision's ``out += identity; relu_``: ``out`` and the
        # downsample's output are this block's own, and without autograd nothing reads the block input after conv1 (a
        # forward hook that keeps a block's input or output must clone it, as core.evaluation.inspect does).
        # A full-width copy per block costs more than the block's pruned convs (at 256 px, batch 32: 40% of the pass).
        if out.shape[1] == self.residual_channels:
            return F.relu(out.add_(identity), inplace=True)
        in_place = identity is not x or not torch.is_grad_enabled()
        return F.relu(scatter_channels(identity, self.residual_index, out, in_place), inplace=True)


def scatter_channels(stream: torch.Tensor, index: torch.Tensor, source: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``stream[:, index] += source``, in place or on a copy, fast in either memory format.

    NCHW: ``index_add`` along channels. channels_last: the same add as a row-wise ``scatter_add``
    on the ``[N*H*W, C]`` matrix the tensor is in memory; ``index_add`` over dim 1 would walk the
    whole tensor once per channel (10-40x slower at 64x64 maps).
    """
    if stream.is_contiguous() or not stream.is_contiguous(memory_format=torch.channels_last):
        return stream.index_add_(1, index, source) if in_place else stream.index_add(1, index, source)
    target = stream if in_place else stream.clone(memory_format=torch.channels_last)
    rows = target.permute(0, 2, 3, 1).view(-1, target.shape[1])  # a view: the scatter writes into target
    values = source.permute(0, 2, 3, 1).reshape(-1, source.shape[1])
    rows.scatter_add_(1, index.expand(rows.shape[0], -1), values)
    return target


class CompactResNet(nn.Module):
    """The pruned ResNet: same stem, downsample convs and head; block convs at their kept widths."""

    def __init__(self, arch: str, active_filters: list[int]):
        super().__init__()
        self.arch = arch
        net = build_model(arch)
        layers = masked_layers(net)
        if len(active_filters) != len(layers):
            raise ValueError(f"{arch} has {len(layers)} masked layers, got {len(active_filters)} filter counts")
        if any(not 1 <= n <= layer.channels for n, layer in zip(active_filters, layers, strict=True)):
            raise ValueError("every layer keeps between 1 and all of its filters")
        self.active_filters = list(active_filters)
        counts = iter(active_filters)
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            for index, block in enumerate(stage):
                stage[index] = CompactBlock(block, [next(counts) for _ in block_convs(block)])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(net, name))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last in eval: oneDNN's own layout, and CPU max-pooling is vectorised only in it (NCHW: ~15x slower at
        # 256 px). Exports stay NCHW: ONNX Runtime picks its own layout, and the NCHW scatter exports as a ScatterND that
        # runs ~1.8x faster there than the channels_last one (Expand + ScatterElements).
        if not self.training and not torch.compiler.is_exporting():
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


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
