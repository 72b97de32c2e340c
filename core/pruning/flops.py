"""Parameter and MAC counts in the thop convention.

The published numbers ("FLOPs" in the papers) are thop's multiply-accumulates:

- Conv: ``out.numel() * (C_in / groups) * k_h * k_w`` (bias not counted);
- Linear: ``out.numel() * in_features``;
- BatchNorm: ``2 * in.numel()``, doubled when affine;
- ReLU and max-pooling: 0;
- average pooling: one add per pooled input plus one divide per output;
- the block DCT of a frequency branch (:class:`~core.data.frequency.FrequencyTransform`): its two
  matrix products ``A_H X A_W^T``, ``out.numel() * (H + W)``, as thop counts ``matmul``; the FFT
  variant counts 0 (thop does not count FFTs).

The counter runs one forward pass with hooks and keeps a per-layer record, so the
dashboard can show where the MACs are. Tests check it against thop itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.data.frequency import FrequencyTransform


@dataclass
class LayerCost:
    name: str
    kind: str
    params: int
    macs: int
    output_shape: tuple[int, ...]


def _conv_macs(module: nn.Conv2d, inputs, output) -> int:
    kernel = module.weight.shape[2] * module.weight.shape[3]
    return output.numel() * (inputs[0].shape[1] // module.groups) * kernel


def _linear_macs(module: nn.Linear, inputs, output) -> int:
    return output.numel() * module.in_features


def _norm_macs(module: nn.modules.batchnorm._BatchNorm, inputs, output) -> int:
    return 2 * inputs[0].numel() * (2 if module.affine else 1)


def _adaptive_avgpool_macs(module, inputs, output) -> int:
    # one add per pooled input: exact for windows that tile the input, as in ResNets
    return inputs[0].numel() + output.numel()


def _avgpool_macs(module: nn.AvgPool2d, inputs, output) -> int:
    kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
    return output.numel() * (kernel[0] * kernel[1] + 1)


def _frequency_macs(module: FrequencyTransform, inputs, output) -> int:
    return output.numel() * (output.shape[-2] + output.shape[-1]) if module.kind == "dct" else 0


COUNTERS = {
    nn.Conv2d: _conv_macs,
    nn.Linear: _linear_macs,
    nn.BatchNorm2d: _norm_macs,
    nn.BatchNorm1d: _norm_macs,
    nn.AdaptiveAvgPool2d: _adaptive_avgpool_macs,
    nn.AvgPool2d: _avgpool_macs,
    nn.ReLU: lambda m, i, o: 0,
    nn.MaxPool2d: lambda m, i, o: 0,
    FrequencyTransform: _frequency_macs,
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def profile_layers(model: nn.Module, image_size: int, channels: int = 3) -> list[LayerCost]:
    """Per-layer MACs of one forward pass on a ``1 x channels x image_size x image_size`` input."""
    records: list[LayerCost] = []
    handles = []
    for name, module in model.named_modules():
        counter = COUNTERS.get(type(module))
        if counter is None:
            continue

        def hook(mod, inputs, output, name=name, counter=counter):
            records.append(LayerCost(
                name=name,
                kind=type(mod).__name__,
                params=sum(p.numel() for p in mod.parameters(recurse=False)),
                macs=int(counter(mod, inputs, output)),
                output_shape=tuple(output.shape),
            ))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return records


def profile_model(model: nn.Module, image_size: int) -> dict:
    """``{"params", "macs", "image_size"}`` of ``model`` at one image, thop convention."""
    layers = profile_layers(model, image_size)
    return {"params": count_parameters(model), "macs": sum(layer.macs for layer in layers), "image_size": image_size}


class MaskedCost(nn.Module):
    """MACs and params of the compact network a filter mask gives, differentiable in the mask.

    Built once per input size from one profiled forward pass of the masked model, so it
    counts exactly what :func:`profile_model` counts on the compact model. Every conv that
    a mask narrows (the model's :class:`~core.models.masked.MaskWiring`) has ``k_out`` kept
    output filters (its output mask's) and ``k_in`` kept input channels (its input mask's,
    or its full input width when no mask zeroes its input):

    ``MACs = const + sum_convs a * k_in * k_out + b * k_out``

    where ``a`` is the conv's MACs per (input, output) channel pair (``H_out W_out kh kw``),
    ``b`` its BN's MACs per channel, and ``const`` everything unmasked. Per-block masks
    narrow the block convs only (stem, downsample convs, pooling and head are ``const``);
    stage masks narrow the stream too, so the downsample convs (or the stem) are terms,
    each stage's first conv reads the previous stream's kept channels, and the pooling and
    head add ``b_head * k_stream`` for the last stage's stream. Parameters follow the same
    form. With a straight-through mask its value is the hard mask's exact cost and its
    gradient flows through the keep probabilities.
    """

    def __init__(self, model: nn.Module, image_size: int):
        super().__init__()
        records = {layer.name: layer for layer in profile_layers(model, image_size)}
        modules = dict(model.named_modules())
        wiring = model.wiring
        conv_macs, conv_params, bn_macs, bn_params, full_inputs, inputs, outputs = [], [], [], [], [], [], []
        for masked_conv in wiring.convs:
            conv = modules[masked_conv.conv]
            if conv.bias is not None:
                raise ValueError(f"{masked_conv.conv}: masked convs must have no bias")
            pairs = conv.in_channels * conv.out_channels
            conv_macs.append(records[masked_conv.conv].macs / pairs)
            conv_params.append(records[masked_conv.conv].params / pairs)
            bn_macs.append(records[masked_conv.bn].macs / conv.out_channels)
            bn_params.append(records[masked_conv.bn].params / conv.out_channels)
            full_inputs.append(float(conv.in_channels))
            inputs.append(-1 if masked_conv.input is None else masked_conv.input)
            outputs.append(masked_conv.output)
        if wiring.head is not None:  # pooling (one add per input, one divide per output) and the head, per stream channel
            channels = model.fc.in_features
            conv_macs.append(0.0), conv_params.append(0.0), full_inputs.append(0.0), inputs.append(-1)
            bn_macs.append((records["avgpool"].macs + records["fc"].macs) / channels)
            bn_params.append(model.fc.weight.numel() / channels)
            outputs.append(wiring.head)
        # buffers: they follow the model to its device; not persistent (rebuilt from the architecture)
        for name, values in (("conv_macs", conv_macs), ("conv_params", conv_params), ("bn_macs", bn_macs),
                             ("bn_params", bn_params), ("full_inputs", full_inputs)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float64), persistent=False)
        self.register_buffer("inputs", torch.tensor(inputs), persistent=False)
        self.register_buffer("outputs", torch.tensor(outputs), persistent=False)
        self.register_buffer("layer_index", model.sampler.layer_index.clone().cpu(), persistent=False)
        self.layer_count = len(wiring.layers)
        self.image_size = image_size
        full = torch.ones(len(self.layer_index), dtype=torch.float64)
        total_macs = sum(layer.macs for layer in records.values())
        self.const_macs = total_macs - float(self._masked_terms(full, self.conv_macs, self.bn_macs))
        network_params = count_parameters(model) - sum(p.numel() for p in model.sampler.parameters())  # masks are not deployed
        self.const_params = network_params - float(self._masked_terms(full, self.conv_params, self.bn_params))
        self.full_macs, self.full_params = float(total_macs), float(network_params)

    def _masked_terms(self, mask: torch.Tensor, per_pair: torch.Tensor, per_channel: torch.Tensor) -> torch.Tensor:
        kept = torch.zeros(self.layer_count, dtype=mask.dtype, device=mask.device).index_add(0, self.layer_index, mask)
        kept_inputs = torch.where(self.inputs >= 0, kept[self.inputs.clamp_min(0)], self.full_inputs.to(mask.dtype))
        kept_outputs = kept[self.outputs]
        return (per_pair.to(mask.dtype) * kept_inputs * kept_outputs).sum() + (per_channel.to(mask.dtype) * kept_outputs).sum()

    def macs(self, mask: torch.Tensor) -> torch.Tensor:
        """MACs of the compact model for ``mask`` (``[sum C_l]``, hard or soft), differentiable."""
        return self.const_macs + self._masked_terms(mask, self.conv_macs, self.bn_macs)

    def params(self, mask: torch.Tensor) -> torch.Tensor:
        return self.const_params + self._masked_terms(mask, self.conv_params, self.bn_params)
