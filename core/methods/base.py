"""The interface every training method implements, and what it declares about itself.

A method is a class: its attributes say what the CLI, the sidebar, ``reproduce`` and ``report``
need to know (architectures, teacher, options, multi-run driver, ...). One instance is made
per run (:func:`core.methods.create_method`) with its options bound and checked once; the
engine (:mod:`core.training.engine`) calls its hooks.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from core.config import TrainConfig
from core.data.images import Normalization
from core.methods.options import Options


class Method:
    """A trainable method: builds its model, defines its loss, describes its checkpoint."""

    name: str = ""
    description: str = ""
    options_class: type[Options] | None = None  # the dataclass of its ``method_options`` (None: it takes none)
    architectures: tuple[str, ...] = ()  # what the sidebar offers (first = its default; one or none: no picker)
    needs_teacher: bool = False  # it distils from a teacher checkpoint (``--teacher``)
    teacher_kind: str = "shipped ResNet-50 teacher of this dataset"  # the sidebar's teacher picker: what the default is
    driver: str | None = None  # a multi-run driver of core.training.drivers (``imp``, ``taylor-steps``): its runs chain
    starts_from: str | None = None  # what ``--init-checkpoint`` holds for it (None: it takes none)
    compared_in: tuple[str, ...] = ()  # protocols (configs/protocols.yaml) whose comparison includes it
    baseline: bool = False  # ``report`` tests the other methods against it (the papers' KDFS)
    rank: int = 100  # position in the registry (the sidebar's list, --help): lower first
    trainable: bool = True  # offered by ``train`` and the sidebar (finetune starts from a student: its own command)

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.options = self.bind(config)

    def bind(self, config: TrainConfig) -> Options | None:
        """``config.method_options`` as this method's options, each checked against its declaration."""
        if self.options_class is None:
            if config.method_options:
                raise ValueError(f"{self.name} takes no method options, got {sorted(config.method_options)}")
            return None
        return self.options_class.from_config(config)

    def resolved_options(self) -> dict:
        """Every option of the method: the given ones and the defaults."""
        return dataclasses.asdict(self.options) if self.options is not None else {}

    def options_in_effect(self) -> dict:
        """The options that change what this method does (:meth:`core.methods.options.Options.in_effect`)."""
        return self.options.in_effect(self.name) if self.options is not None else {}

    def check(self, config: TrainConfig) -> None:
        """Validate (and complete, e.g. a default teacher) ``config`` before any work is done."""

    def normalization(self, config: TrainConfig) -> Normalization | None:
        """The mean/std the run normalises its images with; None (the default): its training split's own."""
        return None

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

    def keep_probability_by_stage(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every filter's keep probability, grouped by network stage (masked students; TensorBoard histograms)."""
        return {}
