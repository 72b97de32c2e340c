"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding.

Each round is one ordinary run of method ``lth`` (the shared engine trains it with
BCE; it is resumable and shows up everywhere runs do):

- round 0 trains the dense network (``sparsity: 0``) and remembers the weights to
  rewind to: its initialisation (``rewind_epoch: 0``) or its weights after
  ``rewind_epoch`` epochs;
- round k starts from round k-1's final weights (``init_checkpoint``), prunes
  globally by magnitude to ``1 - (1 - prune_rate)^k`` sparsity (among the weights
  still kept), rewinds the survivors and retrains.

:func:`iterative_magnitude_pruning` chains the rounds up to ``target_sparsity``, and
optionally a one-shot run (the dense weights pruned straight to the target, rewound,
retrained once) for comparison. A ticket moves to another dataset by training one
run with ``init_checkpoint`` = the ticket and the same sparsity (mask kept, weights
rewound). Every run's header carries ``lth`` (round, chain, sparsity, surviving
parameters) for the accuracy-vs-sparsity curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core.config import TrainConfig
from core.methods import register_method
from core.methods.base import Method
from core.methods.options import Options, option
from core.models.loading import load_model
from core.models.ticket import Ticket
from core.pruning.magnitude import magnitude_masks


@dataclass
class LTHOptions(Options):
    sparsity: float = option(0.0, "this run's mask: the fraction of conv/linear weights at zero", low=0, high=1,
                             high_open=True, internal=True)
    rewind_epoch: int = option(0, "0: rewind to the initialisation; k: to the dense run's weights after k epochs", low=0)
    prune_rate: float = option(0.2, "fraction of the remaining weights each IMP round removes",
                               label="Pruned per round (fraction of the remaining weights)", low=0, high=1,
                               low_open=True, high_open=True)
    target_sparsity: float = option(0.8, "IMP stops at this fraction of conv/linear weights pruned", label="Target sparsity",
                                    low=0, high=1, low_open=True, high_open=True)
    chain: str = option("", "name of the IMP chain (default: the architecture and a random id)")
    round: int = option(0, "which IMP round this run is (0: the dense one)", low=0, internal=True)

    def validate(self, config: TrainConfig) -> None:
        if self.rewind_epoch and self.rewind_epoch >= max(config.epochs, 1):
            raise ValueError(f"rewind_epoch must lie in [0, epochs), got {self.rewind_epoch}")


def imp_schedule(prune_rate: float, target_sparsity: float) -> list[float]:
    """The sparsity of each IMP round after the dense one: ``1 - (1 - rate)^k``, the last capped at the target."""
    rounds = math.ceil(math.log(1 - target_sparsity) / math.log(1 - prune_rate) - 1e-9)
    return [min(target_sparsity, 1 - (1 - prune_rate) ** k) for k in range(1, rounds + 1)]


@register_method
class LTHMethod(Method):
    name = "lth"
    description = "Lottery tickets: global magnitude pruning with rewinding, round by round (MesoNet, CNN-5, ResNet-18)."
    rank = 40
    architectures = ("mesonet", "cnn5", "resnet18")
    driver = "imp"
    options_class = LTHOptions

    def check(self, config: TrainConfig) -> None:
        options = self.options
        if options.sparsity > 0 and not config.init_checkpoint:
            raise ValueError("an lth run with sparsity > 0 prunes a previous run: give its checkpoint (init_checkpoint)")

    def build(self, config: TrainConfig) -> nn.Module:

        options = self.options
        ticket = Ticket(config.arch)
        if not config.init_checkpoint:
            return ticket
        source = load_model(config.init_checkpoint)
        if not isinstance(source, Ticket) or source.arch != config.arch:
            raise ValueError(f"{config.init_checkpoint} is not an lth run of a {config.arch}: start IMP from a dense lth run")
        ticket.load_state_dict(source.state_dict())  # trained weights, masks and the rewind state
        current = ticket.counts()["sparsity"]
        if options.sparsity > current + 1e-9:
            trained = dict(ticket.net.named_parameters())
            ticket.set_masks(magnitude_masks({n: trained[n].detach() for n in ticket.names}, ticket.masks(), options.sparsity))
        ticket.rewind()
        return ticket

    def on_epoch_start(self, model: Ticket, epoch: int, config: TrainConfig) -> None:
        options = self.options
        if not config.init_checkpoint and options.rewind_epoch and epoch == options.rewind_epoch:
            model.snapshot_rewind()  # late rewinding: the dense run's weights after rewind_epoch epochs

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        return {"type": "ticket", "arch": config.arch}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = F.binary_cross_entropy_with_logits(model(images).reshape(-1).float(), labels)
        return bce, {"bce": bce.detach()}

    def header_extras(self, model: Ticket, config: TrainConfig, summary: dict) -> dict:
        options = self.options
        return {"lth": {**model.counts(), "round": options.round, "chain": options.chain, "source": config.init_checkpoint,
                        "rewind_epoch": options.rewind_epoch}}

    def epoch_summary(self, model: Ticket) -> dict:
        return {"sparsity": model.counts()["sparsity"]}


