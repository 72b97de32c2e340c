"""The pruned ResNet as a physically smaller network (built by ``core.pruning.surgery`` from a masked one).

Each residual block keeps its own filters; the last conv's kept channels scatter back into the
residual stream (``out = relu(identity.index_add(1, kept, bn(conv(...))))``), which is exact.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.models.masked import block_convs, masked_layers
from core.models.resnet import build_model


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
