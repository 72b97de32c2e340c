"""Video-level detection: sampled frames -> face crops -> per-face scores -> a per-video verdict, and an annotated video.

:func:`analyse_video` runs the FaceForensics++-style pipeline on one video file:

1. **decode**: the sampled frames (:mod:`core.data.video`; every other frame is grabbed, not decoded);
2. **detect**: faces on each sampled frame (YuNet, or Haar as fallback: :class:`core.data.video.FaceOptions`), boxes
   smoothed along each face's track (:func:`core.data.video.smooth_tracks`), square crops;
3. **classify**: every crop through the model in batches (``model.preprocess`` then the single logit);
4. **aggregate**: the video score is the ``mean`` (default), ``median`` or ``max`` of all face
   probabilities; a frame's score is its most suspicious face's. Frames without a face
   are listed in ``frames_without_face``, never silently dropped; with no face at all the
   verdict is ``None`` and says so;
5. **encode** (when ``out`` is given): every frame of the input again, each face box of the
   nearest sampled frame drawn red (fake) or green (real) with its probability, and the
   video verdict in a banner; same frame count and fps as the input. Codec by suffix:
   ``.mp4`` is H.264 when the OpenCV build can encode it and MPEG-4 Part 2 (``mp4v``,
   which browsers do not play) otherwise, with a warning; ``.webm`` is VP8, which every
   major browser plays; ``.avi`` is Motion JPEG.

Each stage's wall time is in ``timing`` (seconds), so the cost of a verdict is visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from core.data.datasets import FAKE, LABEL_NAMES, REAL
from core.data.video import (
    FaceOptions,
    SamplingOptions,
    VideoError,
    crop,
    crop_box_of,
    find_faces,
    iterate_frames,
    probe_video,
    sample_frame_indices,
    smooth_tracks,
)
from core.evaluation.ood import UNRELIABLE, Scorer

log = logging.getLogger(__name__)

AGGREGATES: dict[str, Callable[[list[float]], float]] = {"mean": statistics.fmean, "median": statistics.median, "max": max}
CODECS = {".mp4": ("avc1", "mp4v"), ".webm": ("VP80",), ".avi": ("MJPG",)}  # preferred first
BROWSER_CODECS = {"avc1", "VP80"}
FAKE_COLOUR, REAL_COLOUR = (0, 0, 230), (0, 190, 0)  # BGR, as OpenCV draws


@dataclass(frozen=True)
class VideoOptions:
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    faces: FaceOptions = field(default_factory=FaceOptions)
    aggregate: str = "mean"
    threshold: float = 0.5  # video score above it -> fake
    batch_size: int = 32

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {sorted(AGGREGATES)}, got {self.aggregate!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")


Progress = Callable[[str, int, int], None]  # (stage, done, total)


@torch.inference_mode()
def _classify(model: nn.Module, crops: list, batch_size: int, ood=None) -> tuple[list[float], list[float] | None]:
    """``(P(fake) per crop, ood score per crop or None)``, in batches, one forward pass each."""

    scorer = Scorer(model, ood)
    probabilities, scores = [], []
    for start in range(0, len(crops), batch_size):
        batch = torch.stack([model.preprocess(image) for image in crops[start:start + batch_size]])
        logits, batch_scores = scorer(batch)
        probabilities += torch.sigmoid(logits.float()).tolist()
        scores += [] if batch_scores is None else batch_scores.tolist()
    return probabilities, (scores if scorer.ood is not None else None)


def analyse_video(path: str | os.PathLike, model: nn.Module, options: VideoOptions = VideoOptions(),
                  out: str | os.PathLike | None = None, progress: bool = True, on_progress: Progress | None = None,
                  ood=None) -> dict:
    """Per-frame and per-video verdicts of ``model`` on the video at ``path`` (and the annotated video at ``out``).

    With ``ood`` (the checkpoint's :class:`core.evaluation.ood.OODModel`) every face also gets its out-of-distribution
    score, and the video its median: above 1, the verdict is marked unreliable."""
    notify = on_progress or (lambda stage, done, total: None)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    info = probe_video(path)
    indices = sample_frame_indices(info.frames, options.sampling)
    frames = {}
    for index, frame in tqdm(iterate_frames(path, indices), total=len(indices), desc="decode", unit="frame",
                             disable=not progress, leave=False):
        frames[index] = frame
        notify("decode", len(frames), len(indices))
    timing["decode_s"] = time.perf_counter() - started
    if not frames:
        raise VideoError(f"{path}: none of the sampled frames could be decoded")

    started = time.perf_counter()
    detections = {}
    for done, (index, frame) in enumerate(tqdm(frames.items(), desc="detect", unit="frame", disable=not progress, leave=False)):
        detections[index] = find_faces(frame, options.faces)
        notify("detect", done + 1, len(frames))
    detections = smooth_tracks(detections, options.faces.smooth)
    timing["detect_s"] = time.perf_counter() - started

    started = time.perf_counter()
    crops = [(index, face, crop_box_of(face.box, (frames[index].shape[1], frames[index].shape[0]), options.faces))
             for index, found in detections.items() for face in found]
    probabilities, ood_scores = _classify(model, [crop(frames[index], box) for index, _, box in crops], options.batch_size, ood)
    timing["classify_s"] = time.perf_counter() - started
    notify("classify", 1, 1)

    per_frame = {index: {"index": index, "time_s": round(index / info.fps, 3), "faces": 0, "boxes": [], "face_confidences": [], "crops": [],
                         "scores": [], "score": None} for index in frames}
    for number, ((index, face, box), probability) in enumerate(zip(crops, probabilities, strict=True)):
        record = per_frame[index]
        if ood_scores is not None:
            record.setdefault("ood_scores", []).append(round(ood_scores[number], 4))
        record["faces"] += 1
        record["boxes"].append(list(face.box))
        record["face_confidences"].append(face.confidence)
        record["crops"].append(list(box))
        record["scores"].append(round(probability, 6))
        record["score"] = max(record["score"] or 0.0, round(probability, 6))
    records = [per_frame[index] for index in sorted(per_frame)]
    video_score = AGGREGATES[options.aggregate](probabilities) if probabilities else None
    label = None if video_score is None else LABEL_NAMES[FAKE if video_score > options.threshold else REAL]
    result = {
        "video": str(path), "info": {"frames": info.frames, "fps": info.fps, "width": info.width, "height": info.height,
                                     "seconds": round(info.seconds, 3)},
        "sampled": len(records), "frames": records, "faces": [r["faces"] for r in records], "faces_total": len(probabilities),
        "frames_without_face": [r["index"] for r in records if r["faces"] == 0],
        "video_score": video_score, "label": label, "aggregate": options.aggregate, "threshold": options.threshold,
        "verdict": _verdict(label, video_score, len(records), len(probabilities)),
        "ood_score": None, "in_distribution": None,
    }
    if ood_scores:

        result["ood_score"] = round(statistics.median(ood_scores), 4)
        result["in_distribution"] = result["ood_score"] <= 1
        result["faces_in_distribution"] = sum(score <= 1 for score in ood_scores)
        if not result["in_distribution"]:
            result["note"] = UNRELIABLE
            result["verdict"] += f"; {UNRELIABLE} (median ood score {result['ood_score']:.2f} > 1)"
    if out is not None:
        started = time.perf_counter()
        result["output"] = annotate_video(path, out, info, records, label, video_score, options.threshold, progress, notify)
        timing["encode_s"] = time.perf_counter() - started
    result["timing"] = {**{k: round(v, 3) for k, v in timing.items()}, "total_s": round(sum(timing.values()), 3)}
    return result


def _verdict(label: str | None, score: float | None, sampled: int, faces: int) -> str:
    if label is None:
        return f"no face found in any of the {sampled} sampled frames: no verdict"
    return f"{label.upper()} (P(fake) {score:.3f} over {faces} faces in {sampled} sampled frames)"


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null meanwhile: FFmpeg and OpenCV log from C straight to it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured in a notebook): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_writer(out: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """An OpenCV writer for ``out`` with the best codec its suffix allows in this build, and that codec's tag."""
    if out.suffix.lower() not in CODECS:
        raise VideoError(f"{out}: the annotated video must be .mp4, .webm or .avi")
    for fourcc in CODECS[out.suffix.lower()]:
        with _native_stderr_silenced():  # a missing codec is expected (we say so ourselves): no FFmpeg/OpenCV noise
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, fourcc
        writer.release()
    raise VideoError(f"this OpenCV build cannot write {out.suffix} video")


def annotate_video(path: str | os.PathLike, out: str | os.PathLike, info, records: list[dict], label: str | None,
                   video_score: float | None, threshold: float = 0.5, progress: bool = True, notify: Progress | None = None) -> dict:
    """Every input frame with the nearest sampled frame's face boxes and scores, plus the verdict banner."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sampled = np.array([r["index"] for r in records])
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")  # OpenCV picks the container by suffix; renamed when complete
    writer, fourcc = open_writer(tmp, info.fps, (info.width, info.height))
    banner = "no face found" if label is None else f"video: {label.upper()}  P(fake) {video_score:.2f}"
    written = 0
    try:
        for index, frame in tqdm(iterate_frames(path), total=info.frames, desc="encode", unit="frame", disable=not progress,
                                 leave=False):
            record = records[int(np.abs(sampled - index).argmin())]
            image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            _draw(image, record, banner, label, threshold)
            writer.write(image)
            written += 1
            if notify is not None and written % 10 == 0:
                notify("encode", written, info.frames)
        writer.release()
        os.replace(tmp, out)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    if fourcc not in BROWSER_CODECS:
        log.warning("this OpenCV build has no H.264 encoder: %s is MPEG-4 Part 2 (%s), which browsers do not play; "
                    "write a .webm (VP8) for the browser", out, fourcc)
    return {"path": str(out), "codec": fourcc, "frames": written, "fps": info.fps, "browser_playable": fourcc in BROWSER_CODECS}


def _draw(image: np.ndarray, record: dict, banner: str, label: str | None, threshold: float) -> None:
    thickness = max(2, round(max(image.shape[:2]) / 300))
    scale = max(0.5, max(image.shape[:2]) / 900)
    for (x, y, w, h), score in zip(record["boxes"], record["scores"], strict=True):
        colour = FAKE_COLOUR if score > threshold else REAL_COLOUR
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"{'FAKE' if score > threshold else 'REAL'} {score:.2f}"
        cv2.putText(image, text, (x, max(0, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    colour = (200, 200, 200) if label is None else FAKE_COLOUR if label == LABEL_NAMES[FAKE] else REAL_COLOUR
    cv2.rectangle(image, (0, 0), (image.shape[1], round(34 * scale)), (0, 0, 0), -1)
    cv2.putText(image, banner, (8, round(25 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
