"""The field's video benchmarks as their authors distribute them, turned into what ``data frames`` extracts.

Each layout reads its authors' folders and files, and the official split when it is on disk:

- ``ffpp``: FaceForensics++, ``original_sequences/{youtube,actors}/<c>/videos`` and
  ``manipulated_sequences/<method>/<c>/videos``; ``splits/{train,val,test}.json`` (lists of ``[target, source]``
  pairs, as its repository publishes them) put both originals of a pair and both of its fakes in that split;
- ``celebdf``: Celeb-DF v1/v2, ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/``; ``List_of_testing_videos.txt``
  is the test split, every other video is train;
- ``dfdc``: the DeepFake Detection Challenge, each part's ``metadata.json`` (label, split, the original a fake was
  made from) or a ``labels.csv``; the preview's ``dataset.json``;
- ``openforensics``: images with COCO-style ``*_poly.json`` annotations; every annotated face is an item of its own
  label; Train/Val/Test-Dev/Test-Challenge kept (both test sets are "test", told apart by the source column);
- ``deepfakebench``: a DeepfakeBench index's videos as their extracted frames (to crop them again with our detector;
  ``--data deepfakebench`` reads them as they are, :func:`core.data.datasets.load_deepfakebench`);
- ``folders``: any tree with real/fake folders (the first folder named like a class gives the label).

**No identity in two splits.** Where no official split is on disk, videos are grouped by the people in them
(:func:`core.data.datasets.identity_groups`: a FaceForensics++ fake ``a_b`` ties ``a`` and ``b``, a Celeb-DF
``idX_idY_N`` ties ``idX`` and ``idY``, a DFDC fake its original) and whole groups are cut 80/10/10 by a hash of
the group's name; a missing val is carved from train the same way. Official splits are kept as published, and
``data check`` reports identities they put in two splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.data.datasets import (
    CLASS_SYNONYMS,
    COMPRESSIONS,
    FAKE,
    LABEL_NAMES,
    MIN_PER_LABEL_TO_SPLIT,
    REAL,
    SPLITS,
    TEST_FRACTION,
    VAL_FRACTION,
    DatasetError,
    identities_of,
    identity_groups,
    read_deepfakebench_index,
    resolve_index_frames,
)
from core.data.files import Skipped
from core.data.frames import Item
from core.data.video import list_videos

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # the paper's four; FaceShifter on request
FFPP_REAL, FFPP_FAKE = "original_sequences", "manipulated_sequences"
FFPP_SPLIT_FOLDER = "splits"  # <root>/splits/{train,val,test}.json, where FaceForensics++'s repository keeps them
DFD = "DeepFakeDetection"  # Google's actor videos: originals in original_sequences/actors
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
CELEBDF_FOLDERS = {"Celeb-real": REAL, "YouTube-real": REAL, "Celeb-synthesis": FAKE}
OPENFORENSICS_SETS = {"train": "train", "val": "val", "test-dev": "test", "test-challenge": "test"}

# official: the authors' split files decided; groups: no split on disk, identity groups cut 80/10/10;
# carved: val carved from an official train by identity group
OFFICIAL, GROUPS, CARVED = "official", "identity groups 80/10/10", "carved from train by identity group"


@dataclass(frozen=True)
class Entry:
    """One video (or face) of a benchmark, before its split is final."""

    source: str
    label: int
    category: str
    video_id: str
    identities: tuple[str, ...]
    split: str | None = None  # the official split, when the authors' files say
    frames: tuple[str, ...] = ()
    box: tuple[int, int, int, int] | None = None


@dataclass
class BenchmarkIndex:
    """What a layout found under ``root``: its entries with their final split, where each split came from, and
    what was named but left out (a split file naming a missing video, a metadata entry with no file...)."""

    layout: str
    root: Path
    entries: list[Entry]
    provenance: dict[str, str]
    skipped: list[Skipped] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    def items(self) -> list[Item]:
        groups = identity_groups({entry.video_id: entry.identities for entry in self.entries})
        return [Item(entry.source, entry.label, entry.category, entry.video_id, groups[entry.video_id], entry.split or "",
                     entry.frames, entry.box) for entry in self.entries]

    def record(self) -> dict:
        """What extraction stores about its source (and compares when it resumes)."""
        return {"layout": self.layout, "root": str(self.root), **self.options, "provenance": self.provenance}


# --------------------------------------------------------------------------- splits


def _cut(groups: list[str], fractions: tuple[float, float]) -> dict[str, str]:
    """Groups in SHA-1 order cut into train/val/test by ``(val, test)`` fractions (at least one each from 3 groups)."""
    ordered = sorted(groups, key=lambda group: (hashlib.sha1(group.encode("utf-8")).hexdigest(), group))
    count = len(ordered)
    n_val = max(1, round(count * fractions[0])) if count >= MIN_PER_LABEL_TO_SPLIT and fractions[0] else 0
    n_test = max(1, round(count * fractions[1])) if count >= MIN_PER_LABEL_TO_SPLIT and fractions[1] else 0
    n_train = count - n_val - n_test
    return {group: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, group in enumerate(ordered)}


def _by_stratum(entries: list[Entry], groups: dict[str, str]) -> list[list[str]]:
    """Groups holding a real video, then fake-only groups (each split then gets both labels)."""
    with_real = {groups[e.video_id] for e in entries if e.label == REAL}
    return [sorted(with_real), sorted({groups[e.video_id] for e in entries} - with_real)]


def assign_splits(entries: list[Entry]) -> tuple[list[Entry], dict[str, str]]:
    """Every entry with its final split, and each split's provenance.

    Official splits are kept. Entries the authors' files leave without one (all of them, when no split file is on
    disk) are cut by identity group: 80/10/10 when nothing is official; when an official train exists without a
    val, 10% of train's groups become val. An official split is never moved."""
    groups = identity_groups({entry.video_id: entry.identities for entry in entries})
    declared = {entry.split for entry in entries if entry.split}
    provenance = {split: OFFICIAL if split in declared else "not on disk" for split in SPLITS}
    if not declared:
        cut: dict[str, str] = {}
        for stratum in _by_stratum(entries, groups):
            cut.update(_cut(stratum, (VAL_FRACTION, TEST_FRACTION)))
        return [replace(e, split=cut[groups[e.video_id]]) for e in entries], dict.fromkeys(SPLITS, GROUPS)
    undeclared = [e for e in entries if not e.split]
    if undeclared:
        raise DatasetError(f"{len(undeclared)} videos have no split while others do (e.g. {undeclared[0].source})")
    if "val" not in declared and "train" in declared:
        train = [e for e in entries if e.split == "train"]
        carved: dict[str, str] = {}
        for stratum in _by_stratum(train, groups):
            carved.update(_cut(stratum, (VAL_FRACTION, 0.0)))
        entries = [replace(e, split=carved[groups[e.video_id]]) if e.split == "train" else e for e in entries]
        provenance["val"] = CARVED if any(e.split == "val" for e in entries) else "not on disk"
    return entries, provenance


# --------------------------------------------------------------------------- FaceForensics++


def _ffpp_people(stem: str, actors: bool) -> tuple[str, ...]:
    """``071_054`` -> (071, 054); an actor video ``01_02__exit_phone_room__X`` -> (actor01, actor02)."""
    if actors:
        return tuple(f"actor{person}" for person in stem.split("__")[0].split("_"))
    return tuple(stem.split("_"))


def read_ffpp_split_files(folder: Path) -> dict[str, str]:
    """``video id -> split`` from ``{train,val,test}.json``: each a JSON list of ``[a, b]`` pairs; a pair's two
    originals and its two fakes (``a_b``, ``b_a``) go to that split."""
    splits = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        if not path.is_file():
            raise DatasetError(f"{folder}: no {split}.json (FaceForensics++ publishes train.json, val.json, test.json)")
        try:
            pairs = json.loads(path.read_text())
            for a, b in pairs:
                for video in (str(a), str(b), f"{a}_{b}", f"{b}_{a}"):
                    splits[video] = split
        except (OSError, ValueError, TypeError) as error:
            raise DatasetError(f"{path}: not a FaceForensics++ split file, a JSON list of [target, source] pairs "
                               f"({type(error).__name__}: {error})") from None
    return splits


def index_ffpp(root: Path, compression: str = "c23", methods: tuple[str, ...] | None = None,
               split_files: Path | None = None) -> BenchmarkIndex:
    if compression not in COMPRESSIONS:
        raise DatasetError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    methods = tuple(methods or FFPP_METHODS)
    manipulated = root / FFPP_FAKE
    available = sorted(p.name for p in manipulated.iterdir() if p.is_dir()) if manipulated.is_dir() else []
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise DatasetError(f"{root}: no manipulated_sequences/{unknown[0]} (on disk: {', '.join(available) or 'none'})")
    sources = [("original", REAL, root / FFPP_REAL / "youtube" / compression / "videos", False)]
    if DFD in methods:
        sources.append(("original-actors", REAL, root / FFPP_REAL / "actors" / compression / "videos", True))
    sources += [(method, FAKE, manipulated / method / compression / "videos", method == DFD) for method in methods]
    entries = []
    for category, label, folder, actors in sources:
        if not folder.is_dir():
            raise DatasetError(f"{folder} does not exist: is {compression} on disk? (--compression c0|c23|c40)")
        for path in list_videos(folder):
            entries.append(Entry(str(path), label, category, f"{category}/{path.stem}", _ffpp_people(path.stem, actors)))
    folder = split_files or (root / FFPP_SPLIT_FOLDER)
    official_on_disk = split_files is not None or any((folder / f"{split}.json").is_file() for split in SPLITS)
    skipped: list[Skipped] = []
    if official_on_disk:
        official = read_ffpp_split_files(folder)
        named = {Path(e.video_id).name for e in entries}
        for video, split in sorted(official.items()):
            if "_" not in video and video not in named:
                skipped.append(Skipped(video, f"named by {split}.json, not on disk", split))
        kept = [replace(e, split=official.get(Path(e.video_id).name)) for e in entries if not _is_actors(e)]
        skipped += [Skipped(e.source, "not in the official split files") for e in kept if e.split is None]
        actors = [e for e in entries if _is_actors(e)]  # Google's actor videos: no official split, cut by group
        entries = [e for e in kept if e.split is not None] + (assign_splits(actors)[0] if actors else [])
        provenance = {split: f"{OFFICIAL} ({folder / (split + '.json')})" for split in SPLITS}
    else:
        entries, provenance = assign_splits(entries)
    return BenchmarkIndex("ffpp", root, entries, provenance, skipped,
                          {"compression": compression, "methods": list(methods),
                           "split_files": str(folder) if official_on_disk else None})


def _is_actors(entry: Entry) -> bool:
    return entry.category in ("original-actors", DFD)


def _keep_official(entries: list[Entry]) -> tuple[list[Entry], dict[str, str]]:
    """Entries whose every split is official, as they are."""
    splits = {e.split for e in entries}
    return entries, {split: OFFICIAL if split in splits else "not on disk" for split in SPLITS}


# --------------------------------------------------------------------------- Celeb-DF


def read_celebdf_test_list(path: Path) -> dict[str, int]:
    """``relative path -> label`` of ``List_of_testing_videos.txt``: lines ``<1 real | 0 fake> <folder>/<video>``."""
    listed = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise DatasetError(f"{path}, line {number}: expected '<1 real or 0 fake> <folder>/<video>', got {line.strip()!r}")
        listed[Path(parts[1]).as_posix()] = REAL if parts[0] == "1" else FAKE
    return listed


def index_celebdf(root: Path) -> BenchmarkIndex:
    entries = []
    for folder, label in CELEBDF_FOLDERS.items():
        if not (root / folder).is_dir():
            continue
        for path in list_videos(root / folder):
            people = identities_of(path.stem) if folder != "YouTube-real" else (f"youtube-{path.stem}",)
            entries.append(Entry(str(path), label, folder, f"{folder}/{path.stem}", people))
    if not entries:
        raise DatasetError(f"{root}: no Celeb-DF videos (expected {', '.join(CELEBDF_FOLDERS)} folders of videos)")
    test_list = root / CELEBDF_TEST_LIST
    skipped: list[Skipped] = []
    if test_list.is_file():
        listed = read_celebdf_test_list(test_list)
        on_disk = {Path(e.source).relative_to(root).as_posix(): e for e in entries}
        skipped += [Skipped(str(root / name), f"named by {CELEBDF_TEST_LIST}, not on disk", "test")
                    for name in sorted(set(listed) - set(on_disk))]
        wrong = [name for name in listed if name in on_disk and listed[name] != on_disk[name].label]
        if wrong:
            raise DatasetError(f"{test_list} labels {wrong[0]} {LABEL_NAMES[listed[wrong[0]]]}, but its folder says "
                               f"{LABEL_NAMES[on_disk[wrong[0]].label]}: is it the list of this version of Celeb-DF?")
        entries = [replace(e, split="test" if Path(e.source).relative_to(root).as_posix() in listed else "train")
                   for e in entries]
    entries, provenance = assign_splits(entries)
    if test_list.is_file():
        provenance = {**provenance, "train": f"{OFFICIAL} (every video not in {CELEBDF_TEST_LIST})",
                      "test": f"{OFFICIAL} ({CELEBDF_TEST_LIST})"}
    return BenchmarkIndex("celebdf", root, entries, provenance, skipped, {"test_list": str(test_list) if test_list.is_file() else None})


# --------------------------------------------------------------------------- DFDC


def _dfdc_split(value: object, folder: Path) -> str | None:
    """A metadata ``split`` value, else the part's folder name (``…test…``, ``…val…``), as train/val/test."""
    for text in (str(value or "").lower(), folder.name.lower()):
        for split, words in (("test", ("test",)), ("val", ("val", "validation")), ("train", ("train",))):
            if any(word in text for word in words):
                return split
    return None


def index_dfdc(root: Path) -> BenchmarkIndex:
    entries, skipped = [], []
    manifests = sorted(root.rglob("metadata.json")) + sorted(root.rglob("labels.csv")) + sorted(root.glob("dataset.json"))
    if not manifests:
        raise DatasetError(f"{root}: no DFDC metadata.json, labels.csv or dataset.json (preview)")
    for manifest in manifests:
        for name, label, split, original in _dfdc_records(manifest, root):
            path = (root if manifest.name == "dataset.json" else manifest.parent) / name
            if not path.is_file():
                skipped.append(Skipped(str(path), f"named by {manifest.relative_to(root)}, no file", split))
                continue
            people = (Path(original).stem,) if original else (path.stem,)  # a fake is grouped with its original
            entries.append(Entry(str(path), label, LABEL_NAMES[label], path.relative_to(root).with_suffix("").as_posix(),
                                 people, split))
    if not entries:
        raise DatasetError(f"{root}: the DFDC metadata names no video that is on disk ({len(skipped)} named)")
    if any(e.split for e in entries) and not all(e.split for e in entries):
        entries = [e if e.split else replace(e, split="train") for e in entries]
    entries, provenance = assign_splits(entries)
    return BenchmarkIndex("dfdc", root, entries, provenance, skipped, {})


def _dfdc_records(manifest: Path, root: Path):
    """``(file name, label, split or None, original or None)`` per video of one DFDC manifest."""
    try:
        if manifest.suffix == ".csv":
            with open(manifest, newline="") as handle:
                for row in csv.DictReader(handle):
                    yield row["filename"], FAKE if str(row["label"]).strip() in ("1", "FAKE", "fake") else REAL, \
                        _dfdc_split(None, manifest.parent), None
            return
        records = json.loads(manifest.read_text())
        for name, record in records.items():
            label = str(record["label"]).lower()
            if label not in ("real", "fake"):
                raise ValueError(f"{name}: label {record['label']!r} is neither REAL nor FAKE")
            split = _dfdc_split(record.get("split") or record.get("set"), manifest.parent if manifest.name != "dataset.json"
                                else Path(""))
            yield name, FAKE if label == "fake" else REAL, split, record.get("original")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{manifest}: not a DFDC {manifest.name} ({type(error).__name__}: {error})") from None


# --------------------------------------------------------------------------- OpenForensics


def _openforensics_set(path: Path) -> str | None:
    """``Train_poly.json`` -> train, ``Test-Dev_poly.json`` -> test-dev ..."""
    name = re.sub(r"(_poly)?\.json$", "", path.name, flags=re.IGNORECASE).lower().replace("_", "-")
    return name if name in OPENFORENSICS_SETS else None


def index_openforensics(root: Path) -> BenchmarkIndex:
    annotations = [(path, _openforensics_set(path)) for path in sorted(root.rglob("*.json"))]
    annotations = [(path, subset) for path, subset in annotations if subset]
    if not annotations:
        raise DatasetError(f"{root}: no OpenForensics annotations (Train_poly.json, Val_poly.json, Test-Dev_poly.json, "
                           "Test-Challenge_poly.json)")
    entries, skipped = [], []
    for path, subset in annotations:
        try:
            coco = json.loads(path.read_text())
            labels = {c["id"]: (REAL if "real" in str(c["name"]).lower() else FAKE) for c in coco["categories"]}
            images = {image["id"]: image["file_name"] for image in coco["images"]}
            faces = [(a["image_id"], a["bbox"], labels[a["category_id"]]) for a in coco["annotations"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{path}: not a COCO-style annotation file ({type(error).__name__}: {error})") from None
        folder = _image_folder(path, subset)
        counts: dict[int, int] = {}
        for image_id, bbox, label in faces:
            image = folder / images[image_id]
            if not image.is_file():
                skipped.append(Skipped(str(image), f"named by {path.name}, no file", OPENFORENSICS_SETS[subset]))
                continue
            counts[image_id] = counts.get(image_id, 0) + 1
            x, y, w, h = (int(round(float(v))) for v in bbox)
            stem = f"{subset}/{Path(images[image_id]).stem}"
            entries.append(Entry(str(image), label, _subset_title(subset), f"{stem}__{counts[image_id]}", (stem,),
                                 OPENFORENSICS_SETS[subset], box=(x, y, w, h)))
    entries, provenance = _keep_official(entries)
    provenance["test"] = f"{OFFICIAL}: Test-Dev and Test-Challenge (source column); --data openforensics tests on Test-Dev"
    return BenchmarkIndex("openforensics", root, entries, provenance, skipped, {})


def _subset_title(subset: str) -> str:
    """``test-dev`` -> ``Test-Dev``: the source column of its faces (per-source accuracy tells the test sets apart)."""
    return "-".join(part.capitalize() for part in subset.split("-"))


def _image_folder(annotation: Path, subset: str) -> Path:
    """Where an annotation file's images are: a sibling folder named like its set (``Train/``, ``Test-Dev/``), or
    the annotation's own folder."""
    for candidate in annotation.parent.iterdir():
        if candidate.is_dir() and candidate.name.lower().replace("_", "-") == subset:
            return candidate
    return annotation.parent


# --------------------------------------------------------------------------- DeepfakeBench, plain folders


def index_deepfakebench(root: Path, name: str | None = None, compression: str = "c23") -> BenchmarkIndex:
    name, videos = read_deepfakebench_index(root, name, compression)
    resolve = resolve_index_frames(root, [video.frames[0] for video in videos if video.frames])
    entries, seen = [], set()
    for video in sorted(videos, key=lambda v: ("test", "train", "val").index(v.split)):  # a video listed twice: test wins
        key = f"{video.label_key}/{video.video_id}"
        if key in seen or not video.frames:
            continue
        seen.add(key)
        frames = tuple(resolve(frame) for frame in video.frames)
        entries.append(Entry(str(Path(frames[0]).parent), video.label, video.label_key, key,
                             identities_of(video.video_id), video.split, frames=frames))
    entries, provenance = assign_splits(entries)
    return BenchmarkIndex("deepfakebench", root, entries, provenance, [], {"name": name, "compression": compression})


def index_folders(root: Path) -> BenchmarkIndex:
    """Any tree whose first class-named folder (real/original/... or fake/manipulated/...) gives the label, and the
    folder under it the category."""
    entries, skipped = [], []
    for path in list_videos(root):
        parts = path.relative_to(root).parts[:-1]
        named = [i for i, part in enumerate(parts) if part.lower() in CLASS_SYNONYMS]
        if not named:
            skipped.append(Skipped(str(path), "no real/fake folder in its path"))
            continue
        label = CLASS_SYNONYMS[parts[named[0]].lower()]
        category = parts[named[0] + 1] if named[0] + 1 < len(parts) else LABEL_NAMES[label]
        entries.append(Entry(str(path), label, category, f"{category}/{path.stem}", (f"{category}/{path.stem}",)))
    if not entries:
        raise DatasetError(f"no labelled videos under {root}: expected a benchmark's layout (--layout) or real/fake "
                           f"folders ({len(skipped)} videos found)")
    entries, provenance = assign_splits(entries)
    return BenchmarkIndex("folders", root, entries, provenance, skipped, {})


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    detect: Callable[[Path], bool]
    index: Callable[..., BenchmarkIndex]


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda root: any((root / name).exists() for name in names)


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("ffpp", "FaceForensics++", _has(FFPP_REAL, FFPP_FAKE), index_ffpp),
    Layout("celebdf", "Celeb-DF v1/v2", _has(*CELEBDF_FOLDERS), index_celebdf),
    Layout("dfdc", "DeepFake Detection Challenge (full or preview)",
           lambda root: _has("metadata.json", "dataset.json", "labels.csv")(root)
           or any((p / "metadata.json").is_file() for p in root.iterdir() if p.is_dir()), index_dfdc),
    Layout("openforensics", "OpenForensics", lambda root: any(_openforensics_set(p) for p in root.glob("*.json"))
           or any(_openforensics_set(p) for p in root.glob("*/*.json")), index_openforensics),
    Layout("deepfakebench", "DeepfakeBench's index and frames", _has("dataset_json"), index_deepfakebench),
    Layout("folders", "real/fake folders of videos", lambda root: True, index_folders),
)}


LAYOUT_OPTIONS = {"ffpp": ("compression", "methods", "split_files"), "deepfakebench": ("name", "compression")}
LAYOUT_OPTIONS = {name: LAYOUT_OPTIONS.get(name, ()) for name in LAYOUTS}


def detect_layout(root: Path) -> str:
    """The first layout whose marks are under ``root`` (``folders`` when none is)."""
    return next(name for name, layout in LAYOUTS.items() if layout.detect(root))


def index_benchmark(root: str | os.PathLike, layout: str | None = None, **options) -> BenchmarkIndex:
    """The benchmark at ``root`` in ``layout`` (recognised when None); ``options``: the layout's own (compression,
    methods, split_files for ffpp)."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    name = layout or detect_layout(root)
    if name not in LAYOUTS:
        raise DatasetError(f"unknown layout {name!r}; choose from {', '.join(LAYOUTS)}")
    given = {key: value for key, value in options.items() if value is not None}
    refused = sorted(set(given) - set(LAYOUT_OPTIONS[name]))
    if refused:
        raise DatasetError(f"{', '.join('--' + key.replace('_', '-') for key in refused)}: not an option of the {name} "
                           f"layout (it takes {', '.join('--' + k.replace('_', '-') for k in LAYOUT_OPTIONS[name]) or 'none'})")
    return LAYOUTS[name].index(root, **given)
