"""The pruned ResNet as a physically smaller network (built by ``core.pruning.surgery`` from a masked one).

Each residual block keeps its own filters; the last conv's kept channels scatter back into the
residual stream (``out = relu(identity.index_add(1, kept, bn(conv(...))))``), which is exact.

A student trained with ``residual_mask: stage`` has one mask per stage over the stream itself, so its
compact network carries a narrower stream: every block's last conv, the downsample projection (or, for
a stage without one, the stem), the next convs' inputs and the head's input are at the stage's kept
width, and a block's output adds onto its input without a scatter (the header's ``pruning.kept`` says
which of the teacher's channels each one is).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.models.masked import MaskWiring, block_convs, mask_wiring
from core.models.registry import build_model


class CompactBlock(nn.Module):
    """A residual block with pruned convs; its last conv's channels scatter into the residual stream.

    ``stream_in`` (a stage-masked student): the stream arrives at that width and leaves at ``active[-1]``, the
    stage's kept width, which the downsample projection is narrowed to as well; no scatter then.
    """

    def __init__(self, block: nn.Module, active: list[int], stream_in: int | None = None):
        super().__init__()
        pairs = block_convs(block)
        in_channels = pairs[0][0].in_channels if stream_in is None else stream_in
        self.depth = len(pairs)
        for position, ((conv, _), out_channels) in enumerate(zip(pairs, active, strict=True)):
            setattr(self, f"conv{position + 1}", nn.Conv2d(
                in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                bias=False))
            setattr(self, f"bn{position + 1}", nn.BatchNorm2d(out_channels))
            in_channels = out_channels
        if stream_in is None:
            self.downsample = block.downsample
            self.residual_channels = pairs[-1][0].out_channels
            self.register_buffer("residual_index", torch.arange(active[-1]))
        else:  # the stream is as narrow as the block's output: a plain add
            self.downsample = None if block.downsample is None else _narrowed_projection(block.downsample, stream_in,
                                                                                          active[-1])
            self.residual_channels = active[-1]

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


def _narrowed_projection(downsample: nn.Sequential, in_channels: int, out_channels: int) -> nn.Sequential:
    """torchvision's ``Sequential(conv, bn)`` downsample at the given widths, its conv's geometry kept."""
    conv = downsample[0]
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                                   conv.groups, bias=False), nn.BatchNorm2d(out_channels))


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
    """The pruned ResNet: same stem, downsample convs and head; block convs at their kept widths.

    ``active_filters``: the kept filters of every block conv, in order (48 in a ResNet-50). With ``residual_mask``
    ``stage`` the last convs of a stage's blocks keep one count, its stream's width, which the downsample (or the stem,
    for a stage without one) and the head's input share.
    """

    def __init__(self, arch: str, active_filters: list[int], residual_mask: str = "block"):
        super().__init__()
        self.arch = arch
        self.residual_mask = residual_mask
        net = build_model(arch)
        self.wiring = mask_wiring(net, residual_mask)
        self.layer_counts = _layer_counts(self.wiring, active_filters, net)
        self.active_filters = list(active_filters)
        counts = iter(active_filters)
        if residual_mask == "block":
            for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
                for index, block in enumerate(stage):
                    stage[index] = CompactBlock(block, [next(counts) for _ in block_convs(block)])
        else:
            stream = net.conv1.out_channels
            stem = next((conv for conv in self.wiring.convs if conv.conv == "conv1"), None)
            if stem is not None:  # layer1 adds onto the stem's output: the stem writes its stream
                stream = self.layer_counts[stem.output]
                net.conv1 = nn.Conv2d(net.conv1.in_channels, stream, net.conv1.kernel_size, net.conv1.stride,
                                      net.conv1.padding, bias=False)
                net.bn1 = nn.BatchNorm2d(stream)
            for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
                for index, block in enumerate(stage):
                    stage[index] = CompactBlock(block, [next(counts) for _ in block_convs(block)], stream_in=stream)
                    stream = stage[index].residual_channels
            net.fc = nn.Linear(stream, net.fc.out_features, bias=net.fc.bias is not None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(net, name))

    def spec(self) -> dict:
        """The checkpoint header's ``model`` entry that rebuilds this network (``core.models.build_from_spec``)."""
        return {"type": "compact-resnet", "arch": self.arch, "active_filters": list(self.active_filters),
                **({"residual_mask": self.residual_mask} if self.residual_mask != "block" else {})}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last in eval: oneDNN's own layout, and CPU max-pooling is vectorised only in it. Exports stay NCHW:
        # ONNX Runtime picks its own layout, and the NCHW scatter exports as one ScatterND, which runs faster there than
        # the channels_last one's Expand + ScatterElements (bench serving-profile, bench runtimes).
        if not self.training and not torch.compiler.is_exporting():
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _layer_counts(wiring: MaskWiring, active_filters: list[int], net: nn.Module) -> list[int]:
    """The kept filters of each masked layer, from the per-block-conv counts (checked: in range, shared ones equal)."""
    convs = wiring.block_convs
    if len(active_filters) != len(convs):
        raise ValueError(f"{len(convs)} block convs, got {len(active_filters)} filter counts")
    counts: dict[int, int] = {}
    for conv, count in zip(convs, active_filters, strict=True):
        if not 1 <= count <= net.get_submodule(conv.conv).out_channels:
            raise ValueError("every layer keeps between 1 and all of its filters")
        if counts.setdefault(conv.output, count) != count:
            raise ValueError(f"{wiring.layers[conv.output].name}: the last convs of a stage share its stream's width, "
                             f"got {count} and {counts[conv.output]}")
    return [counts[index] for index in range(len(wiring.layers))]
