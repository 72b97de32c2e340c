"""The per-block-masked compact ResNet rewritten for graph runtimes: each stage's residual stream split in two.

Why. In a student trained with per-block masks (``residual_mask: block``) every block adds its last conv's kept
channels back into the full-width residual stream (:class:`core.models.compact.CompactBlock`: a scatter). Exported
to ONNX, each scatter is a ``ScatterND`` between two transposes, with layout reorders around it: in ONNX Runtime at
256 px the shipped Pearson student spent more time there than in its pruned convs (``bench runtimes``).

What. Within a stage, the channels that any of its blocks writes (*written*) are few: 3 of 256, 51 of 512, 57 of
1024 and 98 of 2048 in the shipped Pearson student. Every other channel (*passed*) is written by the stage's
projection alone and then passes through the blocks unchanged: the stream is post-ReLU after the first block, so
``relu(x + 0)`` is ``x``. So a stage here

- computes the passed channels once: the projection's rows for them, then ReLU (one fused conv in a graph);
- carries only the written channels through the blocks: each block's first conv reads both parts (two convs whose
  sum is the original conv), and its last conv writes the written part's positions directly (each filter placed at
  the position it adds onto, zero filters at the others), so its output adds onto the written part as it is: no
  scatter, no gather, an add that a graph runtime fuses into the conv;
- concatenates ``[written, passed]`` once at its end. That order is a permutation of the stream's channels, which
  the next stage's first convs (or the head) absorb into their weights; the stage keeps it as ``channel_order``,
  and its inverse as ``channel_inverse``, through which its out-of-distribution statistics are reported in the
  channels' original order (:class:`core.evaluation.ood.FeatureTap`; a constant index, nothing computed per pass).

A stage whose first block has no projection (BasicBlock ResNets' ``layer1``) splits its post-ReLU input with two
gathers instead.

Exact: the same arithmetic up to float reassociation (BatchNorm folded into the convs, the first conv's input sum
taken in two parts; a zero filter adds an exact zero): 1e-6 on the shipped students, checked whenever a served form is built
(:func:`core.deploy.runtimes.load_runtime`). Graph runtimes only (:func:`graph_form`, applied by
:func:`core.deploy.onnx.write_onnx`): in PyTorch eager the split convs cost more than the scatter they replace (at
256 px, batch 1, 2 threads: 22.1 against 19.2 ms for the shipped Pearson student), so PyTorch serves the
:class:`~core.models.compact.CompactResNet`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.models.compact import CompactBlock, CompactResNet

STAGES = ("layer1", "layer2", "layer3", "layer4")


def graph_form(network: nn.Module) -> nn.Module:
    """The network a graph export runs: a per-block-masked :class:`CompactResNet` as a :class:`SplitStreamResNet`
    (eval mode, the same logits), anything else as it is."""
    if isinstance(network, CompactResNet) and network.residual_mask == "block":
        return SplitStreamResNet(network.eval())
    return network


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv`` followed by ``bn`` (eval) as one conv's weight and bias."""
    fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
    return fused.weight.detach(), fused.bias.detach()


def _conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A conv with ``like``'s geometry and the given weight (``[out, in, kh, kw]``) and bias."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], like.kernel_size, like.stride, like.padding, like.dilation,
                     like.groups, bias=bias is not None)
    conv.weight = nn.Parameter(weight.clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return conv


class SplitBlock(nn.Module):
    """A compact block's convs (BatchNorm folded) on a split stream.

    ``input_order``: the original stream channel at each position of the block's input. ``written``: the number of
    leading positions of a split input that are the written part (None: the block reads one unsplit tensor, as a
    stage's first block with a projection does). ``position``: the written part's position of each channel the
    stage's blocks write."""

    def __init__(self, block: CompactBlock, input_order: torch.Tensor, written: int | None, position: dict[int, int]):
        super().__init__()
        self.depth = block.depth
        weight, bias = _folded(block.conv1, block.bn1)
        weight = weight[:, input_order]
        if written is None:
            self.conv1 = _conv(block.conv1, weight, bias)
            self.conv1_passed = None
        else:  # two convs whose sum is conv1: one over the written part (with the bias), one over the passed part
            self.conv1 = _conv(block.conv1, weight[:, :written], bias)
            self.conv1_passed = _conv(block.conv1, weight[:, written:], None) if weight.shape[1] > written else None
        for index in range(2, self.depth + 1):
            conv = getattr(block, f"conv{index}")
            weight, bias = _folded(conv, getattr(block, f"bn{index}"))
            if index == self.depth:  # the last conv writes the stage's written positions directly
                weight, bias = _onto_written(block, position, weight, bias)
            setattr(self, f"conv{index}", _conv(conv, weight, bias))

    def update(self, written: torch.Tensor, passed: torch.Tensor | None, source: torch.Tensor | None = None) -> torch.Tensor:
        """``written`` after this block: relu(written + what the block's last conv adds onto it). The block's first
        conv reads ``source`` when given (a stage's first block: the stage input), else ``[written, passed]``."""
        if source is not None:
            out = self.conv1(source)
        else:
            out = self.conv1(written)
            if self.conv1_passed is not None:
                out = out + self.conv1_passed(passed)
        for index in range(2, self.depth + 1):
            out = getattr(self, f"conv{index}")(F.relu(out))
        return F.relu(written + out)


def _onto_written(block: CompactBlock, position: dict[int, int], weight: torch.Tensor,
                  bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``block``'s last conv (folded ``weight``, ``bias``) as a conv onto the stage's written positions: output ``p``
    is the sum of the filters ``block`` adds onto the channel at written position ``p`` (zero where it adds none, the
    sum where several land on one channel, as the scatter adds them)."""
    rows = torch.tensor([position[int(channel)] for channel in block.residual_index], dtype=torch.long)
    onto_weight = torch.zeros(len(position), *weight.shape[1:], dtype=weight.dtype).index_add_(0, rows, weight)
    return onto_weight, torch.zeros(len(position), dtype=bias.dtype).index_add_(0, rows, bias)


class SplitStage(nn.Module):
    """A stage of compact blocks with its stream split into written and passed channels (module docstring).

    ``input_order``: the original channel at each position of the stage's input. ``channel_order``: the same for its
    output, ``[written, passed]``; ``channel_inverse``: the output position of each original channel."""

    def __init__(self, blocks: list[CompactBlock], input_order: torch.Tensor):
        super().__init__()
        if any(block.downsample is not None for block in blocks[1:]):
            raise ValueError("only a stage's first block may have a projection")
        width = blocks[0].residual_channels
        written = sorted({int(c) for block in blocks for c in block.residual_index})
        passed = sorted(set(range(width)) - set(written))
        order = torch.tensor(written + passed, dtype=torch.long)
        self.written, self.passed = len(written), len(passed)
        self.register_buffer("channel_order", order)
        # where each original channel sits in the output: the stage's statistics are read back through it (FeatureTap)
        self.register_buffer("channel_inverse", torch.argsort(order))
        position = {channel: index for index, channel in enumerate(written)}

        projection = blocks[0].downsample
        if projection is not None:  # the first block reads the stage input whole; the projection's rows split
            weight, bias = _folded(projection[0], projection[1])
            weight, bias = weight[order][:, input_order], bias[order]
            self.project_written = _conv(projection[0], weight[:self.written], bias[:self.written])
            self.project_passed = (_conv(projection[0], weight[self.written:], bias[self.written:]) if self.passed
                                   else None)
            first = [SplitBlock(blocks[0], input_order, None, position)]
            rest = blocks[1:]
        else:  # the input is post-ReLU, in input_order: its written and passed channels are gathered out of it
            at = {int(channel): index for index, channel in enumerate(input_order)}
            self.register_buffer("take_written", torch.tensor([at[c] for c in written], dtype=torch.long))
            self.register_buffer("take_passed", torch.tensor([at[c] for c in passed], dtype=torch.long))
            self.project_written = self.project_passed = None
            first, rest = [], blocks
        self.blocks = nn.ModuleList(first + [SplitBlock(block, order, self.written, position) for block in rest])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = list(self.blocks)
        if self.project_written is not None:
            passed = F.relu(self.project_passed(x)) if self.project_passed is not None else None
            written = blocks.pop(0).update(self.project_written(x), None, source=x)
        else:
            written, passed = x.index_select(1, self.take_written), x.index_select(1, self.take_passed)
        for block in blocks:
            written = block.update(written, passed)
        return written if passed is None else torch.cat([written, passed], dim=1)


class SplitStreamResNet(nn.Module):
    """A per-block-masked :class:`CompactResNet` with every stage a :class:`SplitStage` and every BatchNorm folded:
    the same logits, for graph export. Module names follow the ResNet (``layer1`` ... ``layer4``, ``fc``), so that
    out-of-distribution taps find the stages."""

    def __init__(self, compact: CompactResNet):
        super().__init__()
        if compact.residual_mask != "block":
            raise ValueError("the split stream is for per-block residual masks; a stage-masked stream has no scatter")
        self.conv1 = _conv(compact.conv1, *_folded(compact.conv1, compact.bn1))
        self.maxpool, self.avgpool = compact.maxpool, compact.avgpool
        order = torch.arange(compact.conv1.out_channels)
        for name in STAGES:
            stage = SplitStage(list(getattr(compact, name)), order)
            setattr(self, name, stage)
            order = stage.channel_order
        fc = compact.fc
        self.fc = nn.Linear(fc.in_features, fc.out_features, bias=fc.bias is not None)
        self.fc.weight = nn.Parameter(fc.weight.detach()[:, order].clone(), requires_grad=False)
        if fc.bias is not None:
            self.fc.bias = nn.Parameter(fc.bias.detach().clone(), requires_grad=False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.conv1(images)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
