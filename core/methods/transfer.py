"""Cross-dataset transfer after fine-tuning (the Pearson paper's Table 8).

A network trained, and for a student pruned, on a *source* dataset is retrained on a *target* one: its last
block (``layer4``) and head (``fc``) only, in the source's normalisation, with AdamW and the lr divided by 10 every
5 epochs, once per lr of a grid; the run with the best target validation accuracy is kept
(:func:`kept_run`). ``python -m core transfer CKPT --data TARGET`` runs the grid, one ordinary run per lr.

Where each value comes from (:data:`TRANSFER_SETTINGS`; the authors' code is github.com/sara24h/KDFS-Pearson-Corr,
read at its first release ``183e2f4`` and at ``819ed6d``, the commit that gave ``test_330k.py`` its flags):

- the paper's text: AdamW; lr x 0.1 every 5 epochs; the best lr of a grid kept; the source normalisation; only
  the last block and the FC retrained. The authors' code agrees on each: ``test_330k.py@183e2f4`` (and
  ``test_10k``/``140k``/``190k``/``200k.py``, one per source) unfreezes the parameters named ``layer4``/``fc``,
  trains them with ``AdamW`` and ``StepLR(step_size=5, gamma=0.1)``, keeps the epoch of best validation accuracy,
  and normalises every target with the source's mean/std ("Overriding transforms to use consistent 330k
  normalization stats for all datasets").
- the authors' code alone: 10 epochs and batch 64 (``test_330k.py@819ed6d``: ``--f_epochs 10``,
  ``--train_batch_size 64``); weight decay 1e-4 (``test_330k.py@183e2f4``; the other sources' scripts differ:
  1e-2 in ``test_10k.py``, 1e-3 in ``test_190k.py``, a flag without default in ``test_140k.py``/``test_200k.py``);
  the frozen layers' BatchNorm statistics re-estimated on the target (the script calls ``student.train()`` on the
  whole network: ``bn_statistics: target``).
- ours: the lr grid 1e-5, 1e-4, 1e-3 (the paper gives no values; the code takes one lr per call, ``--f_lr``,
  default 1e-4 at ``819ed6d``: the grid is that value and a decade either side); the image size, augmentation
  and seed of the source run (the network was trained at that size; the code's own transfer augmentation,
  flip, rotation 15 and colour jitter 0.2, is close to the ``paper`` augmentation).

The ``transfer`` header records the source checkpoint, its dataset and method, the target, the normalisation and
the grid, so ``report`` lays the runs out as source x target (its ``transfer`` table) and keeps each grid's best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from core.checkpoint import read_header, resolve_checkpoint
from core.config import TrainConfig
from core.data.images import Normalization
from core.methods import register_method
from core.methods.base import Method
from core.methods.options import Options, option
from core.models.loading import load_model
from core.models.resnet import set_trainable
from core.pruning.surgery import compact_of

AUTHORS = "github.com/sara24h/KDFS-Pearson-Corr"
PAPER_TEXT = "the paper's text (Table 8: AdamW, lr x 0.1 every 5 epochs, best lr kept, source normalisation, last block + FC)"


@dataclass(frozen=True)
class Setting:
    """One value of the published transfer, with where it comes from: ``published`` (the paper's text),
    ``author-code`` (the authors' released code, file@commit) or ``ours`` (neither gives it; ``ref`` says why)."""

    value: Any
    source: str
    ref: str

    def record(self) -> dict:
        return {"value": self.value, "source": self.source, "ref": self.ref}


# The TrainConfig values of the published transfer, where neither a flag nor --config sets them.
TRANSFER_SETTINGS: dict[str, Setting] = {
    "optimizer": Setting("adamw", "published", f"{PAPER_TEXT}; test_330k.py@183e2f4: torch.optim.AdamW"),
    "scheduler": Setting("step", "published", f"{PAPER_TEXT}; test_330k.py@183e2f4: StepLR(step_size=5, gamma=0.1)"),
    "step_size": Setting(5, "published", f"{PAPER_TEXT}; the engine's step scheduler divides by 10 (gamma 0.1)"),
    "trainable": Setting("layer4", "published", f"{PAPER_TEXT}; test_330k.py@183e2f4 unfreezes 'layer4' and 'fc'"),
    "epochs": Setting(10, "author-code", "test_330k.py@819ed6d: --f_epochs default 10 (the paper gives none)"),
    "batch_size": Setting(64, "author-code", "test_330k.py@819ed6d: --train_batch_size default 64"),
    "weight_decay": Setting(1e-4, "author-code", "test_330k.py@183e2f4: AdamW weight_decay=1e-4 (the paper gives none; "
                                                 "test_10k.py 1e-2, test_190k.py 1e-3)"),
}
# The lrs run when --lr-grid and --lr say nothing.
LR_GRID = Setting((1e-5, 1e-4, 1e-3), "ours", "the paper keeps the best lr of a grid without giving it; the authors' "
                                              "code runs one lr per call (test_330k.py@819ed6d: --f_lr default 1e-4): "
                                              "that value and a decade either side")
NORMALIZATION = Setting("source", "published", f"{PAPER_TEXT}; test_330k.py@183e2f4 normalises every target with "
                                               "the 330k set's mean/std")
BN_STATISTICS = ("target", "source")
BN_DEFAULT = Setting("target", "author-code", "test_330k.py@183e2f4 calls student.train() on the whole network, so the "
                                              "frozen layers' BatchNorms re-estimate their statistics on the target")


@dataclass
class TransferOptions(Options):
    bn_statistics: str = option(
        BN_DEFAULT.value, "the BatchNorm statistics of the frozen layers: target = re-estimated on the target's training "
                  "images, as the authors' code does (it trains the whole network in train mode); source = kept as "
                  "trained on the source (nothing below layer4 changes)", choices=BN_STATISTICS)


# the documented default of each option (its source and reference)
OPTION_DEFAULTS = {"bn_statistics": BN_DEFAULT}


def settings_record(config: TrainConfig, explicit: set[str], grid: Sequence[float], grid_given: bool) -> dict:
    """Each value of a transfer as ``{value, source, ref}``: ``published`` (the paper's text), ``author-code`` (the
    authors' released code, file@commit), ``ours`` (with the reason), or ``given`` (``explicit``: the keys the command
    line set, by a flag or its ``--config`` file)."""
    given = lambda value: {"value": value, "source": "given", "ref": "this command line"}  # noqa: E731
    settings = {key: given(getattr(config, key)) if key in explicit else setting.record()
                for key, setting in TRANSFER_SETTINGS.items()}
    settings["lr_grid"] = given(list(grid)) if grid_given else LR_GRID.record()
    settings["normalization"] = NORMALIZATION.record()
    for name, setting in OPTION_DEFAULTS.items():
        settings[name] = given(config.method_options[name]) if name in config.method_options else setting.record()
    return settings


def parse_lr_grid(text: str) -> list[float]:
    """``"1e-5,1e-4,1e-3"`` -> the distinct learning rates, in the order given; each a number > 0."""
    rates: list[float] = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            rate = float(item)
        except ValueError:
            raise ValueError(f"lr grid {text!r}: {item.strip()!r} is not a number (write e.g. 1e-5,1e-4,1e-3)") from None
        if not rate > 0 or rate != rate or rate == float("inf"):
            raise ValueError(f"lr grid {text!r}: every lr must be a finite number > 0, got {item.strip()}")
        if rate in rates:
            raise ValueError(f"lr grid {text!r}: {item.strip()} is given twice")
        rates.append(rate)
    if not rates:
        raise ValueError(f"lr grid {text!r}: give at least one learning rate (e.g. 1e-5,1e-4,1e-3)")
    return rates


def load_source(path: str) -> tuple[nn.Module, dict]:
    """The deployable network of a source checkpoint (a masked student made compact) and its header; refused in one
    line unless it has a ``layer4`` and an ``fc`` to retrain (a ResNet teacher, a KDFS/Pearson/PDD student)."""

    model = load_model(path)
    kind = model.header.get("model", {}).get("type")
    if kind not in ("resnet", "masked-resnet", "compact-resnet"):
        raise ValueError(f"{path} holds a {kind}; transfer takes a ResNet teacher or a masked/compact student")
    network, header = compact_of(model)
    if not (isinstance(getattr(network, "layer4", None), nn.Module) and isinstance(getattr(network, "fc", None), nn.Module)):
        raise ValueError(f"{path} is a {header['model'].get('arch')} network without layer4 and fc: transfer retrains "
                         "a ResNet's last block and head")
    return network, header


def source_dataset(header: dict) -> str:
    """The dataset a checkpoint was trained on, as its header says."""
    return (header.get("config") or {}).get("data") or header.get("dataset") or "?"


class Transferred(nn.Module):
    """The source network being retrained; with ``bn_statistics: source`` the BatchNorms whose weights are frozen
    stay in eval mode, so their running statistics are the source's."""

    def __init__(self, network: nn.Module, bn_statistics: str):
        super().__init__()
        self.network = network
        self.bn_statistics = bn_statistics

    def train(self, mode: bool = True) -> Transferred:
        super().train(mode)
        if mode and self.bn_statistics == "source":
            for module in self.network.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                        parameter.requires_grad for parameter in module.parameters()):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


@register_method
class TransferMethod(Method):
    name = "transfer"
    description = ("Cross-dataset transfer: a teacher or compact student's last block and head retrained on another "
                   "dataset, in the source's normalisation (the Pearson paper's Table 8).")
    rank = 61
    trainable = False
    options_class = TransferOptions

    def check(self, config: TrainConfig) -> None:
        if not config.init_checkpoint:
            raise ValueError("transfer needs the source checkpoint (python -m core transfer CKPT --data TARGET)")
        network, header = load_source(config.init_checkpoint)
        if header["model"]["arch"] != config.arch:
            raise ValueError(f"{config.init_checkpoint} is a {header['model']['arch']} network, but the config says "
                             f"{config.arch}")

    def normalization(self, config: TrainConfig) -> Normalization:

        stored = read_header(resolve_checkpoint(config.init_checkpoint))["normalization"]
        return Normalization(tuple(stored["mean"]), tuple(stored["std"]))

    def build(self, config: TrainConfig) -> nn.Module:

        network, header = load_source(config.init_checkpoint)
        set_trainable(network, config.trainable)
        network.source_header = header
        return Transferred(network, self.options.bn_statistics)

    def deployable(self, model: Transferred) -> nn.Module:
        return model.network

    def model_spec(self, config: TrainConfig, model: Transferred) -> dict:
        return dict(model.network.source_header["model"])

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        return bce, {"bce": bce.detach()}

    def header_extras(self, model: Transferred, config: TrainConfig, summary: dict) -> dict:
        source = model.network.source_header
        return {"pruning": source.get("pruning"), "teacher": source.get("teacher"),
                "transfer": {"source": str(config.init_checkpoint), "source_dataset": source_dataset(source),
                             "source_method": source.get("student_method") or source.get("method"),
                             "target": config.data, "normalization": NORMALIZATION.value,
                             "bn_statistics": self.options.bn_statistics, "trainable": config.trainable,
                             "lr": config.lr}}


def validation_accuracy(header: dict) -> float:
    """The best validation accuracy a run reached: its best checkpoint's ``metrics``."""
    value = (header.get("metrics") or {}).get("val_accuracy")
    return float("-inf") if value is None else float(value)


def kept_run(headers: Sequence[dict]) -> int:
    """Which run of an lr grid is kept: the best target validation accuracy (the paper); on a tie, the first in the
    grid's order."""
    if not headers:
        raise ValueError("an lr grid without runs keeps nothing")
    scores = [validation_accuracy(header) for header in headers]
    return scores.index(max(scores))
