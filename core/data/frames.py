"""A folder of videos -> a dataset of face crops (``python -m core data frames VIDEO_ROOT --out DIR``).

Each video is labelled from its path:

- FaceForensics++: ``original_sequences/<youtube|actors>/...`` is real (category
  ``original``), ``manipulated_sequences/<method>/...`` is fake (category ``<method>``:
  Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter, ...);
- anything else: the first folder named like a class (``real``/``original``/...,
  ``fake``/``manipulated``/...) gives the label, and the folder under it (if any) the
  category.

Frames are sampled per video (:mod:`core.data.video`), the largest face of each is
cropped (square, ``crop_scale`` x the face) and saved as PNG. Class balance follows
the published practice: a real video gives ``frames_per_video`` crops and a fake one
proportionally fewer (``frames_per_video x real videos / fake videos``, at least 1),
since FaceForensics++ has several manipulated videos per original.

The split is by video *group*, so frames of one video, and an original with its
manipulations (FaceForensics++ names a fake ``<target>_<source>``), never straddle
train and test: groups are ordered by a hash of their id and cut 80/10/10, those
with a real video and the fake-only ones separately, so every split has both labels.

Output (a CSV-manifest dataset that ``--data DIR`` trains and evaluates on, with
per-category accuracy and video-level AUC)::

    DIR/manifest.csv             path,label,split,source,video_id (source = category)
    DIR/frames.json              configuration, per-video counts (sampled, faces, frames without a face)
    DIR/videos/<category>__<video>/<frame>.png
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from core.data.datasets import CLASS_SYNONYMS, FAKE, LABEL_NAMES, REAL, SPLITS, TEST_FRACTION, VAL_FRACTION
from core.data.video import (
    FaceOptions,
    SamplingOptions,
    VideoError,
    crop,
    crop_box_of,
    find_faces,
    iterate_frames,
    list_videos,
    probe_video,
    sample_frame_indices,
)
from core.io import atomic_write, atomic_write_json, atomic_write_text

FFPP_REAL, FFPP_FAKE = "original_sequences", "manipulated_sequences"


@dataclass(frozen=True)
class Item:
    """One thing face crops are taken from, with its label and split already decided (core.data.benchmarks):

    - a video file (``source``; the common case);
    - a video given as its frame images (``frames``: DeepfakeBench's extracted frames; ``source`` is their folder);
    - one face of one image (``box``: OpenForensics' annotated faces, cropped as annotated, no detector).
    """

    source: str
    label: int
    category: str  # the manipulation method or real category, e.g. "original", "Deepfakes", "Celeb-synthesis"
    video_id: str  # unique in the dataset; the faces of one OpenForensics image share their image's id
    group: str  # identity group: items of one group share a split unless the authors' split files say otherwise
    split: str  # train | val | test
    frames: tuple[str, ...] = ()
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the image's pixels


@dataclass(frozen=True)
class VideoEntry:
    path: str
    label: int
    category: str
    video_id: str  # unique in the dataset: <category>/<stem>
    group: str  # videos of one group share a split


def label_video(path: Path, root: Path) -> VideoEntry | None:
    """Label, category, id and split group of a video from its path under ``root``; None when no folder says."""
    parts = path.relative_to(root).parts[:-1]
    lowered = [part.lower() for part in parts]
    stem = path.stem
    if FFPP_REAL in lowered:
        label, category = REAL, "original"
    elif FFPP_FAKE in lowered:
        position = lowered.index(FFPP_FAKE)
        label, category = FAKE, parts[position + 1] if position + 1 < len(parts) else "manipulated"
    else:
        named = [i for i, part in enumerate(lowered) if part in CLASS_SYNONYMS]
        if not named:
            return None
        position = named[0]
        label = CLASS_SYNONYMS[lowered[position]]
        category = parts[position + 1] if position + 1 < len(parts) else LABEL_NAMES[label]
    group = stem.split("_")[0] if FFPP_REAL in lowered or FFPP_FAKE in lowered else f"{category}/{stem}"
    return VideoEntry(str(path), label, category, f"{category}/{stem}", group)


def split_groups(entries: list[VideoEntry]) -> dict[str, str]:
    """group -> split, stratified by label: the groups holding a real video, then the fake-only groups, are each
    ordered by SHA-1 of their id and cut 80/10/10 (at least one group per split when there are 3 or more)."""
    with_real = {e.group for e in entries if e.label == REAL}
    fake_only = {e.group for e in entries} - with_real
    splits = {}
    for groups in (with_real, fake_only):
        ordered = sorted(groups, key=lambda g: hashlib.sha1(g.encode("utf-8")).hexdigest())
        count = len(ordered)
        n_val = max(1, round(count * VAL_FRACTION)) if count >= 3 else 0
        n_test = max(1, round(count * TEST_FRACTION)) if count >= 3 else 0
        n_train = count - n_val - n_test
        for position, group in enumerate(ordered):
            splits[group] = "train" if position < n_train else "val" if position < n_train + n_val else "test"
    return splits


def frames_per_label(entries: list[VideoEntry], frames_per_video: int, balance: bool) -> dict[int, int]:
    """Crops to sample per real and per fake video (fewer per fake video when fakes outnumber reals)."""
    reals, fakes = sum(e.label == REAL for e in entries), sum(e.label == FAKE for e in entries)
    if not balance or not reals or not fakes:
        return {REAL: frames_per_video, FAKE: frames_per_video}
    ratio = reals / fakes
    return {REAL: max(1, round(frames_per_video / ratio)) if ratio > 1 else frames_per_video,
            FAKE: max(1, round(frames_per_video * ratio)) if ratio < 1 else frames_per_video}


def extract_face_dataset(root: str | os.PathLike, out: str | os.PathLike, frames_per_video: int = 32, balance: bool = True,
                         size: int = 256, faces: FaceOptions = FaceOptions(), random_frames: bool = False, seed: int = 0,
                         progress: bool = True) -> dict:
    """Write the face-crop dataset of every labelled video under ``root`` into ``out``; returns the summary."""
    from PIL import Image

    root, out = Path(root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise VideoError(f"{out} is not empty: choose a new --out folder (nothing was written)")
    videos = list_videos(root)
    entries = [entry for entry in (label_video(path, root) for path in videos) if entry is not None]
    unlabelled = len(videos) - len(entries)
    if not entries:
        raise VideoError(f"no labelled videos under {root}: expected FaceForensics++ folders ({FFPP_REAL}, {FFPP_FAKE}) "
                         f"or real/fake folders ({len(videos)} videos found)")
    counts = frames_per_label(entries, frames_per_video, balance)
    splits = split_groups(entries)
    rows, per_video = [], []
    for entry in tqdm(entries, desc="videos", unit="video", disable=not progress):
        record = {"video_id": entry.video_id, "path": entry.path, "label": entry.label, "category": entry.category,
                  "split": splits[entry.group], "sampled": 0, "faces": 0, "frames_without_face": []}
        try:
            info = probe_video(entry.path)
        except VideoError as error:
            per_video.append({**record, "error": str(error)})
            continue
        sampling = SamplingOptions(num_frames=counts[entry.label], random=random_frames, seed=seed)
        folder = out / "videos" / f"{entry.category}__{Path(entry.path).stem}"
        for index, frame in iterate_frames(entry.path, sample_frame_indices(info.frames, sampling)):
            record["sampled"] += 1
            found = find_faces(frame, faces)
            if not found:
                record["frames_without_face"].append(index)
                continue
            face = crop(frame, crop_box_of(found[0].box, (frame.shape[1], frame.shape[0]), faces))
            if size:
                face = face.resize((size, size), Image.Resampling.BICUBIC)
            target = folder / f"{index:06d}.png"
            atomic_write(target, lambda tmp, image=face: image.save(tmp, format="PNG"))
            record["faces"] += 1
            rows.append({"path": target.relative_to(out).as_posix(), "label": entry.label, "split": record["split"],
                         "source": entry.category, "video_id": entry.video_id})
        per_video.append(record)
    if not rows:
        raise VideoError(f"no face was found in any sampled frame of the {len(entries)} videos under {root}")
    table = pd.DataFrame(rows, columns=["path", "label", "split", "source", "video_id"])
    atomic_write_text(out / "manifest.csv", table.to_csv(index=False))
    summary = {
        "root": str(root), "out": str(out), "videos": len(entries), "unlabelled_videos": unlabelled,
        "crops": len(rows), "frames_per_video": {LABEL_NAMES[k]: v for k, v in counts.items()},
        "crops_per_split": {split: int((table["split"] == split).sum()) for split in SPLITS},
        "crops_per_label": {LABEL_NAMES[k]: int((table["label"] == k).sum()) for k in (REAL, FAKE)},
        "frames_without_face": sum(len(v["frames_without_face"]) for v in per_video),
        "unreadable_videos": [v["path"] for v in per_video if "error" in v],
        "config": {"faces": asdict(faces), "size": size, "balance": balance, "random_frames": random_frames, "seed": seed},
    }
    atomic_write_json(out / "frames.json", {**summary, "per_video": per_video})
    return summary


def crop_scale_of(data: str) -> float | None:
    """The face crop scale a ``data frames`` dataset was made with (for the video command's default), if ``data`` is one."""
    meta = Path(data) / "frames.json" if data else None
    if meta is None or not meta.is_file():
        return None
    try:
        return float(json.loads(meta.read_text())["config"]["faces"]["crop_scale"])
    except (OSError, ValueError, KeyError):
        return None
