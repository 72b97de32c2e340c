"""Synthetic videos from the embedded benchmark: its faces composited onto moving backgrounds.

Nothing can be downloaded, so the video pipeline is tested and benchmarked on clips
made here: a benchmark image (a face with its own surroundings; real or fake) is
enlarged, feathered into a smooth textured background, and moved along a slow
Lissajous path while the background drifts, with fresh sensor noise in every frame.
Only images whose face the video pipeline's Haar cascade finds are used, so a clip's
face is detectable in most frames. :func:`write_video_dataset` lays clips out as
``<out>/{real,fake}/<source>/<id>.mp4``, a tree ``python -m core data frames`` reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from core.data.datasets import LABEL_NAMES, Sample, resolve_dataset
from core.data.video import FaceOptions, VideoError, find_faces
from core.io import atomic_write

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP80"}


@dataclass(frozen=True)
class ClipConfig:
    seconds: float = 10.0
    fps: float = 25.0
    width: int = 640
    height: int = 360
    face_side: int = 220  # pixels of the pasted benchmark image (its face is about half of it)
    seed: int = 0

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


def _background(config: ClipConfig, rng: np.random.Generator) -> np.ndarray:
    """A smooth colour gradient with 1/f texture, 1.5x the frame so it can drift (drawn at 1/4 size, then enlarged)."""
    full = (int(config.width * 1.5), int(config.height * 1.5))
    height, width = full[1] // 4, full[0] // 4
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    tilt = rng.uniform(-60, 60, (2, 3)).astype(np.float32)
    image = base + (x[..., None] / width) * tilt[0] + (y[..., None] / height) * tilt[1]
    noise = np.fft.fft2(rng.normal(size=(height, width)))
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    texture = np.real(np.fft.ifft2(noise / np.maximum(np.hypot(fx, fy), 1 / max(height, width))))
    image += 25 * (texture / (texture.std() + 1e-8))[..., None]
    return cv2.resize(np.clip(image, 0, 255).astype(np.float32), full, interpolation=cv2.INTER_CUBIC)


def _feather(side: int) -> np.ndarray:
    """An elliptical alpha mask, 1 inside and fading to 0 at the image border."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    radius = np.hypot((x - side / 2) / (side / 2), (y - side / 2) / (side / 2))
    return np.clip((1.0 - radius) / 0.15, 0, 1)[..., None]


def render_clip(face: Image.Image | None, config: ClipConfig) -> list[np.ndarray]:
    """The clip's frames (RGB uint8): ``face`` moving over a drifting background, or no face at all."""
    rng = np.random.default_rng(config.seed)
    background = _background(config, rng)
    pasted = None
    if face is not None:
        pasted = np.asarray(face.convert("RGB").resize((config.face_side, config.face_side), Image.Resampling.BICUBIC),
                            dtype=np.float32)
        alpha = _feather(config.face_side)
    phase = rng.uniform(0, 2 * np.pi, 2)
    noise_bank = rng.normal(0, 2.0, (8, config.height, config.width, 3)).astype(np.float32)  # sensor noise, varied per frame
    frames = []
    for index in range(config.frames):
        t = index / config.fps
        drift_x = int((0.25 + 0.2 * np.sin(0.3 * t + phase[0])) * config.width)
        drift_y = int((0.25 + 0.2 * np.cos(0.25 * t + phase[1])) * config.height)
        frame = background[drift_y:drift_y + config.height, drift_x:drift_x + config.width].copy()
        if pasted is not None:
            free_x, free_y = config.width - config.face_side, config.height - config.face_side
            left = int(free_x * (0.5 + 0.4 * np.sin(0.7 * t + phase[0])))
            top = int(free_y * (0.5 + 0.4 * np.sin(0.5 * t + phase[1])))
            region = frame[top:top + config.face_side, left:left + config.face_side]
            region[:] = alpha * pasted + (1 - alpha) * region
        frame += noise_bank[rng.integers(len(noise_bank))]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """Write RGB frames with OpenCV (codec by suffix: .mp4 mp4v, .avi MJPG, .webm VP8), atomically."""
    path = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
    if fourcc is None:
        raise VideoError(f"{path}: write .mp4, .avi or .webm")
    height, width = frames[0].shape[:2]

    def write(tmp: str) -> None:
        target = tmp + path.suffix  # OpenCV picks the container from the suffix
        writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        try:
            if not writer.isOpened():
                raise VideoError(f"OpenCV cannot write {fourcc} into {path.suffix}")
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            os.replace(target, tmp)
        finally:
            writer.release()
            Path(target).unlink(missing_ok=True)

    atomic_write(path, write)
    return path


def detectable(samples: list[Sample], count: int, config: ClipConfig, options: FaceOptions = FaceOptions()) -> list[Sample]:
    """The first ``count`` samples whose face the video pipeline finds in at least 2 of 3 probe frames of a clip."""
    probe = ClipConfig(**{**config.__dict__, "seconds": 3 / config.fps * 12, "fps": config.fps / 12})  # 3 frames, 0.5 s apart
    chosen = []
    for sample in samples:
        with Image.open(sample.path) as image:
            frames = render_clip(image.convert("RGB"), probe)
        if sum(bool(find_faces(frame, options)) for frame in frames) >= 2:
            chosen.append(sample)
            if len(chosen) == count:
                break
    return chosen


def write_video_dataset(out: str | os.PathLike, samples: list[Sample], per_label: int, config: ClipConfig = ClipConfig(),
                        suffix: str = ".mp4", progress: bool = True) -> list[dict]:
    """``per_label`` real and fake clips from ``samples`` into ``<out>/{real,fake}/<source>/<id><suffix>``.

    Returns one record per clip (path, label, source, benchmark image). Fails when the
    samples hold too few detectable faces of a label.
    """
    out, records = Path(out), []
    chosen = {label: detectable([s for s in samples if s.label == label], per_label, config) for label in LABEL_NAMES}
    for label, found in chosen.items():
        if len(found) < per_label:
            raise VideoError(f"only {len(found)} {LABEL_NAMES[label]} benchmark faces are detectable; asked for {per_label}")
    jobs = [(label, index, sample) for label, found in chosen.items() for index, sample in enumerate(found)]
    for label, index, sample in tqdm(jobs, desc="videos", unit="video", disable=not progress):
        name = f"{sample.source}_{LABEL_NAMES[label]}_{index:03d}"
        path = out / LABEL_NAMES[label] / sample.source / f"{name}{suffix}"
        clip = ClipConfig(**{**config.__dict__, "seed": config.seed * 1000 + label * 100 + index})
        with Image.open(sample.path) as face:
            write_video(path, render_clip(face.convert("RGB"), clip), clip.fps)
        records.append({"path": str(path), "label": label, "source": sample.source, "image": sample.path})
    return records


def sample_clip(label: int, out_dir: str | os.PathLike, source: str = "faceswap", config: ClipConfig = ClipConfig(),
                data_root: str | os.PathLike | None = None) -> Path:
    """One clip of a detectable benchmark test face of ``label`` (made once, then reused), e.g. for the dashboard."""
    path = Path(out_dir) / f"{source}-{LABEL_NAMES[label]}-{config.width}x{config.height}-{config.frames}f-{config.seed}.webm"
    if not path.is_file():
        write_video(path, render_clip(_clip_face(label, source, config, data_root), config), config.fps)
    return path


def clip_preview(label: int, source: str = "faceswap", config: ClipConfig = ClipConfig(),
                 data_root: str | os.PathLike | None = None) -> np.ndarray:
    """The first frame of :func:`sample_clip`'s clip (RGB uint8), without rendering or encoding the rest of it."""
    return render_clip(_clip_face(label, source, config, data_root), replace(config, seconds=1 / config.fps))[0]


def _clip_face(label: int, source: str, config: ClipConfig, data_root: str | os.PathLike | None) -> Image.Image:
    """The first detectable benchmark test face of ``label``: the face a sample clip moves around."""

    samples = [s for s in resolve_dataset(f"synthetic:{source}", data_root).split("test") if s.label == label]
    found = detectable(samples, 1, config)
    if not found:
        raise VideoError(f"no detectable {LABEL_NAMES[label]} face in the {source} test split")
    with Image.open(found[0].path) as face:
        return face.convert("RGB")
