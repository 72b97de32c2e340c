"""Adapters that turn deepfake datasets on disk into labelled train/val/test lists.

Every adapter returns a :class:`DatasetSplits` whose samples follow one label
convention, **fake = 1, real = 0**, whatever the dataset itself uses (the Kaggle
"140k" and "rvf10k" CSVs mark *real* as 1). Listing never opens an image: decoding
is the image loader's job, and it skips and counts corrupt files, so one broken
JPEG cannot stop a run here.

What can be loaded (see :func:`resolve_dataset`):

- the five public Kaggle sets the published method used, by name (:data:`DATASETS`);
- any ImageFolder-like tree (:func:`load_image_folder`);
- CSV manifests (:func:`load_csv_manifest`);
- the embedded synthetic benchmark, ``"synthetic"`` or ``"synthetic:<source>"``.

Splits are used exactly as the data declares them (split folders, a ``split`` column,
per-split CSVs), never pooled with each other:

- a dataset that names no split at all is split 80/10/10 per label;
- a missing ``val`` is carved from ``train`` (10% per label);
- a missing ``test`` stays missing (evaluation refuses ``--split test``), a missing
  ``train`` too (training refuses);
- ``all`` is every image;
- registered presets state their published exceptions (rvf10k: the paper splits its
  pooled train/valid 80/10/10).

Both cuts order files (or whole videos and identity groups, :func:`_units`) by a hash of their name, so they are
the same on every machine and run; ``DatasetSplits.provenance`` records how each split
came to be, for ``data info``, ``evaluate`` and the runs to say.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from core.data.files import (
    IMAGE_EXTENSIONS,
    LISTED_TWICE,
    MISSING,
    Skipped,
    has_image_extension,
    reason_counts,
    reason_examples,
    unsupported_type,
    walk_images,
    why_not_read,
)
from core.registry import Registry

SPLITS = ("train", "val", "test")
ALL = "all"  # every image of the dataset, whatever its split (``evaluate --split all``)
SPLIT_CHOICES = (*SPLITS, ALL)

# How a split came to be (``DatasetSplits.provenance``), said by `data info`, `evaluate` and the runs
DECLARED = "declared"
CARVED = "carved from train"
RESPLIT = "80/10/10"
NOT_DECLARED = "not declared"
SPLIT_SYNONYMS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}

REAL, FAKE = 0, 1
LABEL_NAMES = {REAL: "real", FAKE: "fake"}
CLASS_SYNONYMS = {
    **dict.fromkeys(("real", "original", "genuine", "pristine"), REAL),
    **dict.fromkeys(
        ("fake", "ai_images", "ai", "synthetic", "generated", "deepfake", "deepfakes", "manipulated", "spoof"),
        FAKE,
    ),
}

# Pooled re-split: the rest of each label goes to train.
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
# With fewer images of a label than this, all of them go to train: one image each in
# val and test would say nothing, and train must not be left empty.
MIN_PER_LABEL_TO_SPLIT = 3

# More missing files than this share of a manifest's rows means a wrong image root,
# not a few stray deletions.
MAX_MISSING_FRACTION = 0.5
MAX_EXAMPLES_IN_ERROR = 3

# Manifest columns, matched case-insensitively; earlier names win.
PATH_COLUMNS = ("path", "filepath", "file_path", "file", "image", "image_path", "filename")
LABEL_STR_COLUMN = "label_str"
LABEL_COLUMNS = (LABEL_STR_COLUMN, "label", "class", "target")
SPLIT_COLUMN, SOURCE_COLUMN, VIDEO_ID_COLUMN, GROUP_COLUMN = "split", "source", "video_id", "group"


class DatasetError(ValueError):
    """A dataset cannot be loaded as asked; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One image: absolute path, label (fake = 1, real = 0) and where it comes from."""

    path: str
    label: int
    source: str = ""
    video_id: str = ""
    group: str = ""  # identity group (a video benchmark's people): split cuts never separate one


@dataclass
class DatasetSplits:
    """The train/val/test samples of one dataset, all with fake = 1.

    ``skipped`` holds every file of its class folders and every manifest row that is not a sample, with the reason
    and the split it was declared in (:mod:`core.data.files`), so a run, an evaluation and ``data check`` report
    them instead of silently using less.
    """

    name: str
    root: Path
    splits: dict[str, list[Sample]]
    # per split: how it came to be: DECLARED by the data, CARVED from train, RESPLIT (80/10/10 of a dataset
    # that names no split), or NOT_DECLARED (empty); a registered preset may say more (rvf10k: the paper's split)
    provenance: dict[str, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def dropped_rows(self) -> int:
        return len(self.skipped)

    @property
    def dropped_reasons(self) -> dict[str, int]:
        """Files and rows left out, per reason."""
        return reason_counts(self.skipped)

    @property
    def dropped_examples(self) -> dict[str, list[str]]:
        """The first few left out for each reason."""
        return reason_examples(self.skipped, MAX_EXAMPLES_IN_ERROR)

    def skipped_in(self, split: str) -> list[Skipped]:
        """What was left out of ``split`` as the data declared it (``all``: everything left out)."""
        return list(self.skipped) if split == ALL else [item for item in self.skipped if item.split == split]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise DatasetError(f"dataset {self.name}: unknown split(s) {unknown}; expected {list(SPLITS)}")
        for split in SPLITS:
            self.splits.setdefault(split, [])
            self.provenance.setdefault(split, DECLARED if self.splits[split] else NOT_DECLARED)

    def split(self, name: str) -> list[Sample]:
        """Return one split (``all``: every image), refusing one a detector cannot be trained or scored on."""
        if name == ALL:
            return _by_path({sample.path: sample for split in SPLITS for sample in self.splits[split]}.values())
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}: expected one of {', '.join(SPLIT_CHOICES)}")
        samples = self.splits[name]
        if not samples and self.provenance.get(name) == NOT_DECLARED:
            declared = [s for s in SPLITS if self.splits[s]]
            use = {"test": "score it with --split val or --split all", "train": "it can still be evaluated (--split test, "
                   "val or all)", "val": "add a val split"}[name]
            raise DatasetError(
                f"dataset {self.name} declares no {name!r} split (it declares {', '.join(declared) or 'none'}): {use}, "
                f"or add a '{name}' folder or manifest rows under {self.root}")
        if not samples:
            raise DatasetError(
                f"split {name!r} of dataset {self.name} is empty: add images for it under {self.root} "
                f"(a '{name}' folder or manifest rows), or remove all split folders/columns to get "
                "a deterministic 80/10/10 split"
            )
        labels = {sample.label for sample in samples}
        if len(labels) == 1:
            present = labels.pop()
            absent = REAL if present == FAKE else FAKE
            raise DatasetError(
                f"split {name!r} of dataset {self.name} has only {LABEL_NAMES[present]!r} images; a detector "
                f"needs both real and fake: add {LABEL_NAMES[absent]} images (folder names "
                f"{_class_folder_names(absent)}) under {self.root}"
            )
        return samples

    def describe(self, split: str) -> str:
        """Which images ``split`` is and why, e.g. ``test: 480 images, declared by the data``."""
        if split == ALL:
            return f"all: {len(self.split(ALL))} images, every split"
        how = {DECLARED: "declared by the data", CARVED: "carved from train (10% per label, deterministic)",
               RESPLIT: "80/10/10 of all images (the data names no split)", NOT_DECLARED: "not declared"}
        return f"{split}: {len(self.splits[split])} images, {how.get(self.provenance[split], self.provenance[split])}"

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class, e.g. ``{"train": {"real": 800, "fake": 790}, ...}``."""
        return {
            split: {
                LABEL_NAMES[label]: sum(sample.label == label for sample in self.splits[split])
                for label in (REAL, FAKE)
            }
            for split in SPLITS
        }


@dataclass(frozen=True)
class DatasetPreset:
    """A named public dataset: how to find its files under ``--data-root``.

    The first line of ``description`` is a one-line summary of the expected tree.
    """

    name: str
    title: str
    description: str
    loader: Callable[[Path, str | None], DatasetSplits]  # (root, the part after "NAME:" in the spec, or None)
    variants: str = ""  # what "NAME:<variant>" may name, for the messages; empty: the preset takes none


# --------------------------------------------------------------------------- helpers


def _class_folder_names(label: int) -> str:
    return "|".join(name for name, value in CLASS_SYNONYMS.items() if value == label)


def _absolute(path: str | Path) -> Path:
    """Absolute path without resolving symlinks, so containment checks stay lexical."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _existing_directory(path: str | Path, what: str) -> Path:
    directory = _absolute(path)
    if not directory.exists():
        raise DatasetError(f"{what} {directory} does not exist: check the path (or --data-root)")
    if not directory.is_dir():
        raise DatasetError(f"{what} {directory} is not a directory: point at the folder that holds the images")
    return directory


def _subdirectories(directory: Path) -> list[Path]:
    with os.scandir(directory) as entries:
        return sorted(Path(entry.path) for entry in entries if entry.is_dir())


def _class_folders(directory: Path) -> list[tuple[int, Path]]:
    return [(CLASS_SYNONYMS[d.name.lower()], d) for d in _subdirectories(directory) if d.name.lower() in CLASS_SYNONYMS]


def _split_folders(directory: Path) -> list[tuple[str, Path]]:
    """Split-named sub-folders that hold class folders (``train/real``...)."""
    return [
        (SPLIT_SYNONYMS[d.name.lower()], d)
        for d in _subdirectories(directory)
        if d.name.lower() in SPLIT_SYNONYMS and _class_folders(d)
    ]


def _flat_class_folders(directory: Path) -> list[tuple[int, Path]]:
    """Class folders directly under ``directory``; a class-named folder that is itself
    a split tree (a source called ``deepfakes``) is a source, not a class."""
    return [(label, d) for label, d in _class_folders(directory) if not _split_folders(d)]


def _is_tree(directory: Path) -> bool:
    return bool(_split_folders(directory) or _flat_class_folders(directory))


def _find_trees(root: Path) -> list[tuple[Path, str | None]]:
    """The single-source tree at ``root`` (source None), or one tree per source folder."""
    if _is_tree(root):
        return [(root, None)]
    return [(child, child.name) for child in _subdirectories(root) if _is_tree(child)]


def _list_images(class_dir: Path, label: int, source: str, split: str | None, skipped: list[Skipped]) -> list[Sample]:
    """The image files under a class folder as samples; every other file goes to ``skipped`` with its reason."""
    images, left_out = walk_images(class_dir, split)
    skipped.extend(left_out)
    return [Sample(path=str(path), label=label, source=source) for path in images]


def _by_path(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda sample: sample.path)


def _partition_sizes(count: int) -> tuple[int, int, int]:
    if count < MIN_PER_LABEL_TO_SPLIT:
        return count, 0, 0
    n_val = max(1, round(count * VAL_FRACTION))
    n_test = max(1, round(count * TEST_FRACTION))
    return count - n_val - n_test, n_val, n_test


def _units(samples: Iterable[Sample], key_root: Path) -> dict[int, list[tuple[str, list[Sample]]]]:
    """The samples as the units a split cut keeps together, per stratum, in a fixed order.

    A unit is an identity group, else a video, else one file: frames of one video, and the videos of one person,
    never straddle two splits. A unit holding a real sample is in the REAL stratum, a fake-only one in FAKE (so each
    split gets both labels). Units are ordered by the SHA-1 of their key (a file's: its path relative to ``key_root``,
    POSIX form): an order that depends only on names, not on RNG state, listing order, or where the data was unpacked.
    """
    units: dict[str, list[Sample]] = {}
    for sample in samples:
        key = sample.group or sample.video_id or Path(os.path.relpath(sample.path, key_root)).as_posix()
        units.setdefault(key, []).append(sample)
    strata: dict[int, list[tuple[str, list[Sample]]]] = {REAL: [], FAKE: []}
    for key, members in units.items():
        strata[REAL if any(s.label == REAL for s in members) else FAKE].append((key, members))
    for stratum in strata.values():
        stratum.sort(key=lambda unit: (hashlib.sha1(unit[0].encode("utf-8")).hexdigest(), unit[0]))
    return strata


def _stratified_split(samples: Sequence[Sample], key_root: Path) -> dict[str, list[Sample]]:
    """Deterministic 80/10/10 train/val/test split of the units (:func:`_units`), stratified by label."""
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for ordered in _units(samples, key_root).values():
        n_train, n_val, _ = _partition_sizes(len(ordered))
        for position, (_, members) in enumerate(ordered):
            splits["train" if position < n_train else "val" if position < n_train + n_val else "test"] += members
    return splits


def _carve_val(train: Sequence[Sample], key_root: Path) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)``: 10% of the units of each label of a declared train split (at least one when it has
    MIN_PER_LABEL_TO_SPLIT), in :func:`_units` order, so the same files are carved every time."""
    kept, carved = [], []
    for ordered in _units(train, key_root).values():
        n_val = max(1, round(len(ordered) * VAL_FRACTION)) if len(ordered) >= MIN_PER_LABEL_TO_SPLIT else 0
        for position, (_, members) in enumerate(ordered):
            (carved if position < n_val else kept).extend(members)
    return kept, carved


def _finalize_splits(
    by_split: dict[str, list[Sample]], unsplit: list[Sample], key_root: Path, where: str
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """``(splits, provenance)``: the declared splits exactly as given; only data that names no split at all
    is split 80/10/10; a missing val is carved from train; a missing train or test stays missing."""
    declared = [split for split in SPLITS if by_split[split]]
    if not declared:
        splits = _stratified_split(unsplit, key_root)
        return {s: _by_path(v) for s, v in splits.items()}, dict.fromkeys(SPLITS, RESPLIT)
    if unsplit:
        raise DatasetError(
            f"{where}: {len(unsplit)} images name no split while others name {', '.join(declared)} "
            f"(e.g. {unsplit[0].path}): give every image a split, or none (then they are split 80/10/10)")
    splits = {split: list(by_split[split]) for split in SPLITS}
    provenance = {split: DECLARED if splits[split] else NOT_DECLARED for split in SPLITS}
    if splits["train"] and not splits["val"]:
        splits["train"], splits["val"] = _carve_val(splits["train"], key_root)
        provenance["val"] = CARVED if splits["val"] else NOT_DECLARED
    return {s: _by_path(v) for s, v in splits.items()}, provenance


def _merge_provenance(provenances: list[dict[str, str]]) -> dict[str, str]:
    """One provenance per split over several trees (sources): theirs if they agree, else each named."""
    merged = {}
    for split in SPLITS:
        values = list(dict.fromkeys(p[split] for p in provenances))
        merged[split] = values[0] if len(values) == 1 else " + ".join(values)
    return merged


# ------------------------------------------------------------------ ImageFolder trees


def load_image_folder(root: str | Path, name: str | None = None) -> DatasetSplits:
    """Load an ImageFolder-like tree; class and split folder names are matched
    case-insensitively with synonyms (``Validation``, ``ai_images``, ``Original``...).

    Accepted layouts:

    - ``root/{train,val,test}/{real,fake}/**/*``
    - ``root/<source>/{train,val,test}/{real,fake}/**/*`` (each source folder that is a
      split tree becomes a source; samples are tagged with its folder name)
    - ``root/{real,fake}/**/*`` (no split folders)

    Single-source trees are tagged ``name`` (or the root folder's name). Split folders are
    used exactly as declared, never pooled: a missing ``val`` is carved from ``train`` (10%
    per label), a missing ``test`` or ``train`` stays missing (evaluation, resp. training,
    then refuses it). Only a tree that names no split at all is split 80/10/10 per label.
    Both cuts are deterministic, by a SHA-1 of each path relative to ``root``.
    """
    root_path = _existing_directory(root, "dataset folder")
    trees = _find_trees(root_path)
    if not trees:
        raise DatasetError(
            f"no real/fake folders found under {root_path}: expected root/{{train,val,test}}/{{real,fake}}, "
            f"root/<source>/{{train,val,test}}/{{real,fake}} or root/{{real,fake}}, with split folders named "
            f"{'|'.join(SPLIT_SYNONYMS)} and class folders named {_class_folder_names(REAL)} (real) or "
            f"{_class_folder_names(FAKE)} (fake)"
        )
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    provenances, skipped = [], []
    for tree, source in trees:
        tag = source or name or root_path.name
        by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
        for split, split_dir in _split_folders(tree):
            for label, class_dir in _class_folders(split_dir):
                by_split[split] += _list_images(class_dir, label, tag, split, skipped)
        unsplit = [s for label, class_dir in _flat_class_folders(tree)
                   for s in _list_images(class_dir, label, tag, None, skipped)]
        tree_splits, provenance = _finalize_splits(by_split, unsplit, root_path, str(tree))
        provenances.append(provenance)
        for split, samples in tree_splits.items():
            splits[split] += samples
    if not any(splits.values()):
        raise DatasetError(
            f"the real/fake folders under {root_path} hold no images: expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return DatasetSplits(name or f"folder:{root_path}", root_path, {s: _by_path(v) for s, v in splits.items()},
                         provenance=_merge_provenance(provenances), skipped=skipped)


# ---------------------------------------------------------------------- CSV manifests


def _columns(table: pd.DataFrame) -> dict[str, str]:
    return {str(column).strip().lower(): column for column in table.columns}


def _has_path_column(csv_path: Path) -> bool:
    try:
        header = pd.read_csv(csv_path, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    return any(column in PATH_COLUMNS for column in _columns(header))


def _discover_manifests(directory: Path) -> list[tuple[str | None, Path]]:
    """Per-split CSVs (``train.csv``, ``valid.csv``...) or the one CSV with a path column.

    Returns ``(split or None, csv)`` pairs, empty when the folder has no manifest.
    """
    csvs = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    per_split = [(SPLIT_SYNONYMS[p.stem.lower()], p) for p in csvs if p.stem.lower() in SPLIT_SYNONYMS]
    if per_split:
        return per_split
    manifests = [p for p in csvs if _has_path_column(p)]
    if len(manifests) > 1:
        raise DatasetError(
            f"{directory} holds several CSV manifests ({', '.join(p.name for p in manifests)}): "
            "pass the one to use, or name them train.csv, val.csv and test.csv"
        )
    return [(None, manifest) for manifest in manifests]


def _examples(values: Iterable[object]) -> str:
    unique = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(repr(v) for v in unique[:MAX_EXAMPLES_IN_ERROR])


def _parse_labels(values: pd.Series, fake_number: int, csv_path: Path) -> pd.Series:
    """Map real/fake words (any case, synonyms) and 0/1 to fake = 1; ``fake_number`` is
    the number the dataset itself uses for fake (1 generically, 0 for 140k/rvf10k)."""

    def parse(value: str) -> int | None:
        text = value.strip().lower()
        if text in CLASS_SYNONYMS:
            return CLASS_SYNONYMS[text]
        try:
            number = float(text)
        except ValueError:
            return None
        if number not in (0, 1):
            return None
        return FAKE if number == fake_number else REAL

    labels = values.map(parse)
    bad = labels.isna()
    if bad.any():
        raise DatasetError(
            f"{int(bad.sum())} of {len(values)} rows in {csv_path} have labels outside {{0, 1}} or "
            f"real/fake, e.g. {_examples(values[bad])}: use 0/1 (1 = fake) or real/fake"
        )
    return labels.astype(int)


def _parse_splits(values: pd.Series, csv_path: Path) -> pd.Series:
    splits = values.str.strip().str.lower().map(SPLIT_SYNONYMS)
    bad = splits.isna()
    if bad.any():
        raise DatasetError(
            f"{int(bad.sum())} of {len(values)} rows in {csv_path} have an unknown split, e.g. "
            f"{_examples(values[bad])}: use {'|'.join(SPLIT_SYNONYMS)}"
        )
    return splits


# ``fake_number`` for datasets whose CSVs use 0/1 with no documented meaning: read it off the class folders the
# listed paths name (GRAVEX-200K: the authors' loader takes 1 as real, the generic convention here is 1 = fake)
FROM_FOLDERS = -1


def _class_in_path(path: str) -> int | None:
    """REAL / FAKE when exactly one class folder name (``real/``, ``ai_images/``...) appears in ``path``, else None."""
    found = {CLASS_SYNONYMS[part.lower()] for part in re.split(r"[\\/]", path)[:-1] if part.lower() in CLASS_SYNONYMS}
    return found.pop() if len(found) == 1 else None


def _fake_number_from_folders(labels: pd.Series, paths: pd.Series, csv_path: Path) -> int:
    """Which number means fake in a CSV of 0/1 labels, read off the class folders of its paths; refuses to guess."""
    numbers = pd.to_numeric(labels.str.strip(), errors="coerce")
    numeric = numbers.isin([0, 1])
    if not numeric.any():
        return FAKE  # words only: they say what they mean
    folders = paths.map(_class_in_path)
    known = numeric & folders.notna()
    if not known.any():
        raise DatasetError(
            f"{csv_path} labels its images 0/1 but its paths name no class folder (real/, ai_images/, fake/), so which "
            "number means fake is ambiguous (the Pearson authors' loader reads 1 as real, this toolkit's CSVs 1 as fake): "
            "write the labels as words (real/fake) or list paths under real/ and ai_images/")
    ones_are_fake = float(((numbers[known] == 1) == (folders[known] == FAKE)).mean())
    if ones_are_fake >= 0.99:
        return FAKE
    if ones_are_fake <= 0.01:
        return REAL
    raise DatasetError(
        f"{csv_path}: its 0/1 labels agree with the class folders of its paths in only {ones_are_fake:.1%} of the "
        f"{int(known.sum())} rows that name one (1 = fake) and {1 - ones_are_fake:.1%} (1 = real): fix the labels or the paths")


def _read_manifest(csv_path: Path, fake_number: int) -> pd.DataFrame:
    """Read one manifest into columns path, label (fake = 1), split, source, video_id, group.

    ``fake_number``: the number the CSV uses for fake, or :data:`FROM_FOLDERS` to read it off the paths.
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read CSV manifest {csv_path}: {error}") from error
    columns = _columns(table)
    path_column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if path_column is None or label_column is None:
        raise DatasetError(
            f"CSV manifest {csv_path} has columns {list(table.columns)}; expected a path column "
            f"({'|'.join(PATH_COLUMNS)}) and a label column ({'|'.join(LABEL_COLUMNS)}), "
            f"optionally {SPLIT_COLUMN}, {SOURCE_COLUMN}, {VIDEO_ID_COLUMN}, {GROUP_COLUMN}"
        )

    def optional(column: str) -> pd.Series:
        return table[columns[column]].str.strip() if column in columns else pd.Series("", index=table.index)

    if fake_number == FROM_FOLDERS:
        fake_number = _fake_number_from_folders(table[label_column], table[path_column], csv_path)

    return pd.DataFrame(
        {
            "path": table[path_column].str.strip(),
            "label": _parse_labels(table[label_column], fake_number, csv_path),
            "split": _parse_splits(table[columns[SPLIT_COLUMN]], csv_path) if SPLIT_COLUMN in columns else "",
            "source": optional(SOURCE_COLUMN),
            "video_id": optional(VIDEO_ID_COLUMN),
            "group": optional(GROUP_COLUMN),
        }
    )


def _locate(listed: str, image_roots: Sequence[Path], root: Path, csv_path: Path, line: int | None = None) -> str | None:
    """Where a manifest path points: the first image root under which something of that name exists (a file, a
    folder, a FIFO...), else None.

    Paths must stay inside ``root``: a manifest must not make the toolkit read files
    elsewhere (``../`` escapes or absolute paths), which would also hide a wrong root.
    """
    bases = [Path("/")] if os.path.isabs(listed) else image_roots
    candidates = [os.path.normpath(os.path.join(base, listed)) for base in bases]
    inside = os.path.join(root, "")  # string prefix test: Path objects per row are slow on 100k-row CSVs
    for candidate in candidates:
        if not candidate.startswith(inside):
            where = f"{csv_path}, line {line}" if line else str(csv_path)
            raise DatasetError(
                f"{where} lists {listed!r}, which resolves outside the image root {root}: "
                "list paths relative to the image root, or pass the right image_root"
            )
    return next((c for c in candidates if os.path.lexists(c)), None)


def _load_manifests(
    manifests: Sequence[tuple[str | None, Path]],
    *,
    name: str,
    root: Path,
    image_roots: Sequence[Path],
    fake_number: int,
    default_source: str,
) -> DatasetSplits:
    """Turn manifests into splits; per-file splits win over a ``split`` column. Every row is a sample or
    skipped with its reason (missing, a folder, not a regular file, unsupported type, listed twice)."""
    by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    unsplit: list[Sample] = []
    rows = 0
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for file_split, csv_path in manifests:
        manifest = _read_manifest(csv_path, fake_number)
        rows += len(manifest)
        for line, row in enumerate(manifest.itertuples(index=False), start=2):  # line 1 is the header
            # before anything else: a row that leaves the image root stops the load (it names the row)
            found = _locate(row.path, image_roots, root, csv_path, line)
            split = file_split or row.split or None
            if found is not None:
                reason = why_not_read(found)  # a folder, not a regular file, an unsupported type, or None
            else:  # a row naming a .txt is left out for its type, whether or not the file is there
                reason = MISSING if has_image_extension(row.path) else unsupported_type(row.path)
            if reason is None and found in seen:
                reason = LISTED_TWICE
            if reason is not None:
                skipped.append(Skipped(found or os.path.join(image_roots[0], row.path), reason, split))
                continue
            seen.add(found)
            sample = Sample(found, int(row.label), row.source or default_source, row.video_id, row.group)
            (by_split[split] if split else unsplit).append(sample)
    missing = [item.path for item in skipped if item.reason == MISSING]
    if len(missing) > MAX_MISSING_FRACTION * rows:
        raise DatasetError(
            f"{len(missing)} of {rows} files listed in {', '.join(str(p) for _, p in manifests)} do not exist, "
            f"e.g. {missing[0]}: is the image root right? (paths are resolved against "
            f"{', '.join(map(str, image_roots))})"
        )
    return dataset_of(name, root, by_split, unsplit, skipped, ", ".join(str(p) for _, p in manifests))


def dataset_of(name: str, root: Path, by_split: dict[str, list[Sample]], unsplit: list[Sample], skipped: list[Skipped],
               where: str) -> DatasetSplits:
    """Samples as their data declared them (``by_split``; ``unsplit``: those that name no split) as a dataset:
    declared splits kept, the rest cut as :func:`_finalize_splits` says; ``where`` names the source in errors."""
    splits, provenance = _finalize_splits(by_split, unsplit, root, where)
    if not any(splits.values()):
        raise DatasetError(f"no usable rows in {where}: it lists no image files "
                           f"({'; '.join(f'{n} {reason}' for reason, n in reason_counts(skipped).items())})")
    return DatasetSplits(name, root, splits, provenance=provenance, skipped=skipped)


def load_csv_manifest(
    path_or_dir: str | Path, name: str | None = None, image_root: str | Path | None = None
) -> DatasetSplits:
    """Load a CSV manifest, or a folder of ``train.csv``/``val.csv``/``test.csv``.

    Columns: a path column (``path``; also filepath|file|image|filename) and a label
    column (0/1 with 1 = fake, or real/fake words; ``label_str`` wins over ``label``),
    plus optional ``split``, ``source`` and ``video_id``. Splits are used as declared
    (a ``split`` column, or per-split CSVs), as :func:`load_image_folder` does.

    Relative paths resolve against ``image_root`` (default: the CSV's folder) and may
    not leave it. Rows whose file is missing are dropped and counted in
    ``dropped_rows`` (every row left out is in ``skipped``, with its reason); if more than half
    are missing the image root is probably wrong and loading fails.
    """
    target = _absolute(path_or_dir)
    if not target.exists():
        raise DatasetError(f"CSV manifest {target} does not exist: check the path")
    if target.is_dir():
        manifests = _discover_manifests(target)
        if not manifests:
            raise DatasetError(
                f"no CSV manifest in {target}: expected train.csv, val.csv, test.csv or one CSV with "
                f"columns path,label"
            )
    elif target.suffix.lower() == ".csv":
        manifests = [(None, target)]
    else:
        raise DatasetError(f"{target} is not a .csv file: pass a CSV manifest or a folder of them")
    folder = target if target.is_dir() else target.parent
    root = _absolute(image_root) if image_root is not None else folder
    return _load_manifests(
        manifests,
        name=name or f"csv:{target}",
        root=root,
        image_roots=[root],
        fake_number=FAKE,
        default_source=name or folder.name,
    )


# ---------------------------------------------------------------- named Kaggle presets


def _tree_root(root: Path, nested: Sequence[str] = ()) -> Path:
    """Where a preset's folder tree starts: a known nested folder, the root itself, or
    the single sub-folder the archive was unpacked into."""
    for relative in nested:
        if (root / relative).is_dir() and _is_tree(root / relative):
            return root / relative
    if _is_tree(root):
        return root
    children = _subdirectories(root)
    if len(children) == 1 and _is_tree(children[0]):
        return children[0]
    return root


RVF10K_SPLIT = "80/10/10 of the pooled train/valid images (the Pearson paper's split)"


def _pooled_resplit(dataset: DatasetSplits, provenance: str) -> DatasetSplits:
    """A registered dataset whose published protocol re-splits its declared splits: pooled, then 80/10/10."""
    pooled = [sample for split in SPLITS for sample in dataset.splits[split]]
    splits = {split: _by_path(samples) for split, samples in _stratified_split(pooled, dataset.root).items()}
    return replace(dataset, splits=splits, provenance=dict.fromkeys(SPLITS, provenance))


def _load_rvf10k(root: Path) -> DatasetSplits:
    # the published exception: rvf10k ships train/valid only, and the paper splits their union 80/10/10
    manifests = [(split, path) for split, path in _discover_manifests(root) if split]
    if manifests:
        dataset = _load_manifests(
            manifests, name="rvf10k", root=root, image_roots=[root, root / "rvf10k"],
            fake_number=REAL, default_source="rvf10k",
        )
    else:
        dataset = load_image_folder(_tree_root(root, ["rvf10k"]), name="rvf10k")
    return _pooled_resplit(dataset, RVF10K_SPLIT)


_140K_IMAGES = ("real_vs_fake/real-vs-fake", "real-vs-fake", "real_vs_fake")


def _load_140k(root: Path) -> DatasetSplits:
    manifests = [(split, path) for split, path in _discover_manifests(root) if split]
    if manifests:
        return _load_manifests(
            manifests, name="140k", root=root, image_roots=[root / p for p in _140K_IMAGES] + [root],
            fake_number=REAL, default_source="140k",
        )
    return load_image_folder(_tree_root(root, _140K_IMAGES), name="140k")


def _load_190k(root: Path) -> DatasetSplits:
    return load_image_folder(_tree_root(root, ["Dataset"]), name="190k")


def _load_gravex200k(root: Path) -> DatasetSplits:
    manifests = _discover_manifests(root)
    if manifests:
        return _load_manifests(
            manifests, name="gravex200k", root=root, image_roots=[root],
            fake_number=FROM_FOLDERS, default_source="gravex200k",
        )
    return load_image_folder(_tree_root(root), name="gravex200k")


def _load_deepfake330k(root: Path) -> DatasetSplits:
    return load_image_folder(_tree_root(root), name="deepfake330k")


DATASETS: Registry[DatasetPreset] = Registry("dataset", {
    preset.name: preset
    for preset in (
        DatasetPreset(
            "rvf10k",
            "Real vs Fake Faces 10k",
            "<data-root>/{train,valid}.csv + <data-root>/rvf10k/{train,valid}/{real,fake}/*.jpg\n"
            "CSV columns ,id,label,label_str,path: label 1 = real, 0 = fake (translated to fake = 1),\n"
            "path relative to rvf10k/ (e.g. train/real/00001.jpg). Only train/valid exist: as the\n"
            "paper does, all images are pooled and split 80/10/10. Without the CSVs the folders are read.",
            lambda root, _: _load_rvf10k(root),
        ),
        DatasetPreset(
            "140k",
            "140k Real and Fake Faces",
            "<data-root>/{train,valid,test}.csv + <data-root>/real_vs_fake/real-vs-fake/{train,valid,test}/"
            "{real,fake}\n"
            "CSV columns ,original_path,id,label,label_str,path: label 1 = real, 0 = fake (translated\n"
            "to fake = 1), path relative to real_vs_fake/real-vs-fake/ (e.g. train/real/31355.jpg).\n"
            "Without the CSVs the folders are read.",
            lambda root, _: _load_140k(root),
        ),
        DatasetPreset(
            "190k",
            "deepfake and real images",
            "<data-root>/Dataset/{Train,Validation,Test}/{Real,Fake}/*.jpg\n"
            "The three splits may also sit directly under <data-root>.",
            lambda root, _: _load_190k(root),
        ),
        DatasetPreset(
            "gravex200k",
            "GRAVEX-200K",
            "<data-root>/{real,ai_images}/ + CSV manifest(s) with a path and a label column\n"
            "Path column path|filepath|file|image|filename, label column label|class|target with\n"
            "real / ai|ai_images|fake, or 0/1 read off the class folders the paths name (the authors'\n"
            "loader takes 1 = real; a 0/1 CSV whose paths name no class folder is refused, not guessed);\n"
            "a split column or train/val/test CSVs are used if present, else 80/10/10. Without a CSV\n"
            "the two folders are read and re-split.",
            lambda root, _: _load_gravex200k(root),
        ),
        DatasetPreset(
            "deepfake330k",
            "Deepfake-dataset (330k)",
            "<data-root>/{train,validation|val,test}/{real,fake}/*  (any case)\n"
            "The splits may sit in one top folder; any layout load_image_folder accepts also works.",
            lambda root, _: _load_deepfake330k(root),
        ),
        DatasetPreset(
            "ffpp",
            "FaceForensics++ (video benchmark; face crops)",
            "<data-root> = the face crops `data frames <FF++ root> --layout ffpp --out <data-root>` writes\n"
            "From original_sequences/youtube/<c>/videos and manipulated_sequences/<method>/<c>/videos\n"
            "(--compression c23, --methods: Deepfakes, Face2Face, FaceSwap, NeuralTextures); the official\n"
            "splits/{train,val,test}.json decide the split (else identity groups, 80/10/10). Page: docs/video-benchmarks/ffpp.md",
            lambda root, variant: load_frames_folder(root, "ffpp", variant),
        ),
        DatasetPreset(
            "celebdf",
            "Celeb-DF v1/v2 (video benchmark; face crops)",
            "<data-root> = the face crops `data frames <Celeb-DF root> --layout celebdf --out <data-root>` writes\n"
            "From Celeb-real/, YouTube-real/, Celeb-synthesis/; List_of_testing_videos.txt is the test split,\n"
            "the rest train (val carved by identity group). Page: docs/video-benchmarks/celebdf.md",
            lambda root, variant: load_frames_folder(root, "celebdf", variant),
        ),
        DatasetPreset(
            "dfdc",
            "DeepFake Detection Challenge, full or preview (video benchmark; face crops)",
            "<data-root> = the face crops `data frames <DFDC root> --layout dfdc --out <data-root>` writes\n"
            "Labels from each part's metadata.json (a fake grouped with its original), or labels.csv;\n"
            "preview: dataset.json. Page: docs/video-benchmarks/dfdc.md",
            lambda root, variant: load_frames_folder(root, "dfdc", variant),
        ),
        DatasetPreset(
            "openforensics",
            "OpenForensics (multi-face images; face crops)",
            "<data-root> = the face crops `data frames <OpenForensics root> --layout openforensics --out <data-root>` writes\n"
            "Each annotated face (COCO-style *_poly.json) cropped with its own label; Train/Val/Test-Dev kept,\n"
            "openforensics:test-challenge tests on Test-Challenge. Page: docs/video-benchmarks/openforensics.md",
            lambda root, variant: load_frames_folder(root, "openforensics", variant),
            variants="test-dev, test-challenge",
        ),
        DatasetPreset(
            "deepfakebench",
            "DeepfakeBench's preprocessed frames (any of its datasets)",
            "<data-root>/dataset_json/<Name>.json over its frames/ folders, read as they are (no re-extraction)\n"
            "deepfakebench:<Name> picks one index (FaceForensics++, Celeb-DF-v2, DFDC, ...; c23 for FF++);\n"
            "its train/val/test kept. Page: docs/video-benchmarks/deepfakebench.md",
            lambda root, variant: load_deepfakebench(root, variant),
            variants="the index name, e.g. Celeb-DF-v2",
        ),
    )
})


# ------------------------------------------------------------ video benchmarks' face crops

FRAMES_RECORD = "frames.json"  # what `data frames` writes beside manifest.csv: configuration, layout, per-video counts
VIDEO_LAYOUTS = ("ffpp", "celebdf", "dfdc", "openforensics")
OPENFORENSICS_TEST_SETS = ("test-dev", "test-challenge")  # both are "test"; the manifest's source column tells them apart


def frames_layout(folder: Path) -> str | None:
    """The benchmark layout a ``data frames`` folder was extracted from (its frames.json), or None."""
    record = folder / FRAMES_RECORD
    if not record.is_file():
        return None
    try:
        layout = json.loads(record.read_text()).get("layout")
    except (OSError, ValueError, AttributeError) as error:
        raise DatasetError(f"{record}: damaged ({type(error).__name__}: {error}); extract again with data frames") from None
    return layout if isinstance(layout, str) else None


def load_frames_folder(root: Path, layout: str | None = None, variant: str | None = None) -> DatasetSplits:
    """The face crops ``python -m core data frames`` wrote (``manifest.csv`` with the benchmark's split, and
    ``frames.json``), named after the benchmark; ``layout`` given: the folder must come from that benchmark.
    OpenForensics keeps its two test sets apart: ``openforensics`` tests on Test-Dev, ``openforensics:test-challenge``
    on Test-Challenge."""
    found = frames_layout(root)
    if layout is not None and found is None:
        raise DatasetError(
            f"{root} holds no face crops of {layout} (no {FRAMES_RECORD}): if it holds the benchmark as its authors "
            f"distribute it, extract the crops once with `python -m core data frames {root} --layout {layout} --out "
            f"{root}-frames` (resumable), then use --data {layout} --data-root {root}-frames")
    if layout is not None and found != layout:
        raise DatasetError(f"{root} holds face crops of {found or 'an unnamed layout'}, not {layout}: "
                           f"use --data {found or root}" + ("" if found else " (the folder itself)"))
    name = found or f"csv:{root}"
    dataset = load_csv_manifest(root, name=name)
    if found == "openforensics":
        test_set = variant or "test-dev"
        if test_set not in OPENFORENSICS_TEST_SETS:
            raise DatasetError(f"openforensics:{test_set}: the test sets are {', '.join(OPENFORENSICS_TEST_SETS)}")
        test = [s for s in dataset.splits["test"] if s.source.lower().startswith(test_set)]
        dataset = replace(dataset, name=f"openforensics:{test_set}" if variant else "openforensics",
                          splits={**dataset.splits, "test": test},
                          provenance={**dataset.provenance, "test": f"the official {test_set.title()} set"})
    elif variant is not None:
        raise DatasetError(f"{name} takes no ':{variant}'")
    return dataset


DEEPFAKEBENCH_INDEX = "dataset_json"  # DeepfakeBench's folder of <Name>.json indexes
DEEPFAKEBENCH_MODES = {"train": "train", "val": "val", "test": "test"}
COMPRESSIONS = ("c0", "c23", "c40")


def deepfakebench_indexes(root: Path) -> dict[str, Path]:
    """``<Name> -> <root>/dataset_json/<Name>.json`` (the root itself may be the dataset_json folder)."""
    folder = root / DEEPFAKEBENCH_INDEX if (root / DEEPFAKEBENCH_INDEX).is_dir() else root
    return {path.stem: path for path in sorted(folder.glob("*.json"))}


@dataclass(frozen=True)
class IndexedVideo:
    """One video of a DeepfakeBench index: its frames as listed, and where the index puts it."""

    video_id: str
    label_key: str  # the index's class name, e.g. FF-real, FF-DF, CelebDFv2_fake, DFDC_Real
    label: int
    split: str
    frames: tuple[str, ...]  # as the index writes them (resolved by resolve_index_frames)


def deepfakebench_label(label_key: str) -> int:
    """DeepfakeBench names each class (``FF-real``, ``CelebDFv2_real``, ``DFDC_Real``; ``FF-DF``, ``DFDC_Fake``...): a
    name with "real" in it is real, every other one a manipulation."""
    return REAL if "real" in label_key.lower() else FAKE


def read_deepfakebench_index(root: Path, name: str | None = None, compression: str = "c23") -> tuple[str, list[IndexedVideo]]:
    """``(Name, videos)`` of a DeepfakeBench ``dataset_json/<Name>.json``: ``{Name: {class: {train|val|test:
    [{c0|c23|c40}:] {video: {"label": class, "frames": [...]}}}}}`` (FaceForensics++ has the compression level)."""
    indexes = deepfakebench_indexes(root)
    if not indexes:
        raise DatasetError(f"no DeepfakeBench index under {root}: expected {root}/{DEEPFAKEBENCH_INDEX}/<Name>.json")
    if name is None:
        if len(indexes) > 1:
            raise DatasetError(f"{root} indexes several datasets ({', '.join(indexes)}): name one, "
                               f"e.g. --data deepfakebench:{next(iter(indexes))}")
        name = next(iter(indexes))
    if name not in indexes:
        raise DatasetError(f"no DeepfakeBench index {name!r} under {root}: it has {', '.join(indexes)}")
    if compression not in COMPRESSIONS:
        raise DatasetError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    path = indexes[name]
    try:
        index = json.loads(path.read_text())
        classes = index[name] if name in index else next(iter(index.values()))
        videos = []
        for label_key, modes in classes.items():
            for mode, block in modes.items():
                if mode not in DEEPFAKEBENCH_MODES:
                    continue
                if block and all(key in COMPRESSIONS for key in block):  # FaceForensics++: one level of compression
                    block = block.get(compression, {})
                for video_id, record in block.items():
                    frames = tuple(str(frame) for frame in record["frames"])
                    videos.append(IndexedVideo(str(video_id), label_key, deepfakebench_label(label_key),
                                               DEEPFAKEBENCH_MODES[mode], frames))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as error:
        raise DatasetError(f"{path}: not a DeepfakeBench index ({type(error).__name__}: {error})") from None
    return name, videos


def resolve_index_frames(root: Path, frames: Sequence[str]) -> Callable[[str], str]:
    """How the index's frame paths map onto this disk. DeepfakeBench writes them relative to where its scripts
    ran (``datasets/rgb/<Name>/...``, or absolute paths of the machine that made them): the first frame that
    exists under ``root`` (or its parent) with some leading folders dropped fixes the rule for all."""
    for frame in frames[:50]:
        parts = Path(frame).parts
        for base in (root, root.parent):
            for drop in range(len(parts)):
                candidate = base.joinpath(*parts[drop:])
                if candidate.is_file():
                    return lambda listed, base=base, drop=drop: str(base.joinpath(*Path(listed).parts[drop:]))
    return lambda listed: str(root / listed)


# DeepfakeBench's ids name the people in a video: FaceForensics++ 071_054 (three digits each), Celeb-DF id0_id16_0004
_PERSON = re.compile(r"^(\d{3}|id\d+)$")


def identities_of(video_id: str) -> tuple[str, ...]:
    """The people a benchmark's video name says it shows (FaceForensics++ ``071_054``: 071 and 054; Celeb-DF
    ``id0_id16_0004``: id0 and id16); a name that says none is its own identity."""
    stem = Path(video_id).stem
    people = tuple(token for token in stem.split("_") if _PERSON.match(token))
    return people or (stem,)


def identity_groups(identities: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """``video -> group``: videos sharing a person, directly or through others, form one group (union-find), named
    after its smallest identity."""
    parent: dict[str, str] = {}

    def find(person: str) -> str:
        parent.setdefault(person, person)
        while parent[person] != person:
            parent[person] = parent[parent[person]]
            person = parent[person]
        return person

    for people in identities.values():
        first = find(people[0])
        for other in people[1:]:
            root_a, root_b = sorted((first, find(other)))
            parent[root_b] = root_a
            first = root_a
    return {video: find(people[0]) for video, people in identities.items()}


def load_deepfakebench(root: Path, name: str | None = None, compression: str = "c23") -> DatasetSplits:
    """A DeepfakeBench dataset as its index lists it, its extracted frames used as they are (no re-extraction):
    the index's train/val/test kept; a video it lists in two splits is used once, test first, then train (Celeb-DF's
    index repeats its test videos as val: val is then carved from train, by identity group)."""
    name, videos = read_deepfakebench_index(root, name, compression)
    resolve = resolve_index_frames(root, [frame for video in videos for frame in video.frames[:1]])
    groups = identity_groups({video.video_id: identities_of(video.video_id) for video in videos})
    by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for video in sorted(videos, key=lambda v: ("test", "train", "val").index(v.split)):
        for listed in video.frames:
            path = resolve(listed)
            reason = why_not_read(path) or (LISTED_TWICE if path in seen else None)
            if reason is not None:
                skipped.append(Skipped(path, reason, video.split))
                continue
            seen.add(path)
            by_split[video.split].append(Sample(path, video.label, video.label_key, f"{video.label_key}/{video.video_id}",
                                                groups[video.video_id]))
    return dataset_of(f"deepfakebench:{name}", root, by_split, [], skipped, str(deepfakebench_indexes(root)[name]))


# ----------------------------------------------------------------------- entry points


def _load_synthetic(spec: str, data_root: str | Path | None) -> DatasetSplits:
    from core.data.synthetic import ensure_benchmark  # on use: listing real data does not load the renderer

    root = ensure_benchmark(Path(data_root) if data_root else None)
    dataset = load_image_folder(root, name="synthetic")
    if spec == "synthetic":
        return dataset
    source = spec.split(":", 1)[1]
    available = sorted({sample.source for samples in dataset.splits.values() for sample in samples})
    if source not in available:
        raise DatasetError(f"unknown synthetic source {source!r}: available sources are {', '.join(available)}")
    subset = {split: [s for s in samples if s.source == source] for split, samples in dataset.splits.items()}
    return DatasetSplits(spec, dataset.root, subset)


def resolve_dataset(spec: str, data_root: str | Path | None = None) -> DatasetSplits:
    """Load a dataset named on the command line.

    ``spec`` is a preset name (needs ``data_root``), ``synthetic`` /
    ``synthetic:<source>`` (the embedded benchmark, generated under ``data_root`` if
    missing), a folder (ImageFolder tree, or CSV manifests when it has no real/fake
    folders) or a ``.csv`` file.
    """
    named, _, variant = spec.partition(":")
    preset = DATASETS.get(named.lower())
    if preset is not None:
        if variant and not preset.variants:
            raise DatasetError(f"dataset {preset.name!r} takes no ':{variant}'")
        if data_root is None:
            layout = preset.description.splitlines()[0]
            raise DatasetError(f"dataset {preset.name!r} needs --data-root pointing at the folder that holds {layout}")
        return preset.loader(_existing_directory(data_root, f"--data-root for dataset {preset.name!r}"), variant or None)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _load_synthetic(spec, data_root)
    path = _absolute(spec)
    if path.is_dir():
        if (path / FRAMES_RECORD).is_file():  # `data frames` output: named after its benchmark
            return load_frames_folder(path)
        if not _find_trees(path) and _discover_manifests(path):
            return load_csv_manifest(path)
        return load_image_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_csv_manifest(path)
    raise DatasetError(
        f"unknown dataset {spec!r}: expected 'synthetic', 'synthetic:<source>', one of "
        f"[{', '.join(DATASETS)}] with --data-root, or a folder/CSV path"
    )


def describe_datasets() -> str:
    """The accepted dataset specs and expected trees, for ``--help`` and the README."""
    lines = ["Named datasets (pass the name and --data-root):"]
    for preset in DATASETS.values():
        lines.append(f"  {preset.name} - {preset.title}")
        lines += [f"      {line}" for line in preset.description.splitlines()]
    lines += [
        "Other specs:",
        "  synthetic, synthetic:<source> - the embedded benchmark, all sources pooled or one of them",
        "  <folder> - root/{train,val,test}/{real,fake}, root/<source>/{train,val,test}/{real,fake}",
        "      or root/{real,fake}; folder names are case-insensitive with synonyms",
        f"      (splits {'|'.join(SPLIT_SYNONYMS)}; real {_class_folder_names(REAL)};",
        f"      fake {_class_folder_names(FAKE)})",
        "  <file.csv> or a folder of train/val/test CSVs - columns path,label[,split,source,video_id],",
        "      label 0/1 (1 = fake) or real/fake",
        "Labels are always reported as fake = 1, real = 0. Declared splits (folders, a split column,",
        "per-split CSVs) are used exactly as given; a missing val is carved from train (10% per label);",
        "only data that names no split at all is split 80/10/10 per label, deterministically.",
    ]
    return "\n".join(lines)


def subsample(samples: list[Sample], limit: int | None) -> list[Sample]:
    """An evenly spread, deterministic subset of at most ``limit`` samples (classes stay mixed)."""
    if limit is None or len(samples) <= limit:
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]
