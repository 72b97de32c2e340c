"""Videos: probing, frame sampling and reading with OpenCV, face crops per frame.

A video is read sequentially (``grab`` every frame, ``retrieve`` only the sampled
ones): seeking is unreliable in many containers, and grabbing without decoding the
pixels into an array is cheap. Frame sampling follows the FaceForensics++ tooling:

- ``fixed_num_frames``: ``num_frames`` frames spread evenly over the video (default
  32), or drawn at random (``random=True``, seeded);
- ``fixed_stride``: every ``stride``-th frame.

Faces are found with :mod:`core.data.faces` (YuNet, or the Haar cascade as fallback) on each
sampled frame, with a configurable :class:`FaceOptions` (the published video pipeline kept only the
largest face to cut false positives); each face is cropped as a square ``crop_scale`` times its
longer side. :func:`smooth_tracks` then steadies the boxes over time: a face seen in consecutive
sampled frames at overlapping places is one track, and its box is averaged with its neighbours'.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.data.faces import DETECTORS, YUNET_SCORE_THRESHOLD, Box, Face, detect_faces, iou, resolve_detector_name, square_around

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

    detector: str = "auto"  # core.data.faces.DETECTORS: YuNet when installed, else Haar
    score_threshold: float = YUNET_SCORE_THRESHOLD  # YuNet: faces scoring below it are dropped
    scale_factor: float = 1.15  # Haar pyramid step, raised from OpenCV's 1.1 to cut false positives (and time)
    min_neighbors: int = 5  # Haar: overlapping hits needed, raised from OpenCV's 3 for the same reason
    largest_only: bool = True  # keep only the largest face of a frame
    crop_scale: float = 1.3  # crop side = crop_scale x the face box's longer side (FaceForensics++-style preprocessing)
    smooth: int = 1  # boxes averaged over this many sampled frames on each side of a track (0: raw boxes)

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"face options: detector must be one of {DETECTORS}, got {self.detector!r}")
        if (self.scale_factor <= 1 or self.min_neighbors < 0 or self.crop_scale < 1 or not 0 < self.score_threshold < 1
                or self.smooth < 0):
            raise ValueError("face options: scale_factor > 1, min_neighbors >= 0, crop_scale >= 1, 0 < score_threshold < 1 "
                             "and smooth >= 0 are required")

    def detect(self, image: Image.Image) -> list[Face]:
        """The faces of ``image`` with these options' detector."""
        if resolve_detector_name(self.detector) == "yunet":
            return detect_faces(image, "yunet", score_threshold=self.score_threshold)
        return detect_faces(image, "haar", scale_factor=self.scale_factor, min_neighbors=self.min_neighbors)


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


def find_faces(frame: np.ndarray | Image.Image, options: FaceOptions = FaceOptions()) -> list[Face]:
    """The faces of a frame, largest first (only it with ``largest_only``)."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    faces = options.detect(image)
    return faces[:1] if options.largest_only else faces


def crop_box_of(face: Box, size: tuple[int, int], options: FaceOptions = FaceOptions()) -> Box:
    """The square crop of ``options.crop_scale`` x the face's longer side, inside an image of ``size``."""
    return square_around(face, size, (options.crop_scale - 1) / 2)  # square_around adds margin x side on each side


TRACK_IOU = 0.3  # a face in the next sampled frame overlapping this much is the same face


def smooth_tracks(detections: dict[int, list[Face]], radius: int = 1) -> dict[int, list[Face]]:
    """Boxes steadied over time: each face is linked to the best-overlapping face (IoU >= :data:`TRACK_IOU`) of the
    previous sampled frame; its box becomes the mean of the boxes of its track within ``radius`` sampled frames on each
    side. A frame without a face breaks its tracks; confidences are kept as detected. ``radius=0`` changes nothing."""
    order = sorted(detections)
    if radius <= 0:
        return {index: list(detections[index]) for index in order}
    track_of: dict[tuple[int, int], int] = {}
    members: dict[int, list[tuple[int, Face]]] = {}
    for position, index in enumerate(order):
        previous = detections[order[position - 1]] if position else []
        for number, face in enumerate(detections[index]):
            scores = [(iou(face.box, other.box), k) for k, other in enumerate(previous)]
            best = max(scores, default=(0.0, -1))
            if best[0] >= TRACK_IOU and (order[position - 1], best[1]) in track_of:
                track = track_of[(order[position - 1], best[1])]
            else:
                track = len(members)
            track_of[(index, number)] = track
            members.setdefault(track, []).append((position, face))
    smoothed: dict[int, list[Face]] = {index: [] for index in order}
    for track in members.values():
        for at, (position, face) in enumerate(track):
            window = [f.box for p, f in track[max(0, at - radius):at + radius + 1] if abs(p - position) <= radius]
            box = tuple(int(round(float(np.mean([b[k] for b in window])))) for k in range(4))
            smoothed[order[position]].append(Face(box, face.confidence))
    for index in order:
        smoothed[index].sort(key=lambda face: face.area, reverse=True)
    return smoothed


# a container's signature in its first bytes -> the suffix OpenCV reads it by: what an upload is, whatever its name
VIDEO_SIGNATURES = ((4, b"ftyp", ".mp4"), (0, b"\x1a\x45\xdf\xa3", ".webm"), (0, b"\x00\x00\x01\xba", ".mpg"),
                    (0, b"\x00\x00\x01\xb3", ".mpg"))


def video_container(head: bytes) -> str | None:
    """The video container ``head`` (a file's first bytes) starts like: ``.mp4`` (ISO media: MP4, MOV, M4V), ``.webm``
    (Matroska, WebM), ``.avi`` (RIFF AVI), ``.mpg`` (MPEG program or elementary stream); None for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    return next((suffix for offset, magic, suffix in VIDEO_SIGNATURES if head[offset:offset + len(magic)] == magic), None)


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
