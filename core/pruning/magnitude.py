"""Unstructured magnitude pruning: the lottery-ticket masks.

A :class:`Ticket` is a dense registry network whose conv and linear weights are
multiplied by fixed 0/1 masks in every forward pass, and which carries the weights
it rewinds to (its initialisation, or an early point of the dense run). The masks
stay masks: zeros in dense tensors do not make a dense CPU kernel any faster, which
``python -m core bench``-style latency measurements of the dense and ticket networks
show side by side.

:func:`magnitude_masks` is global magnitude pruning: among the weights still kept,
drop the smallest ``|w|`` across all layers until the requested fraction of all
prunable weights is zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from core.models.resnet import build_model


def prunable_names(net: nn.Module) -> list[str]:
    """Names of the conv and linear weights (biases and BatchNorm stay dense, as in the LTH papers)."""
    return [f"{name}.weight" for name, module in net.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)]


def _buffer_name(kind: str, name: str) -> str:
    return f"{kind}__{name.replace('.', '__')}"


class Ticket(nn.Module):
    """``net`` with masked prunable weights and the state to rewind to (all in the state dict)."""

    def __init__(self, arch: str):
        super().__init__()
        self.arch = arch
        self.net = build_model(arch)
        self.names = prunable_names(self.net)
        parameters = dict(self.net.named_parameters())
        for name in self.names:
            self.register_buffer(_buffer_name("mask", name), torch.ones_like(parameters[name]))
        self.rewind_keys = [key for key, value in self.net.state_dict().items() if value.is_floating_point()]
        for key in self.rewind_keys:
            self.register_buffer(_buffer_name("rewind", key), self.net.state_dict()[key].detach().clone())

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, _buffer_name("mask", name)) for name in self.names}

    @torch.no_grad()
    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            getattr(self, _buffer_name("mask", name)).copy_(mask)

    @torch.no_grad()
    def snapshot_rewind(self) -> None:
        """Remember the network's current state as the point to rewind to."""
        state = self.net.state_dict()
        for key in self.rewind_keys:
            getattr(self, _buffer_name("rewind", key)).copy_(state[key])

    @torch.no_grad()
    def rewind(self) -> None:
        """Reset the network to its rewind state (the masks stay)."""
        state = self.net.state_dict()
        for key in self.rewind_keys:
            state[key].copy_(getattr(self, _buffer_name("rewind", key)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parameters = dict(self.net.named_parameters())
        masked = {name: parameters[name] * mask for name, mask in self.masks().items()}
        return functional_call(self.net, masked, (images,), strict=False)

    @torch.no_grad()
    def sparse_network(self) -> nn.Module:
        """The plain network with the pruned weights set to zero (what a sparse deployment would ship)."""
        net = build_model(self.arch)
        net.load_state_dict(self.net.state_dict())
        parameters = dict(net.named_parameters())
        for name, mask in self.masks().items():
            parameters[name].mul_(mask)
        return net.eval()

    def counts(self) -> dict[str, float]:
        """Prunable weights, how many survive, the sparsity, and the network's surviving parameter count."""
        masks = self.masks()
        prunable = sum(m.numel() for m in masks.values())
        surviving = int(sum(m.sum().item() for m in masks.values()))
        total = sum(p.numel() for p in self.net.parameters())
        return {"prunable": prunable, "surviving_prunable": surviving, "sparsity": 1 - surviving / prunable,
                "dense_params": total, "surviving_params": total - prunable + surviving}


@torch.no_grad()
def magnitude_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning to ``sparsity`` (fraction of all prunable weights at zero).

    Weights already pruned stay pruned; among the kept ones the largest ``|w|`` over all
    layers survive (ties broken by position, so the count is exact).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    names = list(weights)
    scores = torch.cat([torch.where(masks[n].bool(), weights[n].abs(), -1.0).flatten() for n in names])
    keep = round((1 - sparsity) * scores.numel())
    if keep > int((scores >= 0).sum()):
        raise ValueError(f"cannot lower the sparsity: the source already prunes more than {sparsity:.1%}")
    flat = torch.zeros_like(scores)
    flat[torch.topk(scores, keep, sorted=False).indices] = 1.0
    return {n: chunk.view_as(weights[n]) for n, chunk in zip(names, torch.split(flat, [weights[n].numel() for n in names]), strict=True)}
