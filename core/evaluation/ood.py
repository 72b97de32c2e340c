"""Verdicts that know their limits: how unlike a checkpoint's training data an input is.

The score is Lee et al.'s Mahalanobis *feature ensemble* (K. Lee, K. Lee, H. Lee, J. Shin, "A Simple
Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018):
a Gaussian on the features of every stage of the network, not only on the head's input. Each stage's
feature is the channel-wise mean and standard deviation of its output map (Lee et al. pool the mean;
the standard deviation adds the texture statistics that separate a photograph from a rendered face).
Each stage's Gaussian is a probabilistic PCA (M. E. Tipping, C. M. Bishop, "Probabilistic Principal
Component Analysis", JRSS B 1999), which keeps it small: the Mahalanobis distance in the first
``k`` principal directions plus the squared residual outside them over the discarded directions'
mean variance. One Gaussian per stage covers both classes (real and fake are both *in* distribution).

Calibration, on the validation split (never the training images the Gaussians were fitted on):
each stage's score is divided by its own :data:`QUANTILE` quantile there, the input's score is the
maximum over stages, and the threshold is that maximum's :data:`QUANTILE` quantile. Reported as
``ood_score = max_stage(score / stage quantile) / threshold``: at most 1 means *in distribution*,
so by construction 95% of validation images are.

Why stages and not the head's input alone (measured on the shipped Pearson student): the head's input
scores a face crop of scikit-image's astronaut photograph *in* distribution; the early stages, which
see texture and colour statistics, put it far out, while 98% of the held-out test split stays in.

Where it is stored: a checkpoint written by training holds it, as tensors under :data:`TENSOR_PREFIX`
plus the header's ``ood`` record (:func:`core.checkpoint.save_checkpoint` ``extra=``). A checkpoint
trained before this existed gets a sidecar file beside it (``x.ood.safetensors``, written by
``python -m core ood fit``), so large shipped files are never rewritten.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.checkpoint import CheckpointError, load_extra_tensors, read_header, resolve_checkpoint, sidecar_path
from core.data.datasets import resolve_dataset, subsample
from core.data.images import ImageDataset, collate_skipping
from core.io import atomic_write, write_bytes_to
from core.models.loading import load_model

DIMS = 16  # principal directions kept per stage
QUANTILE = 0.95  # of validation images scored in distribution
SHRINKAGE = 1e-3  # added to the projected covariance's diagonal (x its mean variance): a singular one stays invertible
FIT_IMAGES = 2000  # training images fitted (an evenly spread subset): the Gaussians settle long before
CALIBRATION_IMAGES = 1000  # validation images whose scores set the threshold
METHOD = "stage-ensemble Mahalanobis on PPCA (Lee et al. NeurIPS 2018; Tipping & Bishop 1999)"
TENSOR_PREFIX = "ood."  # checkpoint tensors of the out-of-distribution model (not model weights)
RECORD_KEY = "core-ood"  # sidecar metadata key
UNRELIABLE = "unreliable: this input is unlike the training data"

_STAGE_NAME = re.compile(r"(^|\.)layer[1-4]$")


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs the score looks at: every residual stage (``layer1`` ... ``layer4``, also inside
    branches such as ``spatial.layer2``); without any, four evenly spaced blocks of a ``features`` sequence
    (EfficientNet, the small CNNs); without that, the network's head (its last linear layer's input)."""
    stages = {name: module for name, module in model.named_modules() if _STAGE_NAME.search(name)}
    if stages:
        return stages
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) >= 2:
        picks = sorted({round(i * (len(features) - 1) / 3) for i in range(4)})
        return {f"features.{i}": features[i] for i in picks}
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no stage or linear head to take features from")
    return {linears[-1][0]: linears[-1][1]}


def stage_statistics(output: torch.Tensor) -> torch.Tensor:
    """``[N, 2C]``: the channel means and standard deviations of a ``[N, C, H, W]`` map (``[N, C]`` as it is)."""
    if output.dim() == 2:
        return output.float()
    # E[x] and E[x^2] as two plain reductions: any memory format, no copy (faster than var_mean on small maps)
    # (a served forward pays this per stage); the cancellation error is ~1e-5 on these post-ReLU maps
    output = output.float()
    mean = output.mean(dim=(2, 3))
    square = (output * output).mean(dim=(2, 3))
    return torch.cat([mean, (square - mean * mean).clamp_min(0).sqrt()], dim=1)


def in_original_order(statistics: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """:func:`stage_statistics` ``[N, 2C]`` of a map whose channels are permuted, put back in the original channels'
    order; ``inverse[c]``: where original channel ``c`` sits in the map."""
    return statistics.index_select(1, torch.cat([inverse, inverse + inverse.numel()]))


class FeatureTap:
    """Collects :func:`stage_statistics` of ``stages`` on every forward while active (``with FeatureTap(...) as tap``).

    A linear head is tapped on its input, every other stage on its output."""

    def __init__(self, model: nn.Module, stages: Sequence[str] | None = None):
        modules = dict(model.named_modules())
        self.names = list(stages) if stages is not None else list(stage_modules(model))
        missing = [name for name in self.names if name not in modules]
        if missing:
            raise ValueError(f"the network has no module {missing[0]!r} to take out-of-distribution features from")
        self.modules = [modules[name] for name in self.names]
        self.captured: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> FeatureTap:
        for name, module in zip(self.names, self.modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(name, isinstance(module, nn.Linear))))
        return self

    def _hook(self, name: str, on_input: bool):
        def hook(module, args, output):
            statistics = stage_statistics((args[0] if on_input else output).detach())
            inverse = None if on_input else getattr(module, "channel_inverse", None)
            if inverse is not None:  # a stage that outputs its channels permuted (core.models.split_stream)
                statistics = in_original_order(statistics, inverse)
            self.captured[name] = statistics

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self) -> dict[str, torch.Tensor]:
        """The statistics of the last forward, and forget them."""
        if len(self.captured) != len(self.names):
            raise RuntimeError("no forward pass went through every tapped stage")
        taken, self.captured = self.captured, {}
        return taken


@dataclass
class StageDensity:
    """A probabilistic PCA of one stage's statistics: ``score(f) = |P z|^2_Mahalanobis + |r|^2 / noise``, ``z`` the
    projection on ``components`` of ``f - mean``, ``r`` what is left outside them."""

    mean: torch.Tensor  # [D]
    components: torch.Tensor  # [D, k], orthonormal columns
    precision: torch.Tensor  # [k, k], inverse covariance of the projections
    noise: float  # mean variance of the discarded directions
    scale: float = 1.0  # the stage's calibration quantile (scores are divided by it)

    def raw_score(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.double() - self.mean.double()
        components = self.components.double()
        z = centred @ components
        residual = centred - z @ components.T
        mahalanobis = torch.einsum("nk,kl,nl->n", z, self.precision.double(), z)
        return mahalanobis + residual.pow(2).sum(dim=1) / self.noise

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return self.raw_score(features) / self.scale


def fit_density(features: torch.Tensor, dims: int = DIMS) -> StageDensity:
    """The PPCA of ``features`` ``[N, D]`` (uncalibrated: ``scale`` 1)."""
    features = features.double()
    mean = features.mean(dim=0)
    centred = features - mean
    dims = max(1, min(dims, features.shape[0] - 2, features.shape[1] - 1))
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variances = singular.pow(2) / max(len(features) - 1, 1)
    components = vh[:dims].T
    discarded = features.shape[1] - dims
    noise = float(variances[dims:].sum() / discarded) if discarded else 0.0
    noise = max(noise, 1e-6 * float(variances[:dims].mean()), 1e-12)
    z = centred @ components
    covariance = z.T @ z / max(len(z) - 1, 1)
    covariance += SHRINKAGE * covariance.diagonal().mean() * torch.eye(dims, dtype=covariance.dtype)
    return StageDensity(mean.float(), components.float(), torch.linalg.inv(covariance).float(), noise)


@dataclass
class OODModel:
    """One :class:`StageDensity` per stage and the calibrated threshold on their maximum."""

    stages: list[str]
    densities: list[StageDensity]
    threshold: float = 1.0
    info: dict = field(default_factory=dict)  # n_fit, n_calibration, data, ...

    def worst_stage(self, statistics: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[N]`` (float64) the largest calibrated stage score, before the threshold."""
        per_stage = torch.stack([d.score(statistics[name]) for name, d in zip(self.stages, self.densities, strict=True)])
        return per_stage.max(dim=0).values

    def score(self, statistics: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[N]`` ood scores of tapped statistics: at most 1 is in distribution (float64: exact at the threshold)."""
        return self.worst_stage(statistics) / self.threshold

    def record(self) -> dict:
        """The header's ``ood`` record (no tensors)."""
        return {"method": METHOD, "stages": self.stages, "dims": int(self.densities[0].components.shape[1]),
                "quantile": QUANTILE, "threshold": self.threshold, "stage_scales": [d.scale for d in self.densities],
                "noise": [d.noise for d in self.densities], **self.info}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The model's tensors under :data:`TENSOR_PREFIX` (components in fp16: they are unit vectors)."""
        out = {}
        for index, density in enumerate(self.densities):
            out[f"{TENSOR_PREFIX}{index}.mean"] = density.mean.float().contiguous()
            out[f"{TENSOR_PREFIX}{index}.components"] = density.components.half().contiguous()
            out[f"{TENSOR_PREFIX}{index}.precision"] = density.precision.float().contiguous()
        return out

    @classmethod
    def from_parts(cls, record: dict, tensors: dict[str, torch.Tensor]) -> OODModel:
        stages = list(record["stages"])
        densities = [StageDensity(tensors[f"{TENSOR_PREFIX}{i}.mean"].float(), tensors[f"{TENSOR_PREFIX}{i}.components"].float(),
                                  tensors[f"{TENSOR_PREFIX}{i}.precision"].float(), float(record["noise"][i]),
                                  float(record["stage_scales"][i])) for i in range(len(stages))]
        info = {k: v for k, v in record.items() if k not in ("method", "stages", "dims", "quantile", "threshold",
                                                              "stage_scales", "noise")}
        return cls(stages, densities, float(record["threshold"]), info)


def calibrate(model: OODModel, statistics: dict[str, torch.Tensor], quantile: float = QUANTILE) -> OODModel:
    """Set every stage's scale and the threshold so that ``quantile`` of ``statistics`` (validation) score <= 1."""
    for name, density in zip(model.stages, model.densities, strict=True):
        density.scale = 1.0
        density.scale = max(float(torch.quantile(density.raw_score(statistics[name]), quantile)), 1e-12)
    model.threshold = max(float(torch.quantile(model.worst_stage(statistics), quantile)), 1e-12)
    model.info["n_calibration"] = int(next(iter(statistics.values())).shape[0])
    return model


Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _default_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images).reshape(-1)


@torch.no_grad()
def collect(model: nn.Module, samples: list, transform, batch_size: int = 64, device: str = "cpu",
            forward: Forward = _default_forward, progress: bool = True, desc: str = "features") -> dict[str, torch.Tensor]:
    """Every stage's statistics of ``samples`` (loaded with ``transform``), on ``device``; unreadable files skipped."""


    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, collate_fn=collate_skipping)
    parts: dict[str, list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        with FeatureTap(model) as tap:
            for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
                if batch["images"] is None:
                    continue
                forward(model, batch["images"].to(device))
                for name, values in tap.take().items():
                    parts.setdefault(name, []).append(values.cpu())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("no readable image to fit the out-of-distribution model on")
    return {name: torch.cat(values) for name, values in parts.items()}


def fit(model: nn.Module, train: list, val: list, transform, device: str = "cpu", forward: Forward = _default_forward,
        dims: int = DIMS, progress: bool = True) -> OODModel:
    """Fit on up to :data:`FIT_IMAGES` of ``train``, calibrate on up to :data:`CALIBRATION_IMAGES` of ``val``."""

    if not train or not val:
        raise ValueError("the out-of-distribution model needs training images to fit and validation images to calibrate")
    fitted = collect(model, subsample(train, FIT_IMAGES), transform, device=device, forward=forward, progress=progress,
                     desc="ood fit (train)")
    stages = list(fitted)
    ood = OODModel(stages, [fit_density(fitted[name], dims) for name in stages],
                   info={"n_fit": int(fitted[stages[0]].shape[0])})
    calibration = collect(model, subsample(val, CALIBRATION_IMAGES), transform, device=device, forward=forward,
                          progress=progress, desc="ood calibrate (val)")
    return calibrate(ood, calibration)


# --------------------------------------------------------------------------- storage


def save_sidecar(ood: OODModel, path: str | os.PathLike) -> None:


    payload = safetensors_bytes(ood.tensors(), metadata={RECORD_KEY: json.dumps(ood.record())})
    atomic_write(path, lambda tmp: write_bytes_to(tmp, payload))


def load_sidecar(path: str | os.PathLike) -> OODModel | None:
    """The sidecar at ``path``, or None when there is none (a damaged one is a CheckpointError)."""


    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            record = json.loads((handle.metadata() or {})[RECORD_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no items()
        return OODModel.from_parts(record, tensors)
    except (SafetensorError, OSError, ValueError, KeyError, IndexError) as error:
        raise CheckpointError(f"{path}: damaged out-of-distribution sidecar ({type(error).__name__}: {error})") from None


def load_ood(checkpoint: str | os.PathLike) -> OODModel | None:
    """The out-of-distribution model of a checkpoint: its own (header ``ood`` + tensors), else its sidecar, else None.

    An ONNX export's is its source checkpoint's sidecar, found beside the export under the export's own name."""

    path = resolve_checkpoint(checkpoint)
    header = read_header(path)
    if header.get("ood") and TENSOR_PREFIX in (header.get("extra_tensors") or ()):
        return OODModel.from_parts(header["ood"], load_extra_tensors(path, TENSOR_PREFIX))
    return load_sidecar(sidecar_path(path))


def fit_checkpoint(checkpoint: str | os.PathLike, data: str | None = None, data_root: str | None = None,
                   dims: int = DIMS, progress: bool = True) -> dict:
    """Fit, calibrate and write the sidecar of ``checkpoint`` from its own training data (or ``data``); one pass over
    up to :data:`FIT_IMAGES` training and :data:`CALIBRATION_IMAGES` validation images. Also reports the share of the
    test split (held out from both) scored in distribution."""

    path = resolve_checkpoint(checkpoint)
    model = load_model(path)
    config = model.header.get("config", {})
    data = data or config.get("data")
    if not data:
        raise ValueError(f"{path}: its header names no training data; give --data")
    dataset = resolve_dataset(data, data_root if data_root is not None else config.get("data_root"))
    ood = fit(model, dataset.split("train"), dataset.split("val"), model.preprocess, dims=dims, progress=progress)
    ood.info["data"] = data
    result = {"checkpoint": str(path), "sidecar": str(sidecar_path(path)), "data": data, **ood.record()}
    test = dataset.split("test")
    if test:
        scores = ood.score(collect(model, subsample(test, CALIBRATION_IMAGES), model.preprocess, progress=progress,
                                   desc="ood test"))
        result["test_in_distribution"] = round(float((scores <= 1).float().mean()), 4)
        result["n_test"] = len(scores)
    save_sidecar(ood, sidecar_path(path))
    result["sidecar_bytes"] = sidecar_path(path).stat().st_size
    return result


class Scorer:
    """Logits and ood scores of a batch in one forward: ``Scorer(model, ood)(images) -> (logits [N], scores [N])``;
    scores are None without an ood model. Works on the trained and the served (folded) form alike."""

    def __init__(self, model: nn.Module, ood: OODModel | None):
        self.model, self.ood, self.tap = model, ood, None
        graph_statistics = getattr(model, "statistics", None)  # an ONNX serving export outputs them itself
        if ood is not None and graph_statistics is not None and set(ood.stages) - set(graph_statistics):
            self.ood = None  # an export without them (e.g. `export --format onnx`): no score rather than a wrong one
        elif ood is not None and graph_statistics is None:
            self.tap = FeatureTap(model, ood.stages)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.ood is None:
            return self.model(images).reshape(-1), None
        if self.tap is None:
            logits, statistics = self.model.forward_with_statistics(images)
            return logits.reshape(-1), self.ood.score(statistics)
        with self.tap:
            logits = self.model(images).reshape(-1)
            return logits, self.ood.score(self.tap.take())
