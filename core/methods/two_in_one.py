"""Two-in-one distillation: a dual-branch (spatial + frequency) teacher into one single-branch RGB student.

The teacher is a :class:`~core.models.dual.DualBranchNet` (``--arch dual_resnet18``):
a spatial ResNet on RGB and a frequency ResNet on the block-DCT log-magnitude of the
image, fused by one linear head. The student is a plain RGB network: a ResNet
(``--arch``, ResNet-18 in the presets) trained from scratch, or, with
``--init-checkpoint``, a trained student's deployable network, e.g. the compact
Pearson student (the two methods compose: prune first, then distil both branches).

Objective, with ``z`` logits, ``f`` the student's pooled features (the head's input,
the output of the shared backbone) and ``s``, ``q`` the teacher's spatial and
frequency branch features::

    L = BCE(z_s, y) + lambda_kd * L_KD(z_s, z_t; T) + lambda_feature * (L_spatial + L_frequency)

- ``L_KD``: the temperature-scaled binary KD of :func:`core.methods.distillation.kd_loss`.
- Projectors: ``P(f) = W_2 relu(W_1 f + b_1) + b_2`` (hidden width ``projector_hidden``),
  one per teacher branch, mapping the student's feature width to that branch's.
- Feature loss of a branch: ``d(p, t) = mean_n || p_n/||p_n|| - t_n/||t_n|| ||^2``
  (``= mean_n (2 - 2 cos(p_n, t_n))``, in [0, 4]): the squared distance of the
  L2-normalised projector output and teacher feature, summed over features and
  averaged over the batch.

``mode`` (the ablation):

- ``spatial``: one projector to the spatial branch; ``L_frequency = 0``.
- ``naive``: one shared projector to the concatenated ``[s; q]``, its output split in two
  halves compared with ``s`` and ``q``; the two losses are simply summed.
- ``dedicated``: a projector per branch, losses summed (no homogenisation).
- ``two-in-one``: a projector per branch, plus gradient homogenisation.

**Gradient homogenisation** (``two-in-one``). The projectors see the detached copy
``h = f.detach()`` (``requires_grad``), so each still gets its own, unscaled gradient
from ``lambda_feature * (L_spatial + L_frequency)``. What the shared backbone receives
is built by hand: ``g_s = dL_spatial/dh`` and ``g_f = dL_frequency/dh``
(``torch.autograd.grad``, each ``[N, D]``), their norms ``n_s = ||g_s||``, ``n_f = ||g_f||``
over the whole batch, the target ``n = (n_s + n_f) / 2``, and::

    g = n * g_s / n_s + n * g_f / n_f

so both branches push the backbone with the same norm ``n`` and neither dominates,
while the total stays at the mean of the two. A zero gradient stays zero (its term is
dropped), and ``n`` is then the other's own norm (the mean over the non-zero norms).
``g`` enters the backbone through the surrogate ``lambda_feature * ((f * g).sum() -
(f.detach() * g).sum())``, whose value is 0 and whose gradient with respect to ``f``
is ``lambda_feature * g``, so the engine's single ``loss.backward()`` does everything.
The other modes go through the same path with ``g = g_s + g_f`` (exactly what plain
backpropagation of the summed losses gives), so every mode logs ``grad_norm_spatial``
and ``grad_norm_frequency`` (``n_s``, ``n_f``, before ``lambda_feature``) per step.

The frozen teacher rides outside the module's state, as in
:class:`~core.methods.finetune.Finetuned`; the checkpoint holds the student alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core.checkpoint import read_header
from core.config import TrainConfig
from core.methods import register_method
from core.methods.base import Method
from core.methods.distillation import default_teacher, kd_loss, load_teacher
from core.methods.finetune import Finetuned
from core.methods.options import Options, option
from core.models import build_model
from core.models.dual import BRANCHES, is_dual
from core.models.loading import load_model
from core.models.resnet import RESNET_PARTS, pooled_features
from core.pruning.surgery import compact_of

log = logging.getLogger(__name__)

MODES = ("spatial", "naive", "dedicated", "two-in-one")
DEFAULT_TEACHER = "dual_resnet18"  # the shipped dual teacher's architecture
STUDENT_TYPES = ("resnet", "compact-resnet", "masked-resnet")  # what --init-checkpoint may hold (a masked one is made compact)
NORM_EPS = 1e-12


@dataclass
class TwoInOneOptions(Options):
    mode: str = option("two-in-one", "spatial (spatial-branch KD only), naive (one shared projector, losses summed), "
                                     "dedicated (a projector per branch, summed) or two-in-one (a projector per branch + "
                                     "gradient homogenisation)", label="Mode", choices=MODES)
    kd_temperature: float = option(3.0, "T of the KD loss", label="T (KD temperature)", low=0, low_open=True)
    lambda_kd: float = option(1.0, "weight of the output KD loss", label="λ_kd (output KD)", low=0)
    lambda_feature: float = option(1.0, "weight of the feature-distillation losses (both branches)",
                                   label="λ_feat (feature distillation, both branches)", low=0)
    projector_hidden: int = option(512, "hidden width of each projector MLP", low=1)


def projector(width: int, hidden: int, target_width: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear`` from the student's feature width to a teacher branch's."""
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, target_width))


def feature_distance(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_n ||p_n/||p_n|| - t_n/||t_n||||^2``: squared distance of the L2-normalised features, batch mean."""
    return (F.normalize(projected.float(), dim=1) - F.normalize(target.float(), dim=1)).pow(2).sum(dim=1).mean()


def homogenised(gradients: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i n * g_i / ||g_i||`` with ``n`` the mean of the non-zero norms ``||g_i||``; a zero ``g_i`` adds nothing."""
    norms = torch.stack([gradient.norm() for gradient in gradients])
    nonzero = (norms > 0).to(norms.dtype)
    target = (norms * nonzero).sum() / nonzero.sum().clamp_min(1)  # no host sync: the same on every device
    return sum(target * gradient / norm.clamp_min(NORM_EPS) for gradient, norm in zip(gradients, norms, strict=True))


def gradient_surrogate(features: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``(f * g).sum() - (f.detach() * g).sum()``: value 0, gradient ``g`` with respect to ``f``."""
    gradient = gradient.detach().to(features.dtype)
    return (features * gradient).sum() - (features.detach() * gradient).sum()


def route_feature_gradients(features: torch.Tensor, branch_losses: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                            homogenise: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The feature-distillation term and its logged values, with the backbone's gradient routed by hand.

    ``branch_losses(h)`` maps the detached features ``h`` (through the projectors) to one loss
    per teacher branch. Returns ``(sum of the losses + surrogate, terms)``: backpropagated,
    the projectors get each loss's plain gradient and ``features`` gets ``g`` (homogenised
    or summed, see the module docstring).
    """
    detached = features.detach().requires_grad_(True)
    losses = branch_losses(detached)
    gradients = [torch.autograd.grad(loss, detached, retain_graph=True)[0] for loss in losses.values()]
    routed = homogenised(gradients) if homogenise else sum(gradients)
    terms = {}
    for (name, loss), gradient in zip(losses.items(), gradients, strict=True):
        terms[f"feature_{name}"] = loss.detach()
        terms[f"grad_norm_{name}"] = gradient.norm().detach()
    return sum(losses.values()) + gradient_surrogate(features, routed), terms


class TwoInOneStudent(Finetuned):
    """The student, its branch projectors and (outside its state) the frozen dual-branch teacher."""

    def __init__(self, student: nn.Module, teacher: nn.Module, options: TwoInOneOptions):
        super().__init__(student, teacher, options)
        width, (spatial, frequency) = student.fc.in_features, teacher.feature_widths
        self.branch_widths = {"spatial": spatial, "frequency": frequency}
        hidden = options.projector_hidden
        if options.lambda_feature == 0:  # pure KD: no projectors (no parameters without a gradient)
            projectors = {}
        elif options.mode == "spatial":
            projectors = {"spatial": projector(width, hidden, spatial)}
        elif options.mode == "naive":
            projectors = {"joint": projector(width, hidden, spatial + frequency)}
        else:
            projectors = {name: projector(width, hidden, self.branch_widths[name]) for name in BRANCHES}
        self.projectors = nn.ModuleDict(projectors)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def branch_losses(self, features: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One feature loss per distilled teacher branch, from the student's (detached) pooled features."""
        if "joint" in self.projectors:
            halves = self.projectors["joint"](features).split([self.branch_widths[name] for name in BRANCHES], dim=1)
            projected = dict(zip(BRANCHES, halves, strict=True))
        else:
            projected = {name: head(features) for name, head in self.projectors.items()}
        return {name: feature_distance(output, targets[name]) for name, output in projected.items()}

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options = self.options
        logits, features = pooled_features(self.student, images)
        with torch.no_grad():
            teacher_logits, spatial, frequency = self.teacher.forward_branches(images)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        kd = kd_loss(logits, teacher_logits, options.kd_temperature)
        loss = bce + options.lambda_kd * kd
        terms = {"bce": bce.detach(), "kd": kd.detach()}
        if self.projectors:
            targets = {"spatial": spatial, "frequency": frequency}
            feature, feature_terms = route_feature_gradients(
                features, lambda h: self.branch_losses(h, targets), homogenise=options.mode == "two-in-one")
            loss = loss + options.lambda_feature * feature
            terms.update(feature_terms)
        return loss, terms


def load_student(config: TrainConfig) -> tuple[nn.Module, dict, dict]:
    """``(student network, its model spec, the source header)``: a fresh ``config.arch``, or ``init_checkpoint``'s network."""

    if not config.init_checkpoint:
        return build_model(config.arch), {"type": "resnet", "arch": config.arch}, {}
    student, header = compact_of(load_model(config.init_checkpoint))  # a masked student: its compact network
    return student, dict(header["model"]), header


@register_method
class TwoInOneMethod(Method):
    name = "two-in-one"
    description = ("Two-in-one KD: a dual-branch (RGB + DCT) teacher into one RGB student, a projector per branch and "
                   "gradient homogenisation.")
    rank = 70
    architectures = ("resnet18", "resnet34")  # the student (a start checkpoint overrides it)
    needs_teacher = True
    teacher_kind = "shipped dual-branch ResNet-18 teacher of this dataset"
    starts_from = "a student checkpoint to start from (masked or compact; default: the architecture, from scratch)"
    options_class = TwoInOneOptions

    def check(self, config: TrainConfig) -> None:

        options = self.options
        spec = read_header(config.init_checkpoint)["model"] if config.init_checkpoint else {"type": "resnet", "arch": config.arch}
        single_branch_resnet = spec.get("type") in STUDENT_TYPES and not is_dual(spec.get("arch")) and (
            spec["type"] != "resnet" or all(hasattr(build_model(spec["arch"]), part) for part in RESNET_PARTS))
        if not single_branch_resnet:
            start = f"{config.init_checkpoint} holds a {spec.get('type')} {spec.get('arch')}" if config.init_checkpoint \
                else f"--arch is {config.arch}"
            raise ValueError(f"{start}; the two-in-one student is a single-branch ResNet: --arch resnet18 (from scratch), "
                             "or --init-checkpoint a kdfs/pearson/pdd/finetune student or a dense ResNet teacher run")
        if config.arch != spec["arch"]:
            log.info("two-in-one: the student is the %s of %s", spec["arch"], config.init_checkpoint)
            config.arch = spec["arch"]
        if config.teacher is None:
            config.teacher = default_teacher(config.data, DEFAULT_TEACHER)
            if config.teacher is None:
                raise ValueError(f"two-in-one distils a dual-branch teacher and none is shipped for {config.data}: train one "
                                 f"with `python -m core train --method teacher --arch {DEFAULT_TEACHER} --data {config.data} "
                                 "--preset full`, then pass --teacher RUN")
            log.info("two-in-one: distilling from the shipped %s %s", DEFAULT_TEACHER, config.teacher)
        spec = read_header(config.teacher)["model"]
        if not is_dual(spec.get("arch")):
            raise ValueError(f"teacher {config.teacher} is a {spec.get('arch')}; two-in-one needs a dual-branch teacher "
                             f"(--method teacher --arch {DEFAULT_TEACHER})")
        if options.lambda_feature == 0 and options.mode != "two-in-one":
            log.warning("lambda_feature 0: no feature distillation, mode %s has no effect", options.mode)

    def build(self, config: TrainConfig) -> TwoInOneStudent:
        student, spec, source = load_student(config)
        student.student_spec, student.source_header = spec, source
        return TwoInOneStudent(student, load_teacher(config, same_arch=False), self.options)

    def deployable(self, model: TwoInOneStudent) -> nn.Module:
        return model.student

    def model_spec(self, config: TrainConfig, model: TwoInOneStudent) -> dict:
        return model.student.student_spec

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(images, labels)

    def header_extras(self, model: TwoInOneStudent, config: TrainConfig, summary: dict) -> dict:
        options = model.options
        extras = {"teacher": config.teacher,
                  "two_in_one": {"mode": options.mode, "teacher_arch": model.teacher.header["model"]["arch"],
                                 "student_start": config.init_checkpoint or "scratch",
                                 "kd_temperature": options.kd_temperature, "lambda_kd": options.lambda_kd,
                                 "lambda_feature": options.lambda_feature, "projector_hidden": options.projector_hidden}}
        source = model.student.source_header
        if source.get("pruning"):  # a compact start keeps its pruning record: reductions against its dense architecture
            extras.update(pruning=source["pruning"], init_from=config.init_checkpoint)
        return extras
