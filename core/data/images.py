"""Safe image decoding, the dataset wrapper that skips bad files, and the transforms.

Scraped folders hold corrupt, truncated, zero-byte and mislabelled files. Decoding
happens lazily in ``__getitem__``: a file that fails yields ``None``, and
:func:`collate_skipping` drops it from the batch and counts it, so training and
evaluation never crash on one bad file and always report how many they skipped.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from core.config import AUGMENTATIONS
from core.data.datasets import Sample
from core.io import DiskCache, load_json, save_json

# PIL's decompression-bomb guard, enforced as an error rather than a warning.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
MIN_IMAGE_SIDE = 8


# Why a file is skipped, counted per reason in every run and evaluation
SKIP_REASONS = ("missing file", "zero-byte", "truncated", "corrupt", "not an image", "too small", "too large")


class ImageLoadError(ValueError):
    """A file that cannot be used as an image: the message says which and why; ``reason`` is one of SKIP_REASONS."""

    def __init__(self, message: str, reason: str = "corrupt"):
        super().__init__(message)
        self.reason = reason


def load_image(source: str | os.PathLike | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode ``source`` fully into an upright 8-bit RGB image, or raise ImageLoadError.

    ``source`` is a path or a binary file object (an upload); messages start with
    ``name``, by default the path or the file object's ``name``.
    Handles EXIF rotation, palette/CMYK/16-bit/grey+alpha modes (alpha is
    composited on white), and refuses empty, truncated, tiny or bomb-sized files;
    the size is checked on the header, before any pixel is decoded.
    """
    is_path = isinstance(source, (str, os.PathLike))
    label = name or (os.fspath(source) if is_path else getattr(source, "name", "upload"))
    if is_path and not os.path.isfile(source):
        raise ImageLoadError(f"{label}: no such file", "missing file")
    try:
        if _byte_size(source) == 0:
            raise ImageLoadError(f"{label}: empty file (0 bytes)", "zero-byte")
        with Image.open(source) as image:
            # Image.open already refuses twice the limit; this also covers the band between the limit
            # and twice it when the DecompressionBombWarning filter above has been reset (pytest does).
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise ImageLoadError(f"{label}: refused, {image.width}x{image.height} is larger than "
                                     f"{Image.MAX_IMAGE_PIXELS:,} pixels", "too large")
            image.load()  # decode now, so truncation fails here and not in a worker later
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                image = image.point(lambda value: value / 256).convert("L")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(canvas, rgba)
            image = image.convert("RGB")
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(f"{label}: refused, larger than {Image.MAX_IMAGE_PIXELS:,} pixels (decompression-bomb guard)",
                             "too large") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label}: not an image, or a format Pillow cannot read", "not an image") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise ImageLoadError(f"{label}: not a readable image ({type(error).__name__}: {error})", reason) from None
    if min(image.size) < MIN_IMAGE_SIDE:
        raise ImageLoadError(f"{label}: too small ({image.size[0]}x{image.size[1]} px, need >= {MIN_IMAGE_SIDE})",
                             "too small")
    return image


def _byte_size(source: str | os.PathLike | BinaryIO) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    start = source.tell()
    size = source.seek(0, os.SEEK_END) - start
    source.seek(start)
    return size


@dataclass(frozen=True)
class Skipped:
    """What :class:`ImageDataset` yields for a file that fails to load: why (one of SKIP_REASONS)."""

    reason: str


class ImageDataset(Dataset):
    """Samples -> (image tensor, label, index); a :class:`Skipped` for a file that fails to load."""

    def __init__(self, samples: Sequence[Sample], transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except ImageLoadError as error:
            return Skipped(error.reason)
        return self.transform(image), sample.label, index


def collate_skipping(batch: list) -> dict:
    """Stack the good items; count the ones that failed to load, in all and per reason."""
    good = [item for item in batch if item is not None and not isinstance(item, Skipped)]
    reasons: dict[str, int] = {}
    for item in batch:
        if item is None or isinstance(item, Skipped):
            reason = item.reason if item is not None else "corrupt"
            reasons[reason] = reasons.get(reason, 0) + 1
    if not good:
        return {"images": None, "labels": None, "indices": None, "skipped": len(batch), "skipped_reasons": reasons}
    images, labels, indices = zip(*good, strict=True)
    return {
        "images": torch.stack(images),
        "labels": torch.tensor(labels, dtype=torch.float32),
        "indices": torch.tensor(indices, dtype=torch.long),
        "skipped": len(batch) - len(good),
        "skipped_reasons": reasons,
    }


def add_reasons(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """``total`` plus ``more``, per skip reason (in place; returned for chaining)."""
    for reason, count in more.items():
        total[reason] = total.get(reason, 0) + count
    return total


# ----------------------------------------------------------------------------
# Normalisation statistics (computed once per dataset and cached, as in the paper).
STATS_VERSION = 1


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
STATS_IMAGES = 5000  # an evenly spread subset this large pins mean/std to ~1e-3


def _stats_key(samples: Sequence[Sample], image_size: int) -> str:
    digest = hashlib.sha256(str(image_size).encode())
    for sample in samples:
        digest.update(sample.path.encode())
        try:
            stat = os.stat(sample.path)
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()[:20]


def dataset_statistics(
    samples: Sequence[Sample], image_size: int, cache_dir: Path | None = None, progress: bool = True
) -> Normalization:
    """Per-channel mean/std of the resized training images, cached on disk by content key."""
    step = max(1, -(-len(samples) // STATS_IMAGES))  # ceil: at most STATS_IMAGES images
    subset = list(samples)[::step]
    cache = DiskCache("statistics", STATS_VERSION, ".json", root=None if cache_dir is None else Path(cache_dir))

    def compute() -> dict:
        stats = _statistics(subset, image_size, progress)
        return {"mean": stats.mean, "std": stats.std, "images": len(subset)}

    def load(path: Path) -> dict:  # a damaged entry (not a mapping of two 3-vectors) raises here: a miss
        stored = load_json(path)
        return {"mean": [float(v) for v in stored["mean"]][:3], "std": [float(v) for v in stored["std"]][:3]}

    stored = cache.get(_stats_key(subset, image_size), compute, load, save_json, use=cache_dir is not None)
    return Normalization(tuple(stored["mean"]), tuple(stored["std"]))


def _statistics(subset: Sequence[Sample], image_size: int, progress: bool) -> Normalization:
    """Per-channel mean and std over the resized pixels of ``subset`` (unreadable images left out)."""
    resize = v2.Compose([v2.PILToTensor(), v2.Resize((image_size, image_size), antialias=True)])
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for sample in tqdm(subset, desc="dataset mean/std", unit="img", disable=not progress, leave=False):
        try:
            image = resize(load_image(sample.path)).to(torch.float64) / 255.0
        except ImageLoadError:
            continue
        total += image.sum(dim=(1, 2))
        total_sq += (image * image).sum(dim=(1, 2))
        pixels += image.shape[1] * image.shape[2]
    if pixels == 0:
        raise ImageLoadError("no readable image to compute the dataset mean/std from")
    mean = total / pixels
    std = (total_sq / pixels - mean * mean).clamp_min(1e-12).sqrt()
    return Normalization(tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std))


def eval_transform(image_size: int, normalization: Normalization) -> v2.Compose:
    """Resize to the model's input and normalise: the exact preprocessing of a checkpoint."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(normalization.mean), list(normalization.std)),
    ])


def train_transform(image_size: int, normalization: Normalization, augment: str = "paper") -> v2.Compose:
    """Training-time preprocessing.

    - ``paper``: the published augmentation: flip, rotation, random crop, colour
      jitter, random affine.
    - ``light``: flip, integer-pixel random crop and colour jitter only. Rotation and
      affine resampling blur away pixel-level generator traces (checkerboards, JPEG
      grids) that the small embedded images depend on, so the embedded presets use it.
    - ``none``: resize and normalise only.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    pad = max(1, round(image_size * 0.0625))
    steps: list = [v2.PILToTensor(), v2.Resize((image_size, image_size), antialias=True)]
    if augment == "paper":
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.RandomCrop(image_size, padding=pad, padding_mode="reflect"),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            v2.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        ]
    elif augment == "light":
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomCrop(image_size, padding=pad, padding_mode="reflect"),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(normalization.mean), list(normalization.std))]
    return v2.Compose(steps)
