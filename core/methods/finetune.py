"""Fine-tuning: the compact network of a student checkpoint, trained further at a small lr.

The paper fine-tunes the pruned network after the search (lr 8e-5, 2e-5 or 4e-5 with
Adam, depending on the dataset; see the dataset presets). The start is any student
checkpoint: a masked student is first made compact (:mod:`core.pruning.surgery`), a
compact one is taken as it is. The objective is BCE on the hard labels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.methods.base import Method
from core.training.config import TrainConfig


def load_compact(path: str) -> tuple[nn.Module, dict]:
    import core
    from core.pruning.export import compact_of

    model = core.load_model(path)
    if model.header["model"]["type"] not in ("masked-resnet", "compact-resnet"):
        raise ValueError(f"{path} holds a {model.header['model']['type']}; finetune takes a student checkpoint "
                         "(masked or compact), e.g. the run directory of a kdfs or pearson run")
    return compact_of(model)


class FinetuneMethod(Method):
    name = "finetune"
    description = "Fine-tune the compact (physically pruned) network of a KDFS/Pearson student with BCE at a small lr."

    def check(self, config: TrainConfig) -> None:
        if not config.init_checkpoint:
            raise ValueError("finetune needs the student checkpoint to start from (python -m core finetune CKPT ...)")
        load_compact(config.init_checkpoint)

    def build(self, config: TrainConfig) -> nn.Module:
        model, header = load_compact(config.init_checkpoint)
        if model.arch != config.arch:
            raise ValueError(f"{config.init_checkpoint} is a {model.arch} student, but the config says {config.arch}")
        model.source_header = header
        return model.train()

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        return {"type": "compact-resnet", "arch": model.arch, "active_filters": list(model.active_filters)}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = F.binary_cross_entropy_with_logits(model(images).reshape(-1).float(), labels)
        return bce, {"bce": bce.detach()}

    def header_extras(self, model: nn.Module, config: TrainConfig, summary: dict) -> dict:
        source = getattr(model, "source_header", {})
        return {"finetuned_from": config.init_checkpoint, "pruning": source.get("pruning"),
                "teacher": source.get("teacher"), "student_method": source.get("method")}
