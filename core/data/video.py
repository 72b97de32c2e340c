"""Videos: probing, frame sampling and reading with OpenCV, face crops per frame.

A video is read sequentially (``grab`` every frame, ``retrieve`` only the sampled
ones): seeking is unreliable in many containers, and grabbing without decoding the
pixels into an array is cheap. Frame sampling follows the FaceForensics++ tooling:

- ``fixed_num_frames``: ``num_frames`` frames spread evenly over the video (default
  32), or drawn at random (``random=True``, seeded);
- ``fixed_stride``: every ``stride``-th frame.

Faces are found with the Haar cascade of :mod:`core.data.faces`, on each sampled frame,
with a configurable :class:`FaceOptions` (the published video pipeline raised
``scaleFactor`` and ``minNeighbors`` and kept only the largest face to cut false
positives); each face is cropped as a square ``crop_scale`` times its longer side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.data.faces import Box, detect_faces, square_around

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
STRATEGIES = ("fixed_num_frames", "fixed_stride")
MAX_VIDEO_PIXELS = 3840 * 2160  # a frame larger than 4K is refused before any decoding


class VideoError(ValueError):
    """A file that cannot be used as a video (reason in the message)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int
    fps: float
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and cropped in video frames."""

    scale_factor: float = 1.15  # Haar pyramid step, raised from OpenCV's 1.1 to cut false positives (and time)
    min_neighbors: int = 5  # overlapping hits needed, raised from OpenCV's 3 for the same reason
    largest_only: bool = True  # keep only the largest face of a frame
    crop_scale: float = 1.3  # crop side = crop_scale x the face box's longer side (FaceForensics++-style preprocessing)

    def __post_init__(self):
        if self.scale_factor <= 1 or self.min_neighbors < 0 or self.crop_scale < 1:
            raise ValueError("face options: scale_factor > 1, min_neighbors >= 0 and crop_scale >= 1 are required")


@dataclass(frozen=True)
class SamplingOptions:
    strategy: str = "fixed_num_frames"
    num_frames: int = 32
    stride: int = 10
    random: bool = False  # fixed_num_frames: random frames (seeded) instead of evenly spread
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"frame sampling strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError("num_frames and stride must be >= 1")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of a video, or VideoError for a missing, corrupt, empty or oversized file."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: not a readable video (OpenCV/FFmpeg cannot open it)")
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if width * height > MAX_VIDEO_PIXELS:
            raise VideoError(f"{path}: refused, {width}x{height} frames are larger than 4K ({MAX_VIDEO_PIXELS:,} pixels)")
        if frames <= 0 or width <= 0 or height <= 0:  # some containers do not say: count by grabbing
            frames = 0
            while capture.grab():
                frames += 1
        if frames <= 0:
            raise VideoError(f"{path}: the video has no frames")
    finally:
        capture.release()
    return VideoInfo(str(path), frames, fps if fps > 0 else 25.0, width, height)


def sample_frame_indices(total: int, options: SamplingOptions) -> list[int]:
    """Sorted, distinct frame indices in ``[0, total)`` chosen by ``options``."""
    if total <= 0:
        return []
    if options.strategy == "fixed_stride":
        return list(range(0, total, options.stride))
    count = min(options.num_frames, total)
    if options.random:
        rng = np.random.default_rng(options.seed)
        return sorted(int(i) for i in rng.choice(total, size=count, replace=False))
    # evenly spread: the centres of `count` equal segments, so the first and last frames are not over-used
    return sorted({int((i + 0.5) * total / count) for i in range(count)})


def iterate_frames(path: str | os.PathLike, indices: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` of every frame, or of ``indices`` only (read sequentially, grabbed not decoded in between).

    Stops early (without error) when the container holds fewer frames than it announced;
    the caller sees which indices came back.
    """
    wanted = None if indices is None else set(indices)
    last = None if indices is None else max(indices, default=-1)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: not a readable video (OpenCV/FFmpeg cannot open it)")
    try:
        index = 0
        while last is None or index <= last:
            if not capture.grab():
                return
            if wanted is None or index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def find_faces(frame: np.ndarray | Image.Image, options: FaceOptions = FaceOptions()) -> list[tuple[Box, Box]]:
    """``[(face box, square crop box)]`` of a frame, largest face first (only it with ``largest_only``)."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    faces = detect_faces(image, scale_factor=options.scale_factor, min_neighbors=options.min_neighbors)
    if options.largest_only:
        faces = faces[:1]
    margin = (options.crop_scale - 1) / 2  # square_around adds margin x side on each side
    return [(face, square_around(face, image.size, margin)) for face in faces]


def crop(frame: np.ndarray, box: Box) -> Image.Image:
    x, y, w, h = box
    return Image.fromarray(np.ascontiguousarray(frame[y:y + h, x:x + w]))


def list_videos(root: str | os.PathLike) -> list[Path]:
    """Every video file under ``root``, sorted (hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise VideoError(f"{root}: not a folder of videos")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))
