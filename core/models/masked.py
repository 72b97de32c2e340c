"""The masked student: a ResNet whose block convs carry learnable keep/drop filter masks.

Every conv inside a residual block (``conv1..conv3`` of a Bottleneck, ``conv1..conv2``
of a BasicBlock; 48 layers in a ResNet-50) gets a sampler parameter
``P_l in R^{C_l x 2}`` (columns: drop, keep). The stem, the downsample convs and the
head are not masked.

- Training: ``pi_l = softmax((P_l + G) / tau)`` with Gumbel noise ``G``; the mask is
  ``one_hot(argmax pi_l)[:, keep]`` in the forward pass, with the gradient of
  ``pi_l[:, keep]`` (straight-through).
- Eval: the mask is ``argmax P_l``, no noise. A layer whose mask would be empty
  keeps its single most-kept filter.

The mask multiplies the *batch-normalised* output of each conv (conv -> BN -> mask),
so a dropped filter is exactly zero downstream and removing it
(:mod:`core.pruning.surgery`) changes nothing.

All layers share one ``[sum C_l, 2]`` parameter, so sampling all 48 masks is one
vectorised op. State-dict keys are the plain ResNet's plus ``sampler.logits``, so
a teacher checkpoint initialises a student directly.

``residual_mask="stage"`` (an option beside the papers' method, ``docs/methods.md``) narrows the residual
stream itself: each stage (``layer1..layer4``) gets ONE mask over its stream's channels, named
``layerK.residual``, which multiplies the batch-normalised output of every conv that writes the stream
(the stage's downsample projection, or the stem for a stage that opens without one, and every block's
last conv). The stream is then exactly zero at a dropped channel (``relu(0 + 0) = 0``), so surgery can
remove it from the whole stage: the writers' filters, the next convs' and the head's input channels. The
blocks' inner convs keep their own per-block masks. :class:`MaskWiring` says which mask narrows which
conv's output and input, in either mode; the cost model, the Pearson loss and the surgery all read it.

PDD's students use :class:`SignSampler` instead (``MaskedResNet(arch, sampler="sign")``):
one real score ``m`` per filter, mask ``1[m > 0]`` in the forward pass and the
ApproxSign polynomial's gradient ``max(0, 1 - |m|)`` in the backward pass; its
state-dict key is ``sampler.scores``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from core.models.registry import build_model

DROP, KEEP = 0, 1
# "block": a mask per conv of every block (the KDFS and Pearson papers'); "stage": the last convs of a stage share
# one mask over its residual stream, which the downsample (or the stem) shares too
RESIDUAL_MASKS = ("block", "stage")


@dataclass(frozen=True)
class MaskedLayer:
    """One masked conv: its name, filters, and the masked conv feeding it inside the block (or None)."""

    name: str
    channels: int
    previous: int | None  # index of the masked layer whose output this conv reads; None = block input
    residual: bool  # the block's last conv: its output is added to the residual stream


def block_convs(block: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, bn) pairs of a torchvision BasicBlock or Bottleneck, in order."""
    pairs = []
    for index in (1, 2, 3):
        conv = getattr(block, f"conv{index}", None)
        if conv is not None:
            pairs.append((conv, getattr(block, f"bn{index}")))
    return pairs


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"layer{s}.{b}", block) for s in range(1, 5) for b, block in enumerate(getattr(model, f"layer{s}"))]


@dataclass(frozen=True)
class MaskedConv:
    """A conv (and the BN after it) that a mask narrows: which masked layer's mask multiplies its output, and which
    one zeroes its input channels (a removed channel is then an output filter and an input column gone)."""

    conv: str  # module name: "layer1.0.conv3", "layer2.0.downsample.0", "conv1" (the stem)
    bn: str
    output: int  # index of the masked layer whose mask multiplies its batch-normalised output
    input: int | None  # index of the masked layer whose mask zeroes its input channels; None: its full input width
    block: bool  # a residual block's conv (False: a stage's downsample projection, or the stem)


@dataclass(frozen=True)
class MaskWiring:
    """The masked layers (one keep/drop mask each, the sampler's rows) and the convs they narrow."""

    residual_mask: str
    layers: list[MaskedLayer]
    convs: list[MaskedConv]  # in network order; "block": exactly the block convs
    head: int | None = None  # the masked layer zeroing the head's input (the last stage's stream); None: full width
    block_convs: list[MaskedConv] = field(init=False)  # every block conv once, in order (headers list per block conv)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_convs", [conv for conv in self.convs if conv.block])


def mask_wiring(model: nn.Module, residual_mask: str = "block") -> MaskWiring:
    """Which masks a torchvision ResNet (or a module laid out as one) carries, in ``residual_mask`` mode.

    ``block``: one masked layer per block conv (48 in a ResNet-50), each narrowing its own conv's output and the
    next conv's input inside the block. ``stage``: per stage, first its stream mask ``layerK.residual`` (written
    by the stage's downsample, or by the stem when layer1 has none, and by every block's last conv; read by the
    next stage's first block and downsample, or the head), then the blocks' inner convs, one mask each.
    """
    if residual_mask not in RESIDUAL_MASKS:
        raise ValueError(f"unknown residual_mask {residual_mask!r}: expected one of {RESIDUAL_MASKS}")
    stage_mode = residual_mask == "stage"
    layers: list[MaskedLayer] = []
    convs: list[MaskedConv] = []
    stream: int | None = None  # the masked layer of the stream entering the next block (None: unmasked)
    for stage_number in range(1, 5):
        stage_name = f"layer{stage_number}"
        stage = getattr(model, stage_name)
        stage_layer = None
        if stage_mode:
            opening = stage[0]
            stage_layer = len(layers)
            layers.append(MaskedLayer(f"{stage_name}.residual", block_convs(opening)[-1][0].out_channels,
                                      previous=None, residual=True))
            if opening.downsample is not None:
                convs.append(MaskedConv(f"{stage_name}.0.downsample.0", f"{stage_name}.0.downsample.1", stage_layer, stream,
                                        block=False))
            elif stage_number == 1:  # ResNet-18/34: layer1 adds onto the stem's output, so the stem writes its stream
                convs.append(MaskedConv("conv1", "bn1", stage_layer, None, block=False))
                stream = stage_layer
            else:
                raise ValueError(f"residual_mask stage: {stage_name} opens without a downsample projection, so its stream "
                                 "is the previous stage's; use residual_mask block for this architecture")
        for block_index, block in enumerate(stage):
            block_name = f"{stage_name}.{block_index}"
            pairs = block_convs(block)
            reads = stream
            for position, (conv, _) in enumerate(pairs):
                last = position == len(pairs) - 1
                if stage_mode and last:
                    output = stage_layer
                else:
                    output = len(layers)
                    layers.append(MaskedLayer(
                        name=f"{block_name}.conv{position + 1}",
                        channels=conv.out_channels,
                        previous=convs[-1].output if position > 0 else None,
                        residual=last,
                    ))
                convs.append(MaskedConv(f"{block_name}.conv{position + 1}", f"{block_name}.bn{position + 1}", output,
                                        reads, block=True))
                reads = output
            if stage_mode:
                stream = stage_layer
    return MaskWiring(residual_mask, layers, convs, head=stream if stage_mode else None)


def masked_layers(model: nn.Module, residual_mask: str = "block") -> list[MaskedLayer]:
    """The masked layers (the sampler's rows, in order) of ``model`` in ``residual_mask`` mode."""
    return mask_wiring(model, residual_mask).layers


class _Sampler(nn.Module):
    """What every mask sampler shares: per-layer bookkeeping, the eval mask with its rescue, splitting.

    Subclasses define ``margin()`` (> 0 means keep, per filter), ``keep_probability()``
    (in [0, 1], per filter) and ``forward() -> (mask, keep_probability)``.
    """

    def __init__(self, layers: list[MaskedLayer]):
        super().__init__()
        self.layers = layers
        self.channels = [layer.channels for layer in layers]
        self.register_buffer("layer_index", torch.repeat_interleave(
            torch.arange(len(layers)), torch.tensor(self.channels)), persistent=False)
        self.temperature = 1.0

    def margin(self) -> torch.Tensor:
        raise NotImplementedError

    def keep_probability(self) -> torch.Tensor:
        raise NotImplementedError

    def seed(self, seed: int) -> None:
        """Seed the sampling noise, if any (the engine calls this each epoch with the same seed on every rank)."""

    @torch.no_grad()
    def eval_mask(self) -> torch.Tensor:
        """``margin > 0`` per filter; a layer with nothing kept keeps its most-kept filter."""
        margin = self.margin().detach().float()
        keep = margin > 0
        kept = torch.zeros(len(self.channels), device=margin.device).index_add_(0, self.layer_index, keep.float())
        best = torch.full((len(self.channels),), -torch.inf, device=margin.device).scatter_reduce(
            0, self.layer_index, margin, reduce="amax")
        rescue = (margin == best[self.layer_index]) & (kept[self.layer_index] == 0)
        return (keep | rescue).float()

    def empty_layers(self) -> list[str]:
        """Layers whose margins keep nothing (the eval mask rescues one filter in each)."""
        margin = self.margin().detach()
        kept = torch.zeros(len(self.channels)).index_add_(0, self.layer_index.cpu(), (margin > 0).float().cpu())
        return [layer.name for layer, count in zip(self.layers, kept.tolist(), strict=True) if count == 0]

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views of a ``[sum C_l]`` vector."""
        return list(torch.split(values, self.channels))


class FilterSampler(_Sampler):
    """The keep/drop logits of every masked filter and the Gumbel-softmax sampler over them (KDFS, Pearson)."""

    def __init__(self, layers: list[MaskedLayer]):
        super().__init__(layers)
        self.logits = nn.Parameter(torch.empty(sum(self.channels), 2))
        # KDFS initialisation: Kaiming normal over (drop, keep), i.e. N(0, 1) with fan-in 2
        nn.init.kaiming_normal_(self.logits)
        self.generator: torch.Generator | None = None  # set per epoch: identical noise on every DDP rank

    def seed(self, seed: int) -> None:
        self.generator = torch.Generator(device=self.logits.device).manual_seed(seed)

    def margin(self) -> torch.Tensor:
        return self.logits[:, KEEP] - self.logits[:, DROP]

    def keep_probability(self) -> torch.Tensor:
        """``softmax(P / tau)[keep]`` without noise."""
        return torch.softmax(self.logits.float() / self.temperature, dim=-1)[:, KEEP]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, keep_probability)``, each ``[sum C_l]``: hard (straight-through) in training, argmax in eval."""
        logits = self.logits.float()
        if not self.training:
            return self.eval_mask(), self.keep_probability()
        if self.generator is not None and self.generator.device != logits.device:
            self.generator = torch.Generator(device=logits.device).manual_seed(self.generator.initial_seed())
        uniform = torch.rand(logits.shape, device=logits.device, generator=self.generator)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
        probabilities = torch.softmax((logits + gumbel) / self.temperature, dim=-1)
        keep_probability = probabilities[:, KEEP]
        hard = (probabilities[:, KEEP] > probabilities[:, DROP]).to(keep_probability.dtype)
        return hard - keep_probability.detach() + keep_probability, keep_probability


class ApproxSignMask(torch.autograd.Function):
    """Forward ``1[m > 0]``; backward the derivative of ApproxSign mapped to [0, 1]: ``max(0, 1 - |m|)``.

    ApproxSign (Bi-Real Net) is ``-1`` below -1, ``2m + m^2`` on [-1, 0), ``2m - m^2`` on [0, 1), ``1`` above;
    ``(ApproxSign + 1) / 2`` has slope ``1 + m`` then ``1 - m``, i.e. ``1 - |m|`` inside [-1, 1].
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores)
        return (scores > 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scores,) = ctx.saved_tensors
        return grad * (1 - scores.abs()).clamp_min(0)


def approx_sign01(scores: torch.Tensor) -> torch.Tensor:
    """``(ApproxSign(m) + 1) / 2`` in [0, 1]: the smooth surrogate of the binary mask (its "keep probability")."""
    m = scores.clamp(-1, 1)
    return torch.where(m < 0, (m + 1).pow(2) / 2, (1 + 2 * m - m.pow(2)) / 2)


class SignSampler(_Sampler):
    """PDD's masks: one score per filter, binarised by sign, trained through ApproxSign's gradient."""

    def __init__(self, layers: list[MaskedLayer], initial_score: float = 0.5):
        super().__init__(layers)
        self.scores = nn.Parameter(torch.full((sum(self.channels),), float(initial_score)))

    def margin(self) -> torch.Tensor:
        return self.scores

    def keep_probability(self) -> torch.Tensor:
        return approx_sign01(self.scores.float())

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.eval_mask(), self.keep_probability()
        return ApproxSignMask.apply(self.scores.float()), self.keep_probability()


SAMPLERS = {"gumbel": FilterSampler, "sign": SignSampler}


class MaskedResNet(nn.Module):
    """A torchvision ResNet (single logit) with filter masks on every block conv (``residual_mask``: see the module)."""

    def __init__(self, arch: str = "resnet50", sampler: str = "gumbel", residual_mask: str = "block"):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown mask sampler {sampler!r}: expected one of {sorted(SAMPLERS)}")
        self.arch = arch
        self.sampler_kind = sampler
        self.residual_mask = residual_mask
        net = build_model(arch)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(net, name))
        self.wiring = mask_wiring(self, residual_mask)
        self.sampler = SAMPLERS[sampler](self.wiring.layers)
        # the mask index of every conv output the forward pass multiplies: the stem's, each block's convs', its downsample's
        outputs = {conv.conv: conv.output for conv in self.wiring.convs}
        self._stem_mask = outputs.get("conv1")
        self._block_masks = [[outputs[f"{name}.conv{position + 1}"] for position in range(len(block_convs(block)))]
                             for name, block in residual_blocks(self)]
        self._downsample_masks = [outputs.get(f"{name}.downsample.0") for name, _ in residual_blocks(self)]

    @property
    def layers(self) -> list[MaskedLayer]:
        return self.sampler.layers

    @property
    def conv_channels(self) -> list[int]:
        """The filters of every block conv, in order (the ``pruning`` header's ``channels``)."""
        return [self.get_submodule(conv.conv).out_channels for conv in self.wiring.block_convs]

    def per_conv(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per block conv, the entries of a ``[sum C_l]`` vector (a mask, keep probabilities) of the mask on its output.

        ``block``: ``sampler.split(values)``; ``stage``: the last conv of every block of a stage reads its stream's mask.
        """
        per_layer = self.sampler.split(values)
        return [per_layer[conv.output] for conv in self.wiring.block_convs]

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """``(logits [N], stage features [4 maps], mask, keep_probability)``, masks freshly sampled.

        ``mask`` and ``keep_probability`` are ``[sum C_l]`` (split per layer with ``sampler.split``).
        """
        mask, keep_probability = self.sampler()
        masks = self.sampler.split(mask)
        x = self.conv1(images)
        x = self.bn1(x) if self._stem_mask is None else masked_batch_norm(self.bn1, x, masks[self._stem_mask])
        x = self.maxpool(self.relu(x))
        features = []
        blocks = iter(zip(self._block_masks, self._downsample_masks, strict=True))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            stage_input = x
            for block in stage:
                conv_masks, downsample_mask = next(blocks)
                x = _masked_block(block, x, [masks[i] for i in conv_masks],
                                  None if downsample_mask is None else masks[downsample_mask])
            # the stage ran block by block, not through its own call: its forward hooks get its output here (the
            # out-of-distribution statistics of a searched student tap the stages, core.evaluation.ood.FeatureTap)
            for hook in list(stage._forward_hooks.values()):
                x = hook(stage, (stage_input,), x) or x
            features.append(x)
        logits = self.fc(torch.flatten(self.avgpool(x), 1)).reshape(-1)
        return logits, features, mask, keep_probability

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)[0].reshape(-1, 1)

    @torch.no_grad()
    def active_filters(self) -> list[int]:
        """Kept filters per block conv under the eval (argmax) mask."""
        counts = torch.zeros(len(self.layers), device=self.sampler.layer_index.device)
        counts.index_add_(0, self.sampler.layer_index, self.sampler.eval_mask())
        per_layer = [int(c) for c in counts.tolist()]
        return [per_layer[conv.output] for conv in self.wiring.block_convs]

    def warn_empty_layers(self) -> list[str]:
        empty = self.sampler.empty_layers()
        if empty:
            warnings.warn(f"{len(empty)} layer(s) would keep no filter; keeping the most-kept one in: {', '.join(empty)}",
                          stacklevel=2)
        return empty


def masked_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``bn(x) * mask`` (per channel) as one batch norm whose affine is ``(gamma * mask, beta * mask)``.

    The same values and gradients (the mask's gradient reaches it through the scaled affine),
    without a masked copy of every activation map and its backward (about 4% of a 64 px
    ResNet-50 student step on a CPU). Running statistics are those of ``bn(x)``: they see ``x``,
    not the mask. In eval mode it is the plain module call and a multiply, so forward hooks
    (the MAC counter's) see the BN.
    """
    if not bn.training:
        return bn(x) * mask.to(x.dtype).view(1, -1, 1, 1)
    mask = mask.to(bn.weight.dtype)
    factor = 0.0
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    track = bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        bn.weight * mask, bn.bias * mask, True, factor, bn.eps)


def _masked_block(block: nn.Module, x: torch.Tensor, masks: list[torch.Tensor],
                  downsample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A BasicBlock/Bottleneck forward with conv -> BN -> mask (-> ReLU) for each conv (and for the downsample's,
    with ``downsample_mask``: a stage-shared stream mask)."""
    if block.downsample is None:
        identity = x
    elif downsample_mask is None:
        identity = block.downsample(x)
    else:
        projection, norm = block.downsample
        identity = masked_batch_norm(norm, projection(x), downsample_mask)
    out = x
    pairs = block_convs(block)
    for position, ((conv, bn), mask) in enumerate(zip(pairs, masks, strict=True)):
        out = masked_batch_norm(bn, conv(out), mask)
        if position < len(pairs) - 1:
            out = F.relu(out)
    return F.relu(out + identity)
