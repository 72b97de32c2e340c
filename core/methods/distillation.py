"""The masked-student distillation shared by KDFS and Pearson.

``L = BCE(z_s, y) + lambda_kd * L_KD + lambda_rl * L_RL + lambda_prune * L_prune``

- ``L_KD = s(T) * (BCE(sigmoid(z_s / T), q) - H(q))`` with ``q = sigmoid(z_t / T)``: binary KD
  with temperature ``T``, as the Pearson authors' code computes it (``s = 1``,
  ``kd_scale: none``) or with Hinton's ``s = T^2`` (``kd_scale: t2``, the embedded presets).
  Subtracting the target's entropy ``H(q)`` (a constant) leaves the gradient of the BCE
  unchanged and makes the term the Bernoulli KL, 0 at a perfect match, so the logged value
  reads as a distance.
- ``L_RL``: each stage's output is compared with the teacher's by the KDFS authors'
  distance, ``mean((a(f_s) - a(f_t))^2)`` with ``a(f) = normalize_L2(mean_c f^2)`` the
  per-image spatial attention map (``feature_distance: attention``), or by plain
  ``mean((f_s - f_t)^2)`` (``feature_distance: mse``), and averaged over the 4 stages as
  the KDFS code does (``feature_stages: mean``; ``sum`` adds them, 4x the weight).
  ``feature_decoders: true`` first maps each student stage through a learnable 1x1 conv
  decoder to the teacher's width (the KDFS code has none: the attention map needs no
  channel match; mse between different widths does).
- ``L_prune`` is the method's: a MACs target (KDFS) or filter correlation (Pearson).

The trained module is a :class:`Distiller` (student + decoders); the frozen
teacher rides along outside its parameters and state dict, so it is neither
trained, synchronised by DDP, nor written into the trainer state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core.checkpoint import SHIPPED_DIR, CheckpointError, read_header
from core.config import TrainConfig
from core.methods.base import Method
from core.methods.options import Options, option
from core.models.loading import load_model
from core.models.masked import RESIDUAL_MASKS, MaskedResNet
from core.models.resnet import fold_batch_norms, forward_features, stages
from core.pruning.flops import MaskedCost, profile_model
from core.pruning.surgery import filter_record

log = logging.getLogger(__name__)

FEATURE_STAGES = ("mean", "sum")
KD_SCALES = ("none", "t2")
# Pearson's redundancy scores: "paper" = the equations (rho divided by W-1); "author-code" = the published
# code's Zn Zn^T without the 1/(W-1), i.e. (W-1)^2 x the paper's scores per layer (core.methods.pearson)
CORRELATION_NORMALIZATIONS = ("author-code", "paper")
GUMBEL = ("kdfs", "pearson")  # the students with Gumbel masks and feature reconstruction (PDD has neither)


@dataclass
class StudentOptions(Options):
    """The hyperparameters of the papers' tables (``method_options`` in a TrainConfig)."""

    kd_temperature: float = option(3.0, "T of the KD loss", label="T (KD temperature)", low=0, low_open=True)
    kd_scale: str = option("none", "none (the Pearson authors' code: no T^2 factor) or t2 (Hinton's T^2 factor)",
                           choices=KD_SCALES)
    tau_start: float = option(2.0, "Gumbel temperature at the start (tau_0)", label="τ0 (Gumbel start)", low=0, low_open=True,
                              methods=GUMBEL)
    tau_end: float = option(0.2, "Gumbel temperature at the last epoch (tau_E)", label="τE (Gumbel end)", low=0, low_open=True,
                            methods=GUMBEL)
    lambda_kd: float = option(1.0, "weight of the KD loss (lambda_1)", label="λ1 (KD)", low=0)
    lambda_rl: float = option(1.0, "weight of the feature-reconstruction loss (lambda_2)", label="λ2 (feature reconstruction)",
                              low=0, methods=GUMBEL)
    lambda_prune: float = option(0.5, "weight of the pruning loss (lambda_3)", label="λ3 (pruning)", low=0)
    target_rate: float = option(0.8, "KDFS: fraction of the teacher's MACs to remove (e.g. 0.8)",
                                label="Target rate (fraction of MACs removed)", low=0, high=1, high_open=True,
                                methods=("kdfs",))
    student_init: str = option("teacher", "teacher (start from the teacher's weights) or scratch", choices=("teacher", "scratch"))
    mask_init: str = option("kaiming", "kaiming (the papers': about half the filters start dropped) or keep (all start kept)",
                            choices=("kaiming", "keep"), methods=GUMBEL)
    keep_margin: float = option(3.0, "mask_init keep: the starting keep-minus-drop logit (Gumbel keeps a filter w.p. "
                                     "sigmoid(margin))", methods=GUMBEL)
    feature_distance: str = option("attention", "attention (KDFS's) or mse", choices=("attention", "mse"), methods=GUMBEL)
    feature_stages: str = option("mean", "mean (the KDFS code: L_RL averaged over the 4 stages) or sum", choices=FEATURE_STAGES,
                                 methods=GUMBEL)
    feature_decoders: bool = option(False, "true: a learnable 1x1 conv per stage before the distance (the KDFS code has none)",
                                    methods=GUMBEL)
    sampler_lr: float | None = option(None, "learning rate of the mask logits (default: --lr)", low=0, low_open=True)
    sampler_weight_decay: float | None = option(0.0, "weight decay of the mask parameters (null: the weights'; KDFS code: 0)",
                                                low=0)
    correlation_weight_gradient: bool = option(True, "pearson: let the correlation loss move the weights too "
                                                     "(the flag turns it off)", switch="no-correlation-weight-gradient",
                                                methods=("pearson",))
    correlation_normalization: str = option("author-code", "pearson: author-code (the published code's (W-1)^2 scale) or "
                                                           "paper (the equations)", choices=CORRELATION_NORMALIZATIONS,
                                           methods=("pearson",))
    score_every: int = option(1, "pearson: recompute the redundancy scores every N steps "
                                 "(needs --no-correlation-weight-gradient)", low=1, methods=("pearson",))
    residual_mask: str = option("block", "block (the papers': a mask per conv of each block; the residual stream keeps the "
                                         "teacher's width) or stage (not the papers': one mask per stage over its residual "
                                         "stream, shared by its downsample and every block's last conv, so pruning "
                                         "narrows the stream itself; docs/methods.md)",
                                label="Residual mask", choices=RESIDUAL_MASKS, methods=GUMBEL)

    def in_effect(self, method: str) -> dict:
        shown = super().in_effect(method)
        if self.mask_init != "keep":
            shown.pop("keep_margin", None)  # the starting margin of kept masks only
        if not self.lambda_rl:
            for name in ("feature_distance", "feature_stages", "feature_decoders"):
                shown.pop(name, None)
        return shown

    def validate(self, config: TrainConfig) -> None:
        if self.residual_mask != "block" and config.method not in GUMBEL:
            raise ValueError(f"residual_mask {self.residual_mask} is an option of {' and '.join(GUMBEL)}; "
                             f"{config.method} masks each block's convs (residual_mask block)")
        if self.score_every > 1 and self.correlation_weight_gradient:
            raise ValueError("score_every must be >= 1, and > 1 only with correlation_weight_gradient false (the scores are "
                             "then constants for the masks' gradient; with the weight gradient they are part of the graph)")


def temperature(options: StudentOptions, epoch: int, epochs: int) -> float:
    """``tau(e) = tau_0 * (tau_E / tau_0)^(e / E)`` with ``e = epoch + 1`` (1-based, as in the KDFS code): tau_E at the last epoch."""
    return options.tau_start * (options.tau_end / options.tau_start) ** ((epoch + 1) / epochs)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            t_squared: bool = True) -> torch.Tensor:
    """``s * (BCE(sigmoid(z_s/T), q) - H(q))``, ``q = sigmoid(z_t/T)``, ``s = T^2`` (or 1): the KL form of binary KD."""
    teacher_scaled = teacher_logits.float() / temperature
    target = torch.sigmoid(teacher_scaled)
    cross_entropy = F.binary_cross_entropy_with_logits(student_logits.float() / temperature, target)
    entropy = F.binary_cross_entropy_with_logits(teacher_scaled, target)
    return (cross_entropy - entropy) * (temperature**2 if t_squared else 1.0)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """KDFS's reconstruction target: the L2-normalised channel mean of squared activations, ``[N, H*W]``."""
    return F.normalize(features.float().pow(2).mean(dim=1).flatten(1), dim=1)


def feature_loss(decoded: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "attention":
        return (attention_map(decoded) - attention_map(target)).pow(2).mean()
    return F.mse_loss(decoded.float(), target.float())


def reconstruction_loss(features: list[torch.Tensor], teacher_features: list[torch.Tensor],
                        decoders: nn.ModuleList | None, options: StudentOptions) -> torch.Tensor:
    """``L_RL``: the per-stage feature distances, averaged (``feature_stages: mean``) or summed over the stages."""
    if decoders is not None:
        features = [decoder(f) for decoder, f in zip(decoders, features, strict=True)]
    distances = [feature_loss(f, t, options.feature_distance) for f, t in zip(features, teacher_features, strict=True)]
    total = sum(distances)
    return total / len(distances) if options.feature_stages == "mean" else total


def default_teacher(data: str, arch: str = "resnet50") -> str | None:
    """A shipped dense network of ``arch`` (a teacher-method run) trained on exactly this dataset, if there is one."""

    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        try:
            header = read_header(path)
        except CheckpointError:
            continue
        if (header.get("method") == "teacher" and header.get("config", {}).get("data") == data
                and header.get("model", {}).get("arch") == arch):
            return str(path)
    return None


def load_teacher(config: TrainConfig, same_arch: bool = True) -> nn.Module:

    path = config.teacher
    if path is None:
        raise ValueError(f"the {config.method} student needs a teacher: pass --teacher CKPT (a teacher run or checkpoint); "
                         "train one with `python -m core train --method teacher --data ...`")
    teacher = load_model(path)
    spec = teacher.header["model"]
    if spec.get("type") != "resnet" or (same_arch and spec.get("arch") != config.arch):
        raise ValueError(f"teacher {path} is a {spec.get('type')} {spec.get('arch')}; the student needs a "
                         f"{config.arch} teacher (or pass --arch {spec.get('arch')})")
    if teacher.header.get("image_size") != config.image_size:
        log.warning("teacher %s was trained at %s px; distilling at %s px", path, teacher.header.get("image_size"),
                    config.image_size)
    return teacher


class Penalty:
    """``L_prune`` of a masked student: called as ``penalty(distiller, mask, keep_probability)`` every step.

    The distiller owns one per run, so a penalty that keeps state (Pearson's score cache) keeps it here.
    """

    def __call__(self, distiller: Distiller, mask: torch.Tensor, keep_probability: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_epoch(self) -> None:
        """Called at each epoch's start."""

    def summary(self) -> dict:
        """Extra fields of the epoch record."""
        return {}


class Distiller(nn.Module):
    """Student + per-stage decoders; ``forward(images, labels)`` returns ``(loss, terms)``."""

    def __init__(self, student: MaskedResNet, teacher: nn.Module, options: StudentOptions, penalty: Penalty,
                 cost: MaskedCost, teacher_macs: float):
        super().__init__()
        self.student = student
        self.cost = cost
        self.options = options
        self.penalty = penalty
        self.teacher_macs = teacher_macs
        # 1x1 decoders from the student's stage widths to the teacher's (equal for KDFS/Pearson; PDD's
        # ResNet-18 student has narrower stages than its ResNet-50 teacher); none when L_RL is off
        pairs = list(zip(map(_stage_width, stages(student)), map(_stage_width, stages(teacher)), strict=True))
        if options.lambda_rl and not options.feature_decoders and options.feature_distance == "mse" \
                and any(s != t for s, t in pairs):
            raise ValueError(f"feature_distance mse compares stage outputs channel by channel, but the student's widths "
                             f"{[s for s, _ in pairs]} differ from the teacher's {[t for _, t in pairs]}: "
                             "use feature_decoders true, or the attention distance")
        wanted = options.lambda_rl and options.feature_decoders
        self.decoders = nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in pairs) if wanted else nn.ModuleList()
        # a list: not a submodule; BN folded into the convs, as it only ever runs forward in eval mode
        self._teacher = [fold_batch_norms(teacher)]

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            teacher_logits, teacher_features = forward_features(self.teacher, images)
        logits, features, mask, keep_probability = self.student.forward_features(images)
        options = self.options
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        kd = kd_loss(logits, teacher_logits, options.kd_temperature, options.kd_scale == "t2")
        rl = logits.new_zeros(())
        if options.lambda_rl:  # L_RL off (lambda_rl = 0) means no decoders at all, so nothing unused under DDP
            rl = reconstruction_loss(features, teacher_features, self.decoders or None, options)
        prune = self.penalty(self, mask, keep_probability)
        loss = bce + options.lambda_kd * kd + options.lambda_rl * rl + options.lambda_prune * prune
        return loss, {"bce": bce.detach(), "kd": kd.detach(), "rl": rl.detach(), "prune": prune.detach(),
                      "mask_macs_ratio": (self.cost.macs(mask.detach().double()) / self.teacher_macs).detach()}


def _stage_width(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


class MaskedStudentMethod(Method):
    """A masked ResNet student distilled from a ResNet teacher; subclasses define its :class:`Penalty`.

    ``sampler`` picks the masks (Gumbel keep/drop logits, or PDD's sign scores), ``options_class``
    the hyperparameters and their defaults, ``same_arch_teacher`` whether the teacher must be the
    student's architecture (KDFS/Pearson start from the teacher's weights).
    """

    sampler = "gumbel"
    options_class = StudentOptions
    same_arch_teacher = True
    needs_teacher = True

    def penalty(self) -> Penalty:
        """This run's ``L_prune`` (and whatever state it keeps): the distiller owns it."""
        raise NotImplementedError

    def check(self, config: TrainConfig) -> None:
        options = self.options
        if config.teacher is None:
            config.teacher = default_teacher(config.data, config.arch if self.same_arch_teacher else "resnet50")
            if config.teacher is not None:
                log.info("using the shipped teacher %s for %s", config.teacher, config.data)
        teacher = load_teacher(config, self.same_arch_teacher)
        if options.student_init == "teacher" and teacher.header["model"]["arch"] != config.arch:
            raise ValueError(f"student_init teacher needs a {config.arch} teacher, got a {teacher.header['model']['arch']}; "
                             "use student_init scratch")

    def build(self, config: TrainConfig) -> Distiller:

        options = self.options
        teacher = load_teacher(config, self.same_arch_teacher)
        student = MaskedResNet(config.arch, self.sampler, options.residual_mask)
        if options.student_init == "teacher":
            missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
            if unexpected or set(missing) != {f"sampler.{name}" for name, _ in student.sampler.named_parameters()}:
                raise ValueError(f"teacher weights do not fit the student: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if options.mask_init == "keep" and self.sampler == "gumbel":  # start as the teacher; the pruning loss then removes filters
            with torch.no_grad():
                student.sampler.logits[:, 0] = 0.0
                student.sampler.logits[:, 1] = options.keep_margin
        cost = MaskedCost(student, config.image_size)
        teacher_macs = profile_model(teacher, config.image_size)["macs"]
        return Distiller(student, teacher, options, self.penalty(), cost, teacher_macs)

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        residual_mask = self.options.residual_mask
        return {"type": "masked-resnet", "arch": config.arch, **({"sampler": self.sampler} if self.sampler != "gumbel" else {}),
                **({"residual_mask": residual_mask} if residual_mask != "block" else {})}

    def deployable(self, model: Distiller) -> nn.Module:
        return model.student

    def parameter_groups(self, model: Distiller, config: TrainConfig) -> list[dict]:
        options = self.options
        sampler = list(model.student.sampler.parameters())
        weights = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in sampler)]
        decay = config.weight_decay if options.sampler_weight_decay is None else options.sampler_weight_decay
        return [{"params": weights},
                {"params": sampler, "weight_decay": decay, "lr": options.sampler_lr or config.lr}]

    def on_epoch_start(self, model: Distiller, epoch: int, config: TrainConfig) -> None:
        options = self.options
        model.student.sampler.temperature = temperature(options, epoch, config.epochs)
        model.student.sampler.seed(config.seed * 100_003 + epoch)
        model.penalty.new_epoch()

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(images, labels)

    @torch.no_grad()
    def epoch_summary(self, model: Distiller) -> dict:
        """The mask history record: tau, per-block-conv keep probability and active filters, compact cost."""
        student = model.student
        sampler = student.sampler
        keep = sampler.keep_probability()
        eval_mask = sampler.eval_mask()
        active = student.active_filters()
        macs = float(model.cost.macs(eval_mask.double()))
        params = float(model.cost.params(eval_mask.double()))
        return {
            "temperature": sampler.temperature,
            "keep_probability": [round(float(p.mean()), 5) for p in student.per_conv(keep)],
            "active_filters": active,
            "active_fraction": sum(active) / sum(student.conv_channels),
            "compact_macs": macs, "compact_params": params,
            "macs_reduction": 1 - macs / model.cost.full_macs,
            "params_reduction": 1 - params / model.cost.full_params,
            **model.penalty.summary(),
        }

    def keep_probability_by_stage(self, model: Distiller) -> dict[str, torch.Tensor]:
        student = model.student
        by_stage: dict[str, list[torch.Tensor]] = {}
        for layer, keep in zip(student.layers, student.sampler.split(student.sampler.keep_probability()), strict=True):
            by_stage.setdefault(layer.name.split(".")[0], []).append(keep.detach().float().cpu())
        return {stage: torch.cat(values) for stage, values in by_stage.items()}

    def header_extras(self, model: Distiller, config: TrainConfig, summary: dict) -> dict:
        student = model.student
        return {
            "teacher": config.teacher,
            "pruning": {
                "layers": [conv.conv for conv in student.wiring.block_convs],
                "channels": student.conv_channels,
                "active_filters": summary["active_filters"],
                "compact_params": summary["compact_params"], "compact_macs": summary["compact_macs"],
                "teacher_params": model.cost.full_params, "teacher_macs": model.cost.full_macs,
                "params_reduction": summary["params_reduction"], "macs_reduction": summary["macs_reduction"],
                "empty_layers": student.sampler.empty_layers(),
                **filter_record(student),
            },
        }
