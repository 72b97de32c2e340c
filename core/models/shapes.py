"""A registry network rebuilt at the layer widths a structured pruning left (``pruned-net`` checkpoints)."""

from __future__ import annotations

from torch import nn


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """The width of every conv, BN and linear layer, by module name (JSON-ready)."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            shapes[name] = {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
        elif isinstance(module, nn.BatchNorm2d):
            shapes[name] = {"num_features": module.num_features}
        elif isinstance(module, nn.Linear):
            shapes[name] = {"in_features": module.in_features, "out_features": module.out_features}
    return shapes


def _resized(module: nn.Module, widths: dict[str, int]) -> nn.Module:
    """A fresh layer like ``module`` (kernel, stride, padding, bias, eps...) at ``widths``."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(widths["in_channels"], widths["out_channels"], module.kernel_size, module.stride, module.padding,
                         module.dilation, widths["groups"], module.bias is not None, module.padding_mode)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(widths["num_features"], module.eps, module.momentum, module.affine, module.track_running_stats)
    if isinstance(module, nn.Linear):
        return nn.Linear(widths["in_features"], widths["out_features"], module.bias is not None)
    raise ValueError(f"cannot resize a {type(module).__name__}")


def with_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """``model`` with every layer whose recorded width differs rebuilt at that width (untrained), in place."""
    modules = dict(model.named_modules())
    current = layer_shapes(model)
    unknown = sorted(set(shapes) - set(current))
    if unknown:
        raise ValueError(f"the pruned-network record names layers the architecture does not have: {unknown[:3]}")
    for name, widths in shapes.items():
        if widths == current[name]:
            continue
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, _resized(modules[name], widths))
    return model
