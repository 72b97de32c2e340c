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
from core.methods.base import Method, parse_options
from core.models.ticket import Ticket
from core.pruning.magnitude import magnitude_masks


@dataclass
class LTHOptions:
    sparsity: float = 0.0  # of this run's mask: the fraction of conv/linear weights at zero
    rewind_epoch: int = 0  # 0: rewind to the initialisation; k: to the dense run's weights after k epochs
    prune_rate: float = 0.2  # IMP: the fraction of the remaining weights each round removes
    target_sparsity: float = 0.8  # IMP: stop at this sparsity
    chain: str = ""  # the IMP (or one-shot) sequence this run belongs to
    round: int = 0

    @classmethod
    def from_config(cls, config: TrainConfig) -> LTHOptions:
        options = parse_options(cls, config)
        if not (0 <= options.sparsity < 1 and 0 < options.prune_rate < 1 and 0 < options.target_sparsity < 1):
            raise ValueError("sparsity must lie in [0, 1), prune_rate and target_sparsity in (0, 1)")
        if options.rewind_epoch < 0 or options.rewind_epoch >= max(config.epochs, 1) and options.rewind_epoch:
            raise ValueError(f"rewind_epoch must lie in [0, epochs), got {options.rewind_epoch}")
        return options


def imp_schedule(prune_rate: float, target_sparsity: float) -> list[float]:
    """The sparsity of each IMP round after the dense one: ``1 - (1 - rate)^k``, the last capped at the target."""
    rounds = math.ceil(math.log(1 - target_sparsity) / math.log(1 - prune_rate) - 1e-9)
    return [min(target_sparsity, 1 - (1 - prune_rate) ** k) for k in range(1, rounds + 1)]


class LTHMethod(Method):
    name = "lth"
    description = "Lottery tickets: global magnitude pruning with rewinding, round by round (MesoNet, CNN-5, ResNet-18)."
    options_class = LTHOptions

    def check(self, config: TrainConfig) -> None:
        options = LTHOptions.from_config(config)
        if options.sparsity > 0 and not config.init_checkpoint:
            raise ValueError("an lth run with sparsity > 0 prunes a previous run: give its checkpoint (init_checkpoint)")

    def build(self, config: TrainConfig) -> nn.Module:
        from core.models.loading import load_model

        options = LTHOptions.from_config(config)
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
        options = LTHOptions.from_config(config)
        if not config.init_checkpoint and options.rewind_epoch and epoch == options.rewind_epoch:
            model.snapshot_rewind()  # late rewinding: the dense run's weights after rewind_epoch epochs

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        return {"type": "ticket", "arch": config.arch}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = F.binary_cross_entropy_with_logits(model(images).reshape(-1).float(), labels)
        return bce, {"bce": bce.detach()}

    def header_extras(self, model: Ticket, config: TrainConfig, summary: dict) -> dict:
        options = LTHOptions.from_config(config)
        return {"lth": {**model.counts(), "round": options.round, "chain": options.chain, "source": config.init_checkpoint,
                        "rewind_epoch": options.rewind_epoch}}

    def epoch_summary(self, model: Ticket) -> dict:
        return {"sparsity": model.counts()["sparsity"]}


