"""Benchmark items -> a dataset of face crops (``python -m core data frames VIDEO_ROOT --out DIR``).

:func:`extract_items` is the engine. It takes :class:`Item`\\ s whose label, category, identity group and split are
already decided (by :mod:`core.data.benchmarks`' adapters), each of one of three kinds:

- a video file: frames are sampled (:mod:`core.data.video`), the largest face of each is found and cropped (square,
  ``crop_scale`` x the face) and saved as PNG;
- a video given as its frame images (``frames``): the images stand for the video's frames, sampled the same way;
- one annotated face of an image (``box``): cropped around the box as a detected face would be, no detector; one crop.

Class balance follows the published practice: a real video gives ``frames_per_video`` crops and a fake one
proportionally fewer (``frames_per_video x real videos / fake videos``, at least 1), since FaceForensics++ has several
manipulated videos per original; annotated faces are one crop each.

Output (a CSV-manifest dataset that ``--data DIR`` trains and evaluates on, with per-category accuracy and
video-level AUC)::

    DIR/extraction.json          what is extracted (the caller's source record, item digest) and the options: the resume key
    DIR/items/<name>.json        one record per finished item (sampled, faces, frames without a face, error)
    DIR/videos/<name>/<frame>.png  crops of a video or frames item, <name> = its video_id made a file name
    DIR/faces/<name>.png         the crop of an annotated face (<name> = its image's video_id and the face's number)
    DIR/manifest.csv             path,label,split,source,video_id,group (source = category), written at the end
    DIR/frames.json              configuration, source record, summary and every item's record, written at the end

A run is resumable and never writes a frame twice: ``extraction.json`` is written before anything else, and a rerun
into a folder holding the same one continues (any other non-empty folder is refused, nothing written). Finished
items (their record exists) are skipped; in an item cut short, a crop whose PNG exists is kept (PNGs are written
atomically, so an existing one is complete) and only the other frames are read and searched for a face again.

``workers`` > 1 extracts items in as many processes (one OpenCV thread each); ``workers=1`` runs in this process.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from core.data.datasets import FAKE, LABEL_NAMES, REAL, SPLITS
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
)
from core.io import TEMPORARY_SUFFIX, atomic_write, atomic_write_json, atomic_write_text, pause_point

MANIFEST_COLUMNS = ["path", "label", "split", "source", "video_id", "group"]
EXTRACTION_FILE, ITEMS_DIR, VIDEOS_DIR, FACES_DIR = "extraction.json", "items", "videos", "faces"
EXTRACTION_FORMAT = 1  # bump when the crops a given extraction.json stands for change
PNG_COMPRESS_LEVEL = 1  # zlib's fastest (OpenCV's imwrite default): PIL's 6 made encoding most of a run, for slightly smaller files
MAX_NAME = 120  # longer folder names are cut and given a hash (file systems allow 255 bytes)
# what opening an image can raise: missing or unreadable file, not an image, truncated data, a decompression bomb
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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

    @property
    def kind(self) -> str:
        return "box" if self.box is not None else "frames" if self.frames else "video"


def frames_per_label(entries: Sequence[Item], frames_per_video: int, balance: bool) -> dict[int, int]:
    """Crops to sample per real and per fake video (fewer per fake video when fakes outnumber reals)."""
    reals, fakes = sum(e.label == REAL for e in entries), sum(e.label == FAKE for e in entries)
    if not balance or not reals or not fakes:
        return {REAL: frames_per_video, FAKE: frames_per_video}
    ratio = reals / fakes
    return {REAL: max(1, round(frames_per_video / ratio)) if ratio > 1 else frames_per_video,
            FAKE: max(1, round(frames_per_video * ratio)) if ratio < 1 else frames_per_video}


# ---------------------------------------------------------------------- one item's crops (in a worker or in-process)


@dataclass(frozen=True)
class ItemJob:
    """What a worker needs to extract one item: the item, its file name, its frame count and the crop options."""

    item: Item
    name: str  # unique in the extraction: videos/<name>/, faces/<name>.png, items/<name>.json
    num_frames: int
    out: str
    size: int
    faces: FaceOptions
    random_frames: bool
    seed: int


def extract_item(job: ItemJob) -> tuple[dict, int]:
    """Write one item's crops, then its record (``items/<name>.json``); returns (record, crops written by this call)."""
    item = job.item
    record = {"kind": item.kind, "video_id": item.video_id, "path": item.source, "label": item.label,
              "category": item.category, "split": item.split, "group": item.group, "sampled": 0, "faces": 0,
              "frames_without_face": []}
    written = _crop_box(job, record) if item.kind == "box" else _crop_frames(job, record)
    atomic_write_json(Path(job.out) / ITEMS_DIR / f"{job.name}.json", record)
    return record, written


def _crop_frames(job: ItemJob, record: dict) -> int:
    """Sampled frames of a video or frames item -> largest face's crop per frame; a frame whose PNG exists is kept."""
    item, out = job.item, Path(job.out)
    folder = out / VIDEOS_DIR / job.name
    record.update(folder=folder.relative_to(out).as_posix(), frames_with_face=[])
    if item.kind == "frames":
        record["skipped_frames"] = []
    sampling = SamplingOptions(num_frames=job.num_frames, random=job.random_frames, seed=job.seed)
    try:
        total = len(item.frames) if item.kind == "frames" else probe_video(item.source).frames
    except VideoError as error:
        record["error"] = str(error)
        return 0
    indices = sample_frame_indices(total, sampling)
    kept = {index for index in indices if (folder / f"{index:06d}.png").is_file()}  # crops of a run cut short
    record["sampled"] += len(kept)
    record["frames_with_face"] += sorted(kept)
    written, missing = 0, [index for index in indices if index not in kept]
    try:
        for index, frame in _read_frames(item, missing):
            if isinstance(frame, str):  # a frame image that cannot be read: skipped, with the reason
                record["skipped_frames"].append({"index": index, "file": item.frames[index], "reason": frame})
                continue
            record["sampled"] += 1
            found = find_faces(frame, job.faces)
            if not found:
                record["frames_without_face"].append(index)
                continue
            _save(crop(frame, crop_box_of(found[0].box, (frame.shape[1], frame.shape[0]), job.faces)),
                  folder / f"{index:06d}.png", job.size)
            record["frames_with_face"].append(index)
            written += 1
    except VideoError as error:  # probed, then refused by the decoder: what was read is kept
        record["error"] = str(error)
    record["frames_with_face"].sort()
    record["faces"] = len(record["frames_with_face"])
    if item.kind == "frames" and indices and not record["sampled"]:
        record["error"] = f"none of the {len(indices)} sampled frame images of {item.source} could be read"
    return written


def _read_frames(item: Item, indices: list[int]) -> Iterator[tuple[int, np.ndarray | str]]:
    """``(index, RGB frame)`` of the sampled frames: decoded from the video, or read from the frame images
    (``(index, reason)`` for an image that cannot be read)."""
    if item.kind == "video":
        if indices:
            yield from iterate_frames(item.source, indices)
        return
    for index in indices:
        try:
            yield index, _read_image(item.frames[index])
        except IMAGE_ERRORS as error:
            yield index, f"{type(error).__name__}: {error}"


def _crop_box(job: ItemJob, record: dict) -> int:
    """An annotated face -> its crop (the square ``crop_scale`` x the box's longer side), no detector."""
    item, out = job.item, Path(job.out)
    target = out / FACES_DIR / f"{job.name}.png"
    record.update(box=list(item.box), crop=target.relative_to(out).as_posix())
    if target.is_file():
        record.update(sampled=1, faces=1)
        return 0
    try:
        image = _read_image(item.source)
    except IMAGE_ERRORS as error:
        record["error"] = f"{item.source}: {type(error).__name__}: {error}"
        return 0
    x, y, w, h = item.box
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        record["error"] = f"{item.source}: the face box {tuple(item.box)} is not inside the {width}x{height} image"
        return 0
    record["sampled"] = 1
    _save(crop(image, crop_box_of(item.box, (width, height), job.faces)), target, job.size)
    record["faces"] = 1
    return 1


def _read_image(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _save(face: Image.Image, target: Path, size: int) -> None:
    """A crop resized to ``size`` (0: as cropped), written atomically as PNG."""
    if size:
        face = face.resize((size, size), Image.Resampling.BICUBIC)
    atomic_write(target, lambda tmp: face.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL))
    pause_point("frame")  # test hook: a run killed here has this crop on disk and its item unfinished


def _one_thread() -> None:
    """Worker initialiser: one OpenCV (and torch) thread, so N workers on N cores do not oversubscribe them."""

    import cv2  # imported when a video or photo is decoded by OpenCV

    os.environ["OMP_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


# ---------------------------------------------------------------------- the engine


def item_names(items: Sequence[Item]) -> list[str]:
    """A unique file name per item: its video_id with ``/`` -> ``__`` and other odd characters -> ``_``, prefixed by
    its category unless it starts with it (``Deepfakes/000_003`` -> ``Deepfakes__000_003``); an annotated face adds its
    number within its image (``__0``, ``__1``...). Names that still clash (also ignoring case) get a hash of the id."""
    bases, faces_seen = [], Counter()
    for item in items:
        base = _file_name(item.video_id)
        category = _file_name(item.category)
        if base != category and not base.startswith(f"{category}__"):
            base = f"{category}__{base}"
        if item.box is not None:
            base = f"{base}__{faces_seen[item.video_id]}"
            faces_seen[item.video_id] += 1
        bases.append(base)
    clashes = Counter(base.lower() for base in bases)
    names = []
    for item, base in zip(items, bases, strict=True):
        key = f"{item.video_id}|{item.box}"
        if clashes[base.lower()] > 1 or len(base) > MAX_NAME:
            base = f"{base[:MAX_NAME]}__{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}"
        names.append(base)
    return names


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "__")).strip("._") or "item"


def extract_items(items: Sequence[Item], out: str | os.PathLike, *, source: dict, frames_per_video: int = 32,
                  balance: bool = True, size: int = 256, faces: FaceOptions = FaceOptions(), random_frames: bool = False,
                  seed: int = 0, workers: int = 1, progress: bool = True,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the face crops of ``items`` into ``out`` (layout in the module docstring); returns the summary.

    ``source`` is a JSON-able record of what is extracted (layout, root, compression, methods...): with the options
    that change the crops and a digest of the items, it makes ``extraction.json``, the key a rerun must match to
    resume. ``on_progress(done, total)`` is called with the items finished so far. ``workers`` > 1 starts processes
    with ``spawn``: a script that calls this needs the usual ``if __name__ == "__main__":`` guard."""
    out = Path(out)
    _check(items, frames_per_video, size, workers)
    counts = frames_per_label([item for item in items if item.box is None], frames_per_video, balance)
    options = {"frames_per_video": frames_per_video, "balance": balance, "size": size, "faces": asdict(faces),
               "random_frames": random_frames, "seed": seed}
    extraction = {"format": EXTRACTION_FORMAT, "source": source, "options": options, "items": len(items),
                  "items_sha1": hashlib.sha1(json.dumps([asdict(item) for item in items], default=str).encode("utf-8")).hexdigest()}
    resuming = _begin(out, extraction)
    names = item_names(items)
    records: list[dict | None] = [_finished(out, name) if resuming else None for name in names]
    jobs = [(position, ItemJob(item, name, counts[item.label], str(out), size, faces, random_frames, seed))
            for position, (item, name) in enumerate(zip(items, names, strict=True)) if records[position] is None]
    resumed = len(items) - len(jobs)
    bars = (tqdm(total=len(items), initial=resumed, desc="videos", unit="video", disable=not progress),
            tqdm(desc="frames written", unit="frame", disable=not progress))
    done, written = resumed, 0

    def finish(position: int, result: tuple[dict, int]) -> None:
        nonlocal done, written
        records[position], crops = result
        done, written = done + 1, written + crops
        bars[0].update()
        bars[1].update(crops)
        if on_progress:
            on_progress(done, len(items))

    if on_progress:
        on_progress(resumed, len(items))
    try:
        _run(jobs, workers, finish)
    finally:
        for bar in bars:
            bar.close()
    summary = _write_dataset(out, records, counts, source, options)
    return {**summary, "frames_written": written, "items_resumed": resumed, "workers": workers}


def _check(items: Sequence[Item], frames_per_video: int, size: int, workers: int) -> None:
    if not items:
        raise VideoError("nothing to extract: the list of items is empty")
    if frames_per_video < 1 or size < 0 or workers < 1:
        raise ValueError("frames_per_video >= 1, size >= 0 and workers >= 1 are required")
    repeated = [video_id for video_id, n in Counter(i.video_id for i in items if i.box is None).items() if n > 1]
    if repeated:
        raise ValueError(f"video_id must be unique among videos: {len(repeated)} repeat, e.g. {repeated[0]!r}")
    bad = [i for i in items if i.split not in SPLITS or i.label not in LABEL_NAMES]
    if bad:
        raise ValueError(f"{len(bad)} items have a split outside {SPLITS} or a label outside {sorted(LABEL_NAMES)}, "
                         f"e.g. {bad[0].video_id!r}: split {bad[0].split!r}, label {bad[0].label!r}")


def _begin(out: Path, extraction: dict) -> bool:
    """Start the extraction in ``out`` (write extraction.json), or resume it (True); refuse any other folder."""
    expected = json.loads(json.dumps(extraction, default=str))  # as written and read back
    marker = out / EXTRACTION_FILE
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError) as error:
            raise VideoError(f"{out} is not empty and its {EXTRACTION_FILE} cannot be read ({error}): choose a new "
                             "--out folder (nothing was written)") from error
        if found != expected:
            differing = ", ".join(_differences(found, expected)[:4])
            raise VideoError(f"{out} is not empty: it holds another extraction ({differing} differ): choose a new --out "
                             "folder, or rerun with the same dataset and options to resume (nothing was written)")
        for temporary in out.rglob(f".*{TEMPORARY_SUFFIX}"):  # crops a killed run left half-written
            temporary.unlink(missing_ok=True)
        return True
    if out.exists() and not out.is_dir():
        raise VideoError(f"{out} is a file, not a folder: choose a new --out folder (nothing was written)")
    if out.exists() and any(out.iterdir()):
        raise VideoError(f"{out} is not empty and holds no {EXTRACTION_FILE}: choose a new --out folder (nothing was written)")
    atomic_write_json(marker, extraction)
    return False


def _differences(found, expected, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON objects."""
    if not isinstance(found, dict) or not isinstance(expected, dict):
        return [prefix or "the file"] if found != expected else []
    return [difference for key in sorted(set(found) | set(expected), key=str)
            for difference in _differences(found.get(key), expected.get(key), f"{prefix}.{key}" if prefix else str(key))]


def _finished(out: Path, name: str) -> dict | None:
    """The record of an item a previous run finished, or None."""
    try:
        return json.loads((out / ITEMS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):  # not there (records are written atomically: one that is there is complete)
        return None


def _run(jobs: list[tuple[int, ItemJob]], workers: int, finish: Callable[[int, tuple[dict, int]], None]) -> None:
    """Extract every job, in this process (``workers=1``) or in a pool of ``workers`` processes."""
    if workers == 1 or len(jobs) <= 1:
        for position, job in jobs:
            finish(position, extract_item(job))
        return

    # spawn, not fork: a forked child can inherit OpenCV's thread pool mid-flight and hang
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_thread)
    try:
        futures = {pool.submit(extract_item, job): position for position, job in jobs}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _crop_paths(record: dict) -> list[str]:
    if record["kind"] == "box":
        return [record["crop"]] if record["faces"] else []
    return [f"{record['folder']}/{index:06d}.png" for index in record["frames_with_face"]]


def _write_dataset(out: Path, records: list[dict], counts: dict[int, int], source: dict, options: dict) -> dict:
    """manifest.csv and frames.json from every item's record (the same whether or not the run was resumed)."""
    rows = [{"path": path, "label": r["label"], "split": r["split"], "source": r["category"], "video_id": r["video_id"],
             "group": r["group"]} for r in records for path in _crop_paths(r)]
    if not rows:
        raise VideoError(f"no face was found in any sampled frame of the {len(records)} items (their records are in "
                         f"{out / ITEMS_DIR})")
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    atomic_write_text(out / "manifest.csv", table.to_csv(index=False))
    kinds = Counter(r["kind"] for r in records)
    summary = {
        "layout": source.get("layout"), "root": source.get("root"), "out": str(out),
        "items": len(records), "videos": kinds["video"] + kinds["frames"], "annotated_faces": kinds["box"],
        "frames_sampled": sum(r["sampled"] for r in records), "crops": len(rows),
        "frames_per_video": {LABEL_NAMES[k]: v for k, v in counts.items()},
        "crops_per_split": {split: int((table["split"] == split).sum()) for split in SPLITS},
        "crops_per_label": {LABEL_NAMES[k]: int((table["label"] == k).sum()) for k in (REAL, FAKE)},
        "frames_without_face": sum(len(r["frames_without_face"]) for r in records),
        "skipped_frames": sum(len(r.get("skipped_frames", [])) for r in records),
        "unreadable_videos": [r["path"] for r in records if "error" in r],
        "config": options,
    }
    atomic_write_json(out / "frames.json", {**summary, "source": source, "per_video": records})
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
