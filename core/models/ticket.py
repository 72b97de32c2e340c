"""A lottery-ticket network: a dense registry network whose conv and linear weights are multiplied by
fixed 0/1 masks (``core.pruning.magnitude`` chooses them), with the weights it rewinds to."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from core.models.registry import build_model


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
