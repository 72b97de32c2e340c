"""Parameter and MAC counts in the thop convention.

The published numbers ("FLOPs" in the papers) are thop's multiply-accumulates:

- Conv: ``out.numel() * (C_in / groups) * k_h * k_w`` (bias not counted);
- Linear: ``out.numel() * in_features``;
- BatchNorm: ``2 * in.numel()``, doubled when affine;
- ReLU and max-pooling: 0;
- average pooling: one add per pooled input plus one divide per output.

The counter runs one forward pass with hooks and keeps a per-layer record, so the
dashboard can show where the MACs are. Tests check it against thop itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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


COUNTERS = {
    nn.Conv2d: _conv_macs,
    nn.Linear: _linear_macs,
    nn.BatchNorm2d: _norm_macs,
    nn.BatchNorm1d: _norm_macs,
    nn.AdaptiveAvgPool2d: _adaptive_avgpool_macs,
    nn.AvgPool2d: _avgpool_macs,
    nn.ReLU: lambda m, i, o: 0,
    nn.MaxPool2d: lambda m, i, o: 0,
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
