"""Taylor pruning: global (or local) structured channel pruning by first-order Taylor importance, with KD fine-tuning.

One run is one pruning step plus its fine-tune. ``build`` loads the starting network
(``init_checkpoint``: a dense teacher-method run, e.g. ``efficientnet_lite0``, or the
previous step's taylor run), accumulates ``dL/dw`` over ``taylor_batches`` training
batches, removes this step's channels with Torch-Pruning
(:func:`core.pruning.structured.taylor_prune`), and the shared engine then fine-tunes
the smaller network with

``L = alpha * L_KD(z_s, z_t; T) + (1 - alpha) * BCE(z_s, y)``

against a frozen teacher (``--teacher``, e.g. an ``efficientnet_b0`` run; no default:
the shipped teachers are ResNet-50s). ``L_KD`` is the binary KD of
:func:`core.methods.distillation.kd_loss`.

The schedule removes ``prune_ratio`` of the dense network's prunable channels in
``steps`` equal steps (``steps: 1`` is one-shot): after step ``k`` a fraction
``k R / n`` is gone, so step ``k`` removes ``r_k = (R/n) / (1 - (k-1) R/n)`` of the
channels it starts with. :func:`prune_iteratively` chains the ``steps`` runs, each an
ordinary resumable run directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from core.checkpoint import read_header
from core.config import TrainConfig
from core.data.datasets import resolve_dataset, subsample
from core.data.images import ImageDataset, collate_skipping, dataset_statistics, eval_transform
from core.io import cache_dir
from core.methods import register_method
from core.methods.base import Method
from core.methods.distillation import default_teacher, kd_loss, load_teacher
from core.methods.finetune import Finetuned
from core.methods.options import Options, option
from core.models import build_model
from core.models.loading import load_model
from core.models.shapes import layer_shapes
from core.pruning.flops import profile_model
from core.pruning.structured import prunable_channels, taylor_prune

log = logging.getLogger(__name__)

STARTING_TYPES = ("resnet", "pruned-net")  # a dense registry network, or an earlier pruning step
DEFAULT_START, DEFAULT_TEACHER = "efficientnet_lite0", "efficientnet_b0"  # shipped for the embedded benchmark


@dataclass
class TaylorOptions(Options):
    alpha: float = option(0.25, "weight of the KD (soft-label) loss; BCE gets 1 - alpha (the NTU report's best: 0.25)",
                          label="α (weight of the KD loss; BCE gets 1 − α)", low=0, high=1)
    kd_temperature: float = option(1.0, "T of the KD loss; 1 is the NTU report's untempered alpha * BCE(p_s, p_t) "
                                        "(the embedded presets: 3)", low=0, low_open=True)
    prune_ratio: float = option(0.5, "fraction of the dense network's prunable channels the schedule removes (R)",
                                label="Prune ratio (fraction of the channels removed)", low=0, high=1, low_open=True,
                                high_open=True)
    steps: int = option(5, "pruning steps, each a run with its fine-tune (n; --one-shot: 1)",
                        label="Pruning steps (each fine-tuned)", low=1)
    step: int = option(1, "which step this run is (k, 1-based; the schedule sets it)", low=1, internal=True)
    global_pruning: bool = option(True, "rank all layers' channels together (the flag: every layer loses the same fraction)",
                                  label="Local (every layer loses the same fraction)", switch="local")
    taylor_batches: int = option(8, "training batches whose loss gradient gives the Taylor importance", low=1)
    max_layer_ratio: float = option(0.9, "no coupled group loses more than this fraction of its channels in one step",
                                    low=0, high=1, low_open=True, high_open=True, internal=True)

    def validate(self, config: TrainConfig) -> None:
        if self.step > self.steps:
            raise ValueError(f"step must be in 1..steps ({self.steps}); got {self.step}")

    @property
    def step_ratio(self) -> float:
        """``r_k = (R/n) / (1 - (k-1) R/n)``: this step's share of the channels it starts with."""
        per_step = self.prune_ratio / self.steps
        return per_step / (1 - (self.step - 1) * per_step)


class PrunedStudent(Finetuned):
    """The pruned network plus (outside its state) the frozen teacher; ``forward`` gives the fine-tuning loss."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        alpha = self.options.alpha
        if alpha == 0:
            return bce, {"bce": bce.detach()}
        with torch.no_grad():
            teacher_logits = self._teacher[0](images).reshape(-1)
        kd = kd_loss(logits, teacher_logits, self.options.kd_temperature)
        return alpha * kd + (1 - alpha) * bce, {"bce": bce.detach(), "kd": kd.detach()}


def importance_batches(config: TrainConfig, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` shuffled training batches, eval-transformed (no augmentation), seeded from ``config.seed``."""


    train_split = resolve_dataset(config.data, config.data_root).split("train")
    normalization = dataset_statistics(train_split, config.image_size, cache_dir(), False)
    images = ImageDataset(subsample(train_split, config.max_train_samples), eval_transform(config.image_size, normalization))
    loader = DataLoader(images, batch_size=config.batch_size, shuffle=True, collate_fn=collate_skipping,
                        generator=torch.Generator().manual_seed(config.seed))
    return [(batch["images"], batch["labels"]) for batch in islice(loader, count) if batch["images"] is not None]


@register_method
class TaylorMethod(Method):
    name = "taylor"
    description = "Structured channel pruning by first-order Taylor importance (Torch-Pruning), one step per run, KD fine-tune."
    rank = 50
    needs_teacher = True
    teacher_kind = "shipped EfficientNet-B0 of this dataset"
    driver = "taylor-steps"
    starts_from = "the network to prune, a dense teacher-method run (default: the shipped EfficientNet-Lite0 of this dataset)"
    options_class = TaylorOptions

    def check(self, config: TrainConfig) -> None:

        options = self.options
        # defaults: the shipped dense Lite0 and B0 teacher of this dataset, when there are
        if not config.init_checkpoint:
            config.init_checkpoint = default_teacher(config.data, DEFAULT_START)
            if config.init_checkpoint:
                log.info("taylor: pruning the shipped %s %s", DEFAULT_START, config.init_checkpoint)
        if config.teacher is None and options.alpha > 0:
            config.teacher = default_teacher(config.data, DEFAULT_TEACHER)
            if config.teacher:
                log.info("taylor: distilling from the shipped %s %s", DEFAULT_TEACHER, config.teacher)
        if not config.init_checkpoint:
            raise ValueError(f"taylor prunes a trained network, and none is shipped for {config.data}: pass --init-checkpoint "
                             "RUN (a dense teacher-method run, e.g. python -m core train --method teacher --arch "
                             "efficientnet_lite0 ..., or the previous taylor step)")
        spec = read_header(config.init_checkpoint)["model"]
        if spec.get("type") not in STARTING_TYPES:
            raise ValueError(f"{config.init_checkpoint} holds a {spec.get('type')}; taylor starts from a dense "
                             "teacher-method network or a taylor run")
        if config.arch != spec["arch"]:
            log.info("taylor: pruning a %s (the starting checkpoint's architecture)", spec["arch"])
            config.arch = spec["arch"]
        if options.alpha > 0 and config.teacher is None:
            raise ValueError("taylor with alpha > 0 distils from a teacher: pass --teacher RUN (e.g. an efficientnet_b0 "
                             "teacher run: python -m core train --method teacher --arch efficientnet_b0 ...); "
                             f"none is shipped for {config.data}")

    def build(self, config: TrainConfig) -> PrunedStudent:

        options = self.options
        student = load_model(config.init_checkpoint)
        teacher = load_teacher(config, same_arch=False) if options.alpha > 0 else None
        model = PrunedStudent(student, teacher, options)
        batches = importance_batches(config, options.taylor_batches)
        taylor_prune(student, batches, lambda x, y: model(x, y)[0], options.step_ratio, options.global_pruning,
                     options.max_layer_ratio)
        dense, example = build_model(config.arch), batches[0][0][:1]
        dense_cost, compact_cost = profile_model(dense, config.image_size), profile_model(student, config.image_size)
        model.record = {
            "prune_ratio": 1 - compact_cost["params"] / dense_cost["params"],  # achieved: the params removed
            "channel_ratio": 1 - prunable_channels(student, example) / prunable_channels(dense, example),
            "step_ratio": options.step_ratio, "target_channel_ratio": options.prune_ratio * options.step / options.steps,
            "dense_params": dense_cost["params"], "dense_macs": dense_cost["macs"],
            "compact_params": compact_cost["params"], "compact_macs": compact_cost["macs"],
            "params_reduction": 1 - compact_cost["params"] / dense_cost["params"],
            "macs_reduction": 1 - compact_cost["macs"] / dense_cost["macs"],
            "step": options.step, "steps": options.steps, "global": options.global_pruning, "alpha": options.alpha,
        }
        return model

    def deployable(self, model: PrunedStudent) -> nn.Module:
        return model.student

    def model_spec(self, config: TrainConfig, model: PrunedStudent) -> dict:

        return {"type": "pruned-net", "arch": config.arch, "shapes": layer_shapes(model.student)}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(images, labels)

    def header_extras(self, model: PrunedStudent, config: TrainConfig, summary: dict) -> dict:
        # not under "pruning": that key means per-layer keep masks (the Pruning and Feature maps pages)
        return {"teacher": config.teacher, "pruned_from": config.init_checkpoint, "structured_pruning": model.record}


