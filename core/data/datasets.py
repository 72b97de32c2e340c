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

When a dataset does not ship all three splits, everything is pooled and re-split
80/10/10 per label by a hash of each file's relative path (see
:func:`_stratified_split`), so the split is the same on every machine and run.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

SPLITS = ("train", "val", "test")
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
SPLIT_COLUMN, SOURCE_COLUMN, VIDEO_ID_COLUMN = "split", "source", "video_id"


class DatasetError(ValueError):
    """A dataset cannot be loaded as asked; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One image: absolute path, label (fake = 1, real = 0) and where it comes from."""

    path: str
    label: int
    source: str = ""
    video_id: str = ""


@dataclass
class DatasetSplits:
    """The train/val/test samples of one dataset, all with fake = 1.

    ``dropped_rows`` counts manifest rows skipped because their file is missing or is
    not an image, so a run can report them instead of silently training on less.
    """

    name: str
    root: Path
    splits: dict[str, list[Sample]]
    dropped_rows: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise DatasetError(f"dataset {self.name}: unknown split(s) {unknown}; expected {list(SPLITS)}")
        for split in SPLITS:
            self.splits.setdefault(split, [])

    def split(self, name: str) -> list[Sample]:
        """Return one split, refusing splits a detector cannot be trained or scored on."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
        samples = self.splits[name]
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
    loader: Callable[[Path], DatasetSplits]


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


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _list_images(class_dir: Path, label: int, source: str) -> list[Sample]:
    return [
        Sample(path=os.path.join(folder, file), label=label, source=source)
        for folder, _, files in os.walk(class_dir)
        for file in files
        if _is_image(file)
    ]


def _by_path(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda sample: sample.path)


def _partition_sizes(count: int) -> tuple[int, int, int]:
    if count < MIN_PER_LABEL_TO_SPLIT:
        return count, 0, 0
    n_val = max(1, round(count * VAL_FRACTION))
    n_test = max(1, round(count * TEST_FRACTION))
    return count - n_val - n_test, n_val, n_test


def _stratified_split(samples: Sequence[Sample], key_root: Path) -> dict[str, list[Sample]]:
    """Deterministic 80/10/10 train/val/test split, stratified by label.

    Each label's samples are ordered by the SHA-1 of their path relative to
    ``key_root`` (POSIX form) and cut in that order. The order depends only on file
    names: not on RNG state, listing order, or where the dataset was unpacked.
    """

    def key(sample: Sample) -> tuple[str, str]:
        relative = Path(os.path.relpath(sample.path, key_root)).as_posix()
        return hashlib.sha1(relative.encode("utf-8")).hexdigest(), relative

    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for label in (REAL, FAKE):
        ordered = sorted((s for s in samples if s.label == label), key=key)
        n_train, n_val, _ = _partition_sizes(len(ordered))
        splits["train"] += ordered[:n_train]
        splits["val"] += ordered[n_train : n_train + n_val]
        splits["test"] += ordered[n_train + n_val :]
    return splits


def _finalize_splits(
    by_split: dict[str, list[Sample]], unsplit: list[Sample], key_root: Path
) -> dict[str, list[Sample]]:
    """Keep the dataset's own splits when all three exist, else pool and re-split."""
    if not unsplit and all(by_split[split] for split in SPLITS):
        return {split: _by_path(by_split[split]) for split in SPLITS}
    pooled = [*unsplit, *(sample for split in SPLITS for sample in by_split[split])]
    return {split: _by_path(samples) for split, samples in _stratified_split(pooled, key_root).items()}


# ------------------------------------------------------------------ ImageFolder trees


def load_image_folder(root: str | Path, name: str | None = None) -> DatasetSplits:
    """Load an ImageFolder-like tree; class and split folder names are matched
    case-insensitively with synonyms (``Validation``, ``ai_images``, ``Original``...).

    Accepted layouts:

    - ``root/{train,val,test}/{real,fake}/**/*``
    - ``root/<source>/{train,val,test}/{real,fake}/**/*`` (each source folder that is a
      split tree becomes a source; samples are tagged with its folder name)
    - ``root/{real,fake}/**/*`` (no split folders)

    Single-source trees are tagged ``name`` (or the root folder's name). A tree without
    all three splits (only train+val, only train, or flat) is pooled and re-split
    80/10/10 per label, deterministically by a SHA-1 of each path relative to ``root``.
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
    for tree, source in trees:
        tag = source or name or root_path.name
        by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
        for split, split_dir in _split_folders(tree):
            for label, class_dir in _class_folders(split_dir):
                by_split[split] += _list_images(class_dir, label, tag)
        unsplit = [s for label, class_dir in _flat_class_folders(tree) for s in _list_images(class_dir, label, tag)]
        for split, samples in _finalize_splits(by_split, unsplit, root_path).items():
            splits[split] += samples
    if not any(splits.values()):
        raise DatasetError(
            f"the real/fake folders under {root_path} hold no images: expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return DatasetSplits(name or f"folder:{root_path}", root_path, {s: _by_path(v) for s, v in splits.items()})


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
    """Read one manifest into columns path, label (fake = 1), split, source, video_id.

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
            f"optionally {SPLIT_COLUMN}, {SOURCE_COLUMN}, {VIDEO_ID_COLUMN}"
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
        }
    )


def _locate(listed: str, image_roots: Sequence[Path], root: Path, csv_path: Path) -> str | None:
    """The existing file a manifest path names, trying each image root in turn.

    Paths must stay inside ``root``: a manifest must not make the toolkit read files
    elsewhere (``../`` escapes or absolute paths), which would also hide a wrong root.
    """
    bases = [Path("/")] if os.path.isabs(listed) else image_roots
    candidates = [os.path.normpath(os.path.join(base, listed)) for base in bases]
    inside = os.path.join(root, "")  # string prefix test: Path objects per row are slow on 100k-row CSVs
    for candidate in candidates:
        if not candidate.startswith(inside):
            raise DatasetError(
                f"{csv_path} lists {listed!r}, which resolves outside the image root {root}: "
                "list paths relative to the image root, or pass the right image_root"
            )
    return next((c for c in candidates if os.path.isfile(c)), None)


def _load_manifests(
    manifests: Sequence[tuple[str | None, Path]],
    *,
    name: str,
    root: Path,
    image_roots: Sequence[Path],
    fake_number: int,
    default_source: str,
) -> DatasetSplits:
    """Turn manifests into splits; per-file splits win over a ``split`` column."""
    by_split: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    unsplit: list[Sample] = []
    rows = dropped = 0
    missing: list[str] = []
    for file_split, csv_path in manifests:
        manifest = _read_manifest(csv_path, fake_number)
        rows += len(manifest)
        for row in manifest.itertuples(index=False):
            if not _is_image(row.path):
                dropped += 1
                continue
            found = _locate(row.path, image_roots, root, csv_path)
            if found is None:
                missing.append(os.path.join(image_roots[0], row.path))
                continue
            sample = Sample(found, int(row.label), row.source or default_source, row.video_id)
            split = file_split or row.split
            (by_split[split] if split else unsplit).append(sample)
    if len(missing) > MAX_MISSING_FRACTION * rows:
        raise DatasetError(
            f"{len(missing)} of {rows} files listed in {', '.join(str(p) for _, p in manifests)} do not exist, "
            f"e.g. {missing[0]}: is the image root right? (paths are resolved against "
            f"{', '.join(map(str, image_roots))})"
        )
    splits = _finalize_splits(by_split, unsplit, root)
    if not any(splits.values()):
        raise DatasetError(f"no usable rows in {', '.join(str(p) for _, p in manifests)}: it lists no image files")
    return DatasetSplits(name, root, splits, dropped_rows=dropped + len(missing))


def load_csv_manifest(
    path_or_dir: str | Path, name: str | None = None, image_root: str | Path | None = None
) -> DatasetSplits:
    """Load a CSV manifest, or a folder of ``train.csv``/``val.csv``/``test.csv``.

    Columns: a path column (``path``; also filepath|file|image|filename) and a label
    column (0/1 with 1 = fake, or real/fake words; ``label_str`` wins over ``label``),
    plus optional ``split``, ``source`` and ``video_id``. Without all three splits the
    rows are pooled and re-split 80/10/10 like :func:`load_image_folder`.

    Relative paths resolve against ``image_root`` (default: the CSV's folder) and may
    not leave it. Rows whose file is missing are dropped and counted in
    ``dropped_rows``; if more than half are missing the image root is probably wrong
    and loading fails.
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


def _load_rvf10k(root: Path) -> DatasetSplits:
    manifests = [(split, path) for split, path in _discover_manifests(root) if split]
    if manifests:
        return _load_manifests(
            manifests, name="rvf10k", root=root, image_roots=[root, root / "rvf10k"],
            fake_number=REAL, default_source="rvf10k",
        )
    return load_image_folder(_tree_root(root, ["rvf10k"]), name="rvf10k")


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


DATASETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset(
            "rvf10k",
            "Real vs Fake Faces 10k",
            "<data-root>/{train,valid}.csv + <data-root>/rvf10k/{train,valid}/{real,fake}/*.jpg\n"
            "CSV columns ,id,label,label_str,path: label 1 = real, 0 = fake (translated to fake = 1),\n"
            "path relative to rvf10k/ (e.g. train/real/00001.jpg). Only train/valid exist, so all\n"
            "images are pooled and re-split 80/10/10. Without the CSVs the folders are read.",
            _load_rvf10k,
        ),
        DatasetPreset(
            "140k",
            "140k Real and Fake Faces",
            "<data-root>/{train,valid,test}.csv + <data-root>/real_vs_fake/real-vs-fake/{train,valid,test}/"
            "{real,fake}\n"
            "CSV columns ,original_path,id,label,label_str,path: label 1 = real, 0 = fake (translated\n"
            "to fake = 1), path relative to real_vs_fake/real-vs-fake/ (e.g. train/real/31355.jpg).\n"
            "Without the CSVs the folders are read.",
            _load_140k,
        ),
        DatasetPreset(
            "190k",
            "deepfake and real images",
            "<data-root>/Dataset/{Train,Validation,Test}/{Real,Fake}/*.jpg\n"
            "The three splits may also sit directly under <data-root>.",
            _load_190k,
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
            _load_gravex200k,
        ),
        DatasetPreset(
            "deepfake330k",
            "Deepfake-dataset (330k)",
            "<data-root>/{train,validation|val,test}/{real,fake}/*  (any case)\n"
            "The splits may sit in one top folder; any layout load_image_folder accepts also works.",
            _load_deepfake330k,
        ),
    )
}


# ----------------------------------------------------------------------- entry points


def _load_synthetic(spec: str, data_root: str | Path | None) -> DatasetSplits:
    # Imported here: listing real data should not load the renderer.
    from core.data.synthetic import ensure_benchmark

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
    preset = DATASETS.get(spec.lower())
    if preset is not None:
        if data_root is None:
            layout = preset.description.splitlines()[0]
            raise DatasetError(f"dataset {preset.name!r} needs --data-root pointing at the folder that holds {layout}")
        return preset.loader(_existing_directory(data_root, f"--data-root for dataset {preset.name!r}"))
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _load_synthetic(spec, data_root)
    path = _absolute(spec)
    if path.is_dir():
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
        "Labels are always reported as fake = 1, real = 0. Datasets without all three splits are",
        "pooled and re-split 80/10/10 per label, deterministically from the file paths.",
    ]
    return "\n".join(lines)
