"""The interface every training method implements."""

from __future__ import annotations

import torch
from torch import nn

from core.config import TrainConfig


class Method:
    """A trainable method: builds its model, defines its loss, describes its checkpoint."""

    name: str = ""
    description: str = ""
    options_class: type | None = None  # the dataclass of its ``method_options`` (None: it takes none)

    def resolved_options(self, config: TrainConfig) -> dict:
        """Every option the method will use for ``config``: the given ones and the defaults, validated."""
        if self.options_class is None:
            if config.method_options:
                raise ValueError(f"{self.name} takes no method options, got {sorted(config.method_options)}")
            return {}
        import dataclasses

        return dataclasses.asdict(self.options_class.from_config(config))

    def check(self, config: TrainConfig) -> None:
        """Validate (and complete, e.g. a default teacher) ``config`` before any work is done."""

    def build(self, config: TrainConfig) -> nn.Module:
        """The model to train (on CPU; the engine moves it)."""
        raise NotImplementedError

    def deployable(self, model: nn.Module) -> nn.Module:
        """The part of the trained module that checkpoints hold and evaluation runs (e.g. a student without decoders)."""
        return model

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        """The ``model`` entry of the checkpoint header, enough for ``build_from_spec``."""
        raise NotImplementedError

    def parameter_groups(self, model: nn.Module, config: TrainConfig) -> list[dict]:
        """Optimiser parameter groups (e.g. mask logits apart, without weight decay)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def on_epoch_start(self, model: nn.Module, epoch: int, config: TrainConfig) -> None:
        """Per-epoch schedules (e.g. a Gumbel temperature)."""

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, named detached loss terms; the engine reads them only on log steps)."""
        raise NotImplementedError

    def predict_logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Single logits (> 0 means fake) of the deployable model, for evaluation."""
        return model(images).reshape(-1)

    def epoch_summary(self, model: nn.Module) -> dict:
        """Extra per-epoch record fields (e.g. the mask history)."""
        return {}

    def header_extras(self, model: nn.Module, config: TrainConfig, summary: dict) -> dict:
        """Extra checkpoint-header fields, given this epoch's summary."""
        return {}


def parse_options(options_class, config: TrainConfig):
    """``config.method_options`` as an instance of the method's options dataclass; unknown keys are an error."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(options_class)}
    unknown = set(config.method_options) - known
    if unknown:
        raise ValueError(f"unknown {config.method} options {sorted(unknown)}; known: {sorted(known)}")
    return options_class(**config.method_options)
