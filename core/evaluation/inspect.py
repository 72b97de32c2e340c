"""What a pruned student looks like inside: feature maps, filter correlation, embeddings.

Every function takes a model from :func:`core.load_model` (a torchvision ResNet
teacher, a masked student or a compact student) and works on the 48 *block convs*
the students mask, named as in the ``pruning`` header (``layer1.0.conv2`` is the
paper's "layer 2 of block 1"). A compact student has lost its dropped filters, so
channel positions come from the header's ``pruning.kept`` (the teacher's filter
index of each compact channel), and "before pruning" is the teacher's layer, which
is where every student starts (``student_init: teacher``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.checkpoint import resolve_checkpoint
from core.data.datasets import Sample
from core.data.images import ImageDataset, collate_skipping
from core.evaluation.evaluate import file_digest, samples_digest
from core.io import DiskCache, load_npz, save_npz
from core.models.dual import BRANCHES, DualBranchNet, is_dual
from core.models.loading import load_model
from core.models.masked import MaskedResNet, block_convs
from core.models.registry import build_model
from core.models.ticket import Ticket
from core.pruning.correlation import pearson_correlation, redundancy_scores

EMBEDDING_VERSION = 2  # 2: keyed through core.io.DiskCache
EMBEDDINGS_CACHE = DiskCache("embeddings", EMBEDDING_VERSION, ".npz")


def layer_index(model: nn.Module, layer: str) -> int:
    """Position of ``layer`` among the model's block convs (the order of the pruning header)."""
    names = block_conv_names(model)
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r}: expected one of {names[0]} ... {names[-1]}")
    return names.index(layer)


def block_conv_names(model: nn.Module) -> list[str]:
    names = []
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for index, block in enumerate(getattr(model, stage)):
            names += [f"{stage}.{index}.conv{position}" for position in range(1, _depth(block) + 1)]
    return names


def _depth(block: nn.Module) -> int:
    return getattr(block, "depth", None) or len(block_convs(block))


def _block_and_position(model: nn.Module, layer: str) -> tuple[nn.Module, int]:
    block_name, _, conv = layer.rpartition(".")
    return model.get_submodule(block_name), int(conv.removeprefix("conv"))


def kept_filters(model: nn.Module, layer: str) -> tuple[list[int], int]:
    """``(teacher filter index of each channel the model has at layer, the teacher's filter count)``."""
    block, position = _block_and_position(model, layer)
    index = layer_index(model, layer)
    if isinstance(model, MaskedResNet):
        mask = model.per_conv(model.sampler.eval_mask().cpu())[index]  # a stage-masked last conv: its stream's mask
        return torch.nonzero(mask).flatten().tolist(), len(mask)
    conv = getattr(block, f"conv{position}")
    pruning = (getattr(model, "header", None) or {}).get("pruning") or {}
    if "kept" in pruning:  # a compact student
        return pruning["kept"][index], pruning["channels"][index]
    if "channels" in pruning and conv.out_channels != pruning["channels"][index]:
        raise ValueError(f"{layer}: this compact checkpoint does not record which filters it kept (made before "
                         "pruning.kept was written); re-run `python -m core finetune` on its search run")
    return list(range(conv.out_channels)), conv.out_channels


@torch.inference_mode()
def feature_maps(model: nn.Module, image: torch.Tensor, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """The activations of ``layer`` for one preprocessed image ``[3, H, W]``, at the teacher's channel positions.

    Returns ``(maps [C, h, w], kept [C] bool)``: what leaves conv -> BN (-> mask) and, inside
    the block, the ReLU; a dropped filter's map is all zeros and ``kept`` is False there.
    """
    block, position = _block_and_position(model, layer)
    captured = {}
    # clone: torchvision blocks modify this tensor in place afterwards (ReLU, the residual "+=")
    handle = getattr(block, f"bn{position}").register_forward_hook(
        lambda module, args, output: captured.update(out=output.clone()))
    try:
        model(image[None].to(next(model.parameters()).device))
    finally:
        handle.remove()
    out = captured["out"][0].float().cpu()
    if position < _depth(block):
        out = F.relu(out)
    kept, channels = kept_filters(model, layer)
    maps = torch.zeros(channels, *out.shape[1:])
    if isinstance(model, MaskedResNet):  # the hook sees BN's output before the mask multiplies it
        out = out[kept]
    maps[kept] = out
    keep = np.zeros(channels, dtype=bool)
    keep[kept] = True
    return maps.numpy(), keep


def tile(maps: np.ndarray, kept: np.ndarray, columns: int = 8, gap: int = 1) -> np.ndarray:
    """A grid image of the channel maps, each scaled to [0, 1]; dropped channels are NaN (drawn as blanks)."""
    count, height, width = maps.shape
    rows = -(-count // columns)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan)
    for channel in range(count):
        row, column = divmod(channel, columns)
        cell = np.full((height, width), np.nan)
        if kept[channel]:
            low, high = maps[channel].min(), maps[channel].max()
            cell = (maps[channel] - low) / (high - low) if high > low else np.zeros((height, width))
        grid[row * (height + gap):row * (height + gap) + height, column * (width + gap):column * (width + gap) + width] = cell
    return grid


def layer_weight(model: nn.Module, layer: str) -> torch.Tensor:
    block, position = _block_and_position(model, layer)
    return getattr(block, f"conv{position}").weight.detach().float().cpu()


@dataclass
class LayerFilters:
    """One layer's filters before and after pruning, and what the search said about each."""

    layer: str
    channels: int
    kept: list[int]
    before: np.ndarray  # [C, C] Pearson correlation of all filters before pruning
    after: np.ndarray  # [k, k] the same for the filters the student kept, in its own weights
    keep_probability: np.ndarray | None  # [C] at the end of the search
    redundancy: np.ndarray  # [C] Pearson redundancy score of each filter (the search's, when recorded)
    before_source: str


def layer_filters(student: nn.Module, layer: str, teacher: nn.Module | None = None) -> LayerFilters:
    """Correlation heatmaps of ``layer`` before vs after pruning, with per-filter keep probability and redundancy.

    A masked student still has every filter: "before" is its full layer, "after" the kept
    rows. A compact student's "before" is ``teacher``'s layer: its masked search checkpoint
    (its own filters when the search ended) or its teacher (its initialisation, same
    architecture); its keep probabilities and redundancy scores come from the search run,
    recorded in the header.
    """
    index = layer_index(student, layer)
    kept, channels = kept_filters(student, layer)
    pruning = (getattr(student, "header", None) or {}).get("pruning") or {}
    weight = layer_weight(student, layer)
    if isinstance(student, MaskedResNet):
        full, source = weight, "the student's own filters at the end of the search"
        after = pearson_correlation(weight[kept])
    else:
        if teacher is None:
            raise ValueError("a compact student needs its teacher (or its masked search checkpoint) for the before-pruning "
                             "filters")
        full = layer_weight(teacher, layer)
        source = ("the student's own filters at the end of the search" if isinstance(teacher, MaskedResNet)
                  else "the teacher's filters (the student's initialisation)")
        before_arch, student_arch = _arch(teacher), _arch(student)
        if full.shape[0] != channels or (before_arch and student_arch and before_arch != student_arch):
            raise ValueError(f"{layer}: the before-pruning model is a {before_arch or 'network'} with {full.shape[0]} filters "
                             f"there, the student a {student_arch or 'network'} with {channels}: not the same architecture")
        after = pearson_correlation(weight)
    recorded = "redundancy" in pruning
    keep_probability = np.asarray(pruning["keep_probability"][index]) if "keep_probability" in pruning else None
    if keep_probability is None and isinstance(student, MaskedResNet):
        sampler = student.sampler
        keep_probability = student.per_conv(sampler.keep_probability().detach())[index].numpy()
    redundancy = np.asarray(pruning["redundancy"][index]) if recorded else redundancy_scores(full).numpy()
    return LayerFilters(layer=layer, channels=channels, kept=kept, before=pearson_correlation(full).numpy(),
                        after=after.numpy(), keep_probability=keep_probability, redundancy=redundancy, before_source=source)


def _arch(model: nn.Module) -> str | None:
    return getattr(model, "arch", None) or ((getattr(model, "header", None) or {}).get("model") or {}).get("arch")


def kept_per_layer(model: nn.Module) -> tuple[list[str], list[float], str]:
    """``(layer names, % kept, unit)`` of a network pruned without a ``pruning`` header record.

    A lottery ticket keeps *weights* (its masks); a channel-pruned network (``pruned-net``,
    Taylor) keeps *channels*: each conv's output width against the dense architecture's.
    """

    if isinstance(model, Ticket):
        masks = model.masks()
        return list(masks), [100 * float(mask.mean()) for mask in masks.values()], "weights"
    arch = _arch(model)
    if arch is None:
        raise ValueError("kept_per_layer needs a ticket or a checkpoint-loaded pruned network (its header names the arch)")
    dense = {name: module.out_channels for name, module in build_model(arch).named_modules() if isinstance(module, nn.Conv2d)}
    pruned = {name: module.out_channels for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    names = [name for name in dense if name in pruned]
    return names, [100 * pruned[name] / dense[name] for name in names], "channels"


# ----------------------------------------------------------------------------
# Embeddings: penultimate features (global-average-pooled last stage) and their UMAP.


def feature_views(header: dict) -> list[str | None]:
    """The embeddings a checkpoint offers: its head's input (``None``), or, for a dual-branch teacher, each branch's."""

    return list(BRANCHES) if is_dual((header.get("model") or {}).get("arch")) else [None]


@torch.inference_mode()
def penultimate_features(model: nn.Module, samples: list[Sample], batch_size: int = 64, progress: bool = True,
                         on_batch=None, branch: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(features [n, D], indices [n])`` of the readable samples: the input of the classifier head.

    ``branch`` (a dual-branch teacher, :mod:`core.models.dual`): that branch's pooled features
    instead (``spatial`` or ``frequency``); without it a dual teacher gives the fused ``[s; f]``.
    """
    captured = {}
    if branch is not None:

        if branch not in BRANCHES or not isinstance(model, DualBranchNet):
            raise ValueError(f"branch {branch!r}: only a dual-branch teacher has branches, {' and '.join(BRANCHES)}")
        handle = getattr(model, branch).avgpool.register_forward_hook(lambda module, args, output: captured.update(out=output))
    elif hasattr(model, "avgpool"):
        handle = model.avgpool.register_forward_hook(lambda module, args, output: captured.update(out=output))
    else:  # a dual-branch teacher: the concatenated branch features its head reads
        handle = model.fc.register_forward_pre_hook(lambda module, args: captured.update(out=args[0]))
    loader = DataLoader(ImageDataset(samples, model.preprocess), batch_size=batch_size, collate_fn=collate_skipping)
    features, indices = [], []
    device = next(model.parameters()).device
    try:
        for step, batch in enumerate(tqdm(loader, desc="features", unit="batch", disable=not progress, leave=False)):
            if batch["images"] is not None:
                model(batch["images"].to(device))
                features.append(captured["out"].flatten(1).float().cpu().numpy())
                indices.append(batch["indices"].numpy())
            if on_batch is not None:
                on_batch(step + 1, len(loader))
    finally:
        handle.remove()
    if not features:
        raise ValueError("none of the samples could be read")
    return np.concatenate(features), np.concatenate(indices)


def spread_subset(samples: list[Sample], limit: int) -> list[Sample]:
    """At most ``limit`` samples, evenly spread over the (sorted) list so every source and class stays in."""
    if len(samples) <= limit:
        return list(samples)
    positions = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in positions]


def umap_embedding(features: np.ndarray, seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """A 2-D UMAP of standardised features (umap-learn is imported here: its numba compile takes ~10 s)."""
    import umap  # imported on use (numba: slow to import)

    scaled = (features - features.mean(0)) / (features.std(0) + 1e-8)
    reducer = umap.UMAP(n_neighbors=min(neighbours, len(features) - 1), random_state=seed, n_jobs=1)
    return reducer.fit_transform(scaled).astype(np.float32)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, neighbours: int = 5, folds: int = 5) -> float:
    """Cross-validated k-NN label accuracy of the features: how well they separate real from fake."""

    folds = max(2, min(folds, int(np.bincount(labels).min())))
    pipeline = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=neighbours))
    return float(cross_val_score(pipeline, features, labels, cv=folds).mean())


def embedding(checkpoint: str | os.PathLike, samples: list[Sample], seed: int = 0, progress: bool = True,
              on_batch=None, use_cache: bool = True, branch: str | None = None) -> dict:
    """Penultimate features of a checkpoint on ``samples`` and their 2-D UMAP, cached on disk.

    Keyed by the checkpoint's SHA-256, the sample list and ``branch`` (one branch of a dual-branch
    teacher, see :func:`feature_views`), like the prediction cache, so a restarted dashboard finds
    it again. Returns ``xy [n, 2]``, ``labels``, ``sources``, ``paths`` and ``knn_accuracy``.
    """

    path = resolve_checkpoint(checkpoint)
    key = {"checkpoint": file_digest(path), "samples": samples_digest(samples), "seed": seed, "branch": branch}

    def compute() -> dict:
        features, indices = penultimate_features(load_model(path), samples, progress=progress, on_batch=on_batch,
                                                 branch=branch)
        labels = np.asarray([samples[i].label for i in indices])
        return {"xy": umap_embedding(features, seed), "indices": indices, "knn": knn_accuracy(features, labels)}

    stored = EMBEDDINGS_CACHE.get(key, compute, load_npz, save_npz, use=use_cache)
    return _embedding_result(stored["xy"], stored["indices"], samples, float(stored["knn"]))


def _embedding_result(xy: np.ndarray, indices: np.ndarray, samples: list[Sample], knn: float) -> dict:
    chosen = [samples[i] for i in indices]
    return {"xy": xy, "labels": np.asarray([s.label for s in chosen]), "sources": [s.source for s in chosen],
            "paths": [Path(s.path).name for s in chosen], "knn_accuracy": knn}


