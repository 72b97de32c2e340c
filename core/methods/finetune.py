"""Fine-tuning: the compact network of a student checkpoint, trained further at a small lr.

The paper fine-tunes the pruned KDFS/Pearson networks of three datasets after the
search (Adam at lr 8e-5 on rvf10k, 2e-5 on GRAVEX-200K, 4e-5 on the 330k set; see the
dataset presets) and PDD's everywhere (SGD, lr 0.01, momentum 0.9). The start is any
student checkpoint: a masked student is first made compact (:mod:`core.pruning.surgery`),
a compact one is taken as it is.

Objective: ``BCE``, as the authors' fine-tuning code (the default, ``lambda_kd: 0``), or
``BCE + lambda_kd * L_KD`` with the student's teacher (the ``--teacher`` flag, else the
teacher named in the student's checkpoint) and the same binary KD as the search
(:func:`core.methods.distillation.kd_loss`), as the embedded presets do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from core.checkpoint import CheckpointError, resolve_checkpoint
from core.config import TrainConfig
from core.methods import register_method
from core.methods.base import Method
from core.methods.distillation import kd_loss
from core.methods.options import Options, option
from core.models.loading import load_model
from core.pruning.surgery import compact_of
from core.runs import Run

log = logging.getLogger(__name__)


@dataclass
class FinetuneOptions(Options):
    lambda_kd: float = option(0.0, "weight of KD from the student's teacher (the published fine-tune: 0, BCE only)", low=0)
    kd_temperature: float = option(3.0, "T of the KD loss", low=0, low_open=True)

    def in_effect(self, method: str) -> dict:
        shown = super().in_effect(method)
        if not self.lambda_kd:
            shown.pop("kd_temperature")  # BCE only: no KD term to scale
        return shown


def load_compact(path: str) -> tuple[nn.Module, dict]:

    model = load_model(path)
    if model.header["model"]["type"] not in ("masked-resnet", "compact-resnet"):
        raise ValueError(f"{path} holds a {model.header['model']['type']}; finetune takes a student checkpoint "
                         "(masked or compact), e.g. the run directory of a kdfs or pearson run")
    return compact_of(model)


class Finetuned(nn.Module):
    """The compact student, plus (outside its state) the frozen teacher it distils from."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: FinetuneOptions):
        super().__init__()
        self.student = student
        self.options = options
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for teacher in self._teacher:
            teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> Finetuned:
        super().train(mode)
        for teacher in self._teacher:
            teacher.eval()
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        if not self._teacher or self.options.lambda_kd == 0:
            return bce, {"bce": bce.detach()}
        with torch.no_grad():
            teacher_logits = self._teacher[0](images).reshape(-1)
        kd = kd_loss(logits, teacher_logits, self.options.kd_temperature)
        return bce + self.options.lambda_kd * kd, {"bce": bce.detach(), "kd": kd.detach()}


@register_method
class FinetuneMethod(Method):
    name = "finetune"
    description = "Fine-tune the compact (physically pruned) network of a student: BCE (+ KD with lambda_kd > 0), small lr."
    rank = 60
    trainable = False
    options_class = FinetuneOptions

    def check(self, config: TrainConfig) -> None:
        if not config.init_checkpoint:
            raise ValueError("finetune needs the student checkpoint to start from (python -m core finetune CKPT ...)")
        options = self.options
        _, header = load_compact(config.init_checkpoint)
        if options.lambda_kd and config.teacher is None and header.get("teacher"):
            try:
                config.teacher = str(resolve_checkpoint(header["teacher"]))
            except CheckpointError:
                log.warning("the student's teacher %s is gone; fine-tuning without KD", header["teacher"])

    def build(self, config: TrainConfig) -> nn.Module:

        student, header = load_compact(config.init_checkpoint)
        if student.arch != config.arch:
            raise ValueError(f"{config.init_checkpoint} is a {student.arch} student, but the config says {config.arch}")
        student.source_header = header
        student.mask_history = mask_history(config.init_checkpoint)
        options = self.options
        teacher = load_model(config.teacher) if config.teacher and options.lambda_kd else None
        return Finetuned(student, teacher, options)

    def deployable(self, model: Finetuned) -> nn.Module:
        return model.student

    def model_spec(self, config: TrainConfig, model: Finetuned) -> dict:
        return model.student.spec()

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(images, labels)

    def header_extras(self, model: Finetuned, config: TrainConfig, summary: dict) -> dict:
        source = getattr(model.student, "source_header", {})
        return {"finetuned_from": config.init_checkpoint, "pruning": source.get("pruning"),
                "teacher": config.teacher, "student_method": source.get("method"),
                "mask_history": getattr(model.student, "mask_history", [])}


HISTORY_KEYS = ("epoch", "temperature", "active_filters", "keep_probability", "active_fraction", "macs_reduction",
                "params_reduction", "val_accuracy", "val_auc")


def mask_history(checkpoint: str) -> list[dict]:
    """The search run's per-epoch mask records, when the checkpoint lives in a run directory (for the dashboard)."""

    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "metrics.jsonl").is_file():
        return []
    return [{k: record[k] for k in HISTORY_KEYS if k in record} for record in Run(run_dir).metrics("epoch")
            if "active_filters" in record]
