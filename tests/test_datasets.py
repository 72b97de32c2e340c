"""Dataset adapters: tiny copies of each supported layout, built in tmp_path."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.data.datasets import (
    DATASETS,
    FAKE,
    REAL,
    DatasetError,
    DatasetSplits,
    Sample,
    describe_datasets,
    load_csv_manifest,
    load_image_folder,
    resolve_dataset,
)

PER_CLASS = 3


def write_images(folder: Path, count: int = PER_CLASS, ext: str = ".png", prefix: str = "img") -> list[Path]:
    """Write ``count`` 8x8 images; the colour depends on the name so files differ."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}{index:03d}{ext}"
        Image.new("RGB", (8, 8), (index * 20 % 256, 80, 160)).save(path)
        paths.append(path)
    return paths


def split_tree(root: Path, splits=("train", "val", "test"), classes=("real", "fake"), count=PER_CLASS) -> Path:
    for split in splits:
        for cls in classes:
            write_images(root / split / cls, count)
    return root


def relative_assignment(dataset: DatasetSplits) -> dict[str, list[tuple[str, int]]]:
    """Splits as relative paths, to compare trees unpacked in different places."""
    return {
        split: [(Path(s.path).relative_to(dataset.root).as_posix(), s.label) for s in samples]
        for split, samples in dataset.splits.items()
    }


def labels_by_folder(dataset: DatasetSplits) -> set[tuple[str, int]]:
    """(class folder name, label) pairs: checks the fake = 1 translation."""
    return {(Path(s.path).parent.name.lower(), s.label) for samples in dataset.splits.values() for s in samples}


# ------------------------------------------------------------------ ImageFolder trees


def test_standard_tree_keeps_splits_and_labels_fake_as_one(tmp_path):
    root = split_tree(tmp_path / "faces")
    dataset = load_image_folder(root)
    assert dataset.name == f"folder:{root}"
    assert dataset.counts() == {split: {"real": 3, "fake": 3} for split in ("train", "val", "test")}
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert all(os.path.isabs(s.path) and s.source == "faces" for s in dataset.split("train"))
    assert dataset.split("val") == sorted(dataset.split("val"), key=lambda s: s.path)


def test_synonyms_case_extensions_and_nesting(tmp_path):
    root = tmp_path / "data"
    write_images(root / "Training" / "Genuine", 2, ext=".JPG")
    write_images(root / "Training" / "Genuine" / "batch2", 1, ext=".jpeg")
    write_images(root / "Training" / "AI_Images", 3, ext=".webp")
    write_images(root / "Validation" / "Original", 2)
    write_images(root / "Validation" / "DeepFakes", 2, ext=".bmp")
    write_images(root / "Testing" / "PRISTINE", 2, ext=".tiff")
    write_images(root / "Testing" / "Manipulated", 2)
    (root / "Training" / "Genuine" / "notes.txt").write_text("not an image")
    (root / "Training" / "AI_Images" / "labels.csv").write_text("a,b\n")
    dataset = load_image_folder(root, name="custom")
    assert dataset.counts() == {
        "train": {"real": 3, "fake": 3},
        "val": {"real": 2, "fake": 2},
        "test": {"real": 2, "fake": 2},
    }
    assert {s.source for s in dataset.split("train")} == {"custom"}
    assert {(Path(item.path).name, item.reason, item.split) for item in dataset.skipped} == {
        ("notes.txt", "unsupported type .txt", "train"), ("labels.csv", "unsupported type .csv", "train")}


def test_listing_does_not_decode_images(tmp_path):
    root = split_tree(tmp_path / "faces")
    (root / "train" / "fake" / "corrupt.jpg").write_bytes(b"not a jpeg")
    assert load_image_folder(root).counts()["train"]["fake"] == PER_CLASS + 1


def test_multi_source_tree_tags_sources(tmp_path):
    split_tree(tmp_path / "bench" / "faceswap")
    split_tree(tmp_path / "bench" / "deepfakes")  # class-like name, but it is a source
    (tmp_path / "bench" / "notes").mkdir()
    dataset = load_image_folder(tmp_path / "bench")
    assert {s.source for s in dataset.split("test")} == {"faceswap", "deepfakes"}
    assert dataset.counts()["train"] == {"real": 6, "fake": 6}


def test_flat_tree_gets_stratified_80_10_10(tmp_path):
    write_images(tmp_path / "flat" / "real", 10)
    write_images(tmp_path / "flat" / "fake", 20)
    dataset = load_image_folder(tmp_path / "flat")
    assert dataset.counts() == {
        "train": {"real": 8, "fake": 16},
        "val": {"real": 1, "fake": 2},
        "test": {"real": 1, "fake": 2},
    }
    pooled = [s.path for samples in dataset.splits.values() for s in samples]
    assert len(pooled) == len(set(pooled)) == 30
    assert set(dataset.provenance.values()) == {"80/10/10"}


def test_train_and_val_only_keep_their_splits_and_refuse_test(tmp_path):
    root = split_tree(tmp_path / "tv", splits=("train", "valid"), count=5)
    dataset = load_image_folder(root)
    assert dataset.counts() == {"train": {"real": 5, "fake": 5}, "val": {"real": 5, "fake": 5},
                                "test": {"real": 0, "fake": 0}}
    assert dataset.provenance == {"train": "declared", "val": "declared", "test": "not declared"}
    with pytest.raises(DatasetError, match=r"declares no 'test' split \(it declares train, val\).*--split all"):
        dataset.split("test")
    assert len(dataset.split("all")) == 20


def test_a_test_only_folder_is_scored_whole_and_cannot_train(tmp_path):
    """The cross-dataset case: another dataset's test split, 20 images per class, is never re-split."""
    root = split_tree(tmp_path / "eval", splits=("test",), count=20)
    dataset = load_image_folder(root)
    assert len(dataset.split("test")) == 40 and len(dataset.split("all")) == 40
    assert dataset.describe("test") == "test: 40 images, declared by the data"
    with pytest.raises(DatasetError, match="declares no 'train' split .* can still be evaluated"):
        dataset.split("train")
    with pytest.raises(DatasetError, match="declares no 'val' split"):
        dataset.split("val")


@pytest.mark.parametrize("splits", [("train",), ("train", "test")])
def test_a_missing_val_is_carved_from_train(tmp_path, splits):
    root = split_tree(tmp_path / "t", splits=splits, count=20)
    dataset = load_image_folder(root)
    assert dataset.counts()["train"] == {"real": 18, "fake": 18} and dataset.counts()["val"] == {"real": 2, "fake": 2}
    assert dataset.provenance["val"] == "carved from train" and "carved from train" in dataset.describe("val")
    assert all("/train/" in s.path for s in dataset.split("val")), "carved from train, nothing else"
    assert relative_assignment(dataset) == relative_assignment(load_image_folder(root)), "the same files every time"
    if "test" in splits:
        assert len(dataset.split("test")) == 40 and dataset.provenance["test"] == "declared"
    else:
        with pytest.raises(DatasetError, match="declares no 'test' split"):
            dataset.split("test")


def test_images_without_a_split_beside_declared_ones_are_refused(tmp_path):
    root = split_tree(tmp_path / "mixed", splits=("train", "test"))
    write_images(root / "real", 2)
    write_images(root / "fake", 2)
    with pytest.raises(DatasetError, match="4 images name no split while others name train, test"):
        load_image_folder(root)


def test_pooled_split_is_deterministic_across_creation_order_and_location(tmp_path):
    names = [f"face{i:02d}.png" for i in range(12)]
    for where, order in (("a", names), ("b", list(reversed(names)))):
        for cls in ("real", "fake"):
            for name in order:
                folder = tmp_path / where / "dataset" / cls
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(folder / name)
    first = load_image_folder(tmp_path / "a" / "dataset")
    assert relative_assignment(first) == relative_assignment(load_image_folder(tmp_path / "a" / "dataset"))
    assert relative_assignment(first) == relative_assignment(load_image_folder(tmp_path / "b" / "dataset"))


def test_tiny_classes_go_to_train(tmp_path):
    write_images(tmp_path / "tiny" / "real", 2)
    write_images(tmp_path / "tiny" / "fake", 2)
    dataset = load_image_folder(tmp_path / "tiny")
    assert dataset.counts()["train"] == {"real": 2, "fake": 2}
    with pytest.raises(DatasetError, match="split 'val' of dataset .* is empty"):
        dataset.split("val")


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_image_folder(tmp_path / "file.png")


def test_no_class_folders_names_the_expected_ones(tmp_path):
    write_images(tmp_path / "photos" / "cats")
    with pytest.raises(DatasetError, match="no real/fake folders.*real\\|original.*ai_images"):
        load_image_folder(tmp_path / "photos")


def test_class_folders_without_images(tmp_path):
    (tmp_path / "empty" / "real").mkdir(parents=True)
    (tmp_path / "empty" / "fake").mkdir()
    with pytest.raises(DatasetError, match="hold no images"):
        load_image_folder(tmp_path / "empty")


def test_split_with_one_class_is_refused(tmp_path):
    root = split_tree(tmp_path / "one", classes=("real",))
    dataset = load_image_folder(root)
    with pytest.raises(DatasetError, match="has only 'real' images; a detector needs both real and fake"):
        dataset.split("train")
    with pytest.raises(DatasetError, match="unknown split"):
        dataset.split("holdout")


def test_empty_split_is_refused():
    sample = Sample("/x/a.png", FAKE)
    dataset = DatasetSplits("toy", Path("/x"), {"train": [sample, Sample("/x/b.png", REAL)]})
    assert dataset.counts()["val"] == {"real": 0, "fake": 0}
    with pytest.raises(DatasetError, match="dataset toy declares no 'test' split"):
        dataset.split("test")
    declared_empty = DatasetSplits("toy", Path("/x"), {"train": [sample]}, provenance={"test": "declared"})
    with pytest.raises(DatasetError, match="split 'test' of dataset toy is empty"):
        declared_empty.split("test")


# ---------------------------------------------------------------------- CSV manifests


def manifest_images(root: Path, count: int = 10) -> list[tuple[str, int]]:
    """Images under root/images/{real,fake}; returns (relative path, fake = 1 label)."""
    rows = []
    for cls, label in (("real", REAL), ("fake", FAKE)):
        for path in write_images(root / "images" / cls, count):
            rows.append((path.relative_to(root).as_posix(), label))
    return rows


def test_csv_with_split_column_source_and_video_id(tmp_path):
    rows = manifest_images(tmp_path)
    splits = ["train", "train", "train", "train", "Validation", "val", "Test", "testing", "train", "train"] * 2
    frame = pd.DataFrame({
        "path": [p for p, _ in rows], "label": [lab for _, lab in rows], "split": splits,
        "source": ["gan"] * 10 + ["swap"] * 10, "video_id": [f"v{i % 4}" for i in range(20)],
    })
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    dataset = load_csv_manifest(tmp_path / "manifest.csv")
    assert dataset.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                                "test": {"real": 2, "fake": 2}}
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert {s.source for s in dataset.split("test")} == {"gan", "swap"}
    assert all(s.video_id.startswith("v") for s in dataset.split("train"))


def test_csv_without_split_column_and_string_labels(tmp_path):
    rows = manifest_images(tmp_path)
    words = {REAL: ["Real", "genuine"], FAKE: ["FAKE", "ai_images"]}
    frame = pd.DataFrame({"filepath": [p for p, _ in rows],
                          "label": [words[lab][i % 2] for i, (_, lab) in enumerate(rows)]})
    frame.to_csv(tmp_path / "all.csv", index=False)
    dataset = load_csv_manifest(tmp_path / "all.csv", name="mine")
    assert dataset.name == "mine"
    assert dataset.counts() == {"train": {"real": 8, "fake": 8}, "val": {"real": 1, "fake": 1},
                                "test": {"real": 1, "fake": 1}}
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert relative_assignment(dataset) == relative_assignment(load_csv_manifest(tmp_path / "all.csv", name="mine"))


def test_csv_whose_rows_all_say_test_scores_every_row(tmp_path):
    rows = manifest_images(tmp_path, 5)
    pd.DataFrame({"path": [p for p, _ in rows], "label": [lab for _, lab in rows], "split": ["test"] * 10}).to_csv(
        tmp_path / "eval.csv", index=False)
    dataset = load_csv_manifest(tmp_path / "eval.csv")
    assert len(dataset.split("test")) == 10 and dataset.provenance["test"] == "declared"
    with pytest.raises(DatasetError, match="declares no 'train' split"):
        dataset.split("train")


def test_csv_with_a_partly_empty_split_column_is_refused(tmp_path):
    rows = manifest_images(tmp_path, 5)
    pd.DataFrame({"path": [p for p, _ in rows], "label": [lab for _, lab in rows],
                  "split": ["train"] * 4 + [""] * 2 + ["test"] * 4}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match="2 of 10 rows .* have an unknown split, e.g. ''"):
        load_csv_manifest(tmp_path / "m.csv")


def test_label_str_wins_over_label(tmp_path):
    rows = manifest_images(tmp_path, 4)
    frame = pd.DataFrame({"path": [p for p, _ in rows], "label": [9] * 8,
                          "label_str": ["fake" if lab else "real" for _, lab in rows]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    assert labels_by_folder(load_csv_manifest(tmp_path / "m.csv")) == {("real", REAL), ("fake", FAKE)}


def test_folder_of_split_csvs_with_image_root(tmp_path):
    rows = manifest_images(tmp_path / "pics", 6)
    for split, part in (("train", slice(0, 4)), ("valid", slice(4, 5)), ("test", slice(5, 6))):
        chosen = rows[part] + rows[6:][part]
        pd.DataFrame({"path": [p for p, _ in chosen], "label": [lab for _, lab in chosen]}).to_csv(
            tmp_path / f"{split}.csv", index=False)
    dataset = load_csv_manifest(tmp_path, image_root=tmp_path / "pics")
    assert dataset.counts() == {"train": {"real": 4, "fake": 4}, "val": {"real": 1, "fake": 1},
                                "test": {"real": 1, "fake": 1}}


def test_csv_unknown_columns(tmp_path):
    pd.DataFrame({"img": ["a.png"], "y": [1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match=r"has columns \['img', 'y'\]; expected a path column"):
        load_csv_manifest(tmp_path / "m.csv")


def test_csv_labels_outside_zero_one(tmp_path):
    rows = manifest_images(tmp_path, 2)
    pd.DataFrame({"path": [p for p, _ in rows], "label": [0, 1, 2, "maybe"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match="2 of 4 rows .* labels outside .*'2', 'maybe'"):
        load_csv_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("escaping", ["../outside.png", "images/../../outside.png", "/etc/outside.png"])
def test_csv_path_escaping_the_root(tmp_path, escaping):
    root = tmp_path / "set"
    rows = manifest_images(root, 2)
    paths = [p for p, _ in rows] + [escaping]
    pd.DataFrame({"path": paths, "label": [0, 0, 1, 1, 1]}).to_csv(root / "m.csv", index=False)
    with pytest.raises(DatasetError, match="resolves outside the image root"):
        load_csv_manifest(root / "m.csv")


def test_csv_missing_files_are_dropped_then_refused(tmp_path):
    rows = manifest_images(tmp_path, 4)
    listed = [p for p, _ in rows]
    labels = [lab for _, lab in rows]
    pd.DataFrame({"path": listed + ["images/real/gone.png"], "label": labels + [0]}).to_csv(
        tmp_path / "few.csv", index=False)
    assert load_csv_manifest(tmp_path / "few.csv").dropped_rows == 1
    pd.DataFrame({"path": [f"x/{i}.png" for i in range(9)] + listed[:1], "label": [0] * 10}).to_csv(
        tmp_path / "most.csv", index=False)
    with pytest.raises(DatasetError, match=r"9 of 10 files .* do not exist, e\.g\. .*x/0\.png"):
        load_csv_manifest(tmp_path / "most.csv")


# ------------------------------------------------------------- Kaggle preset layouts


def kaggle_csv(path: Path, rows: list[tuple[str, int]], original_path: bool = False) -> None:
    """A Kaggle-style CSV (leading unnamed index) where label 1 = REAL."""
    frame = pd.DataFrame({
        "id": [Path(p).stem for p, _ in rows],
        "label": [0 if fake else 1 for _, fake in rows],
        "label_str": ["fake" if fake else "real" for _, fake in rows],
        "path": [p for p, _ in rows],
    })
    if original_path:
        frame.insert(0, "original_path", [f"/kaggle/input/{p}" for p, _ in rows])
    frame.to_csv(path)


def kaggle_tree(images: Path, splits: tuple[str, ...], count: int) -> dict[str, list[tuple[str, int]]]:
    rows: dict[str, list[tuple[str, int]]] = {}
    for split in splits:
        rows[split] = [
            (path.relative_to(images).as_posix(), fake)
            for cls, fake in (("real", 0), ("fake", 1))
            for path in write_images(images / split / cls, count)
        ]
    return rows


@pytest.mark.parametrize("with_label_str", [True, False])
def test_rvf10k_inverts_labels_and_pools_as_the_paper(tmp_path, with_label_str):
    rows = kaggle_tree(tmp_path / "rvf10k", ("train", "valid"), 5)
    for split, split_rows in rows.items():
        kaggle_csv(tmp_path / f"{split}.csv", split_rows)
        if not with_label_str:
            frame = pd.read_csv(tmp_path / f"{split}.csv", index_col=0).drop(columns="label_str")
            frame.to_csv(tmp_path / f"{split}.csv")
    dataset = resolve_dataset("rvf10k", tmp_path)
    assert dataset.name == "rvf10k"
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert dataset.counts() == {"train": {"real": 8, "fake": 8}, "val": {"real": 1, "fake": 1},
                                "test": {"real": 1, "fake": 1}}
    assert {s.source for s in dataset.split("train")} == {"rvf10k"}
    assert set(dataset.provenance.values()) == {"80/10/10 of the pooled train/valid images (the Pearson paper's split)"}


def test_rvf10k_without_csvs_reads_folders(tmp_path):
    kaggle_tree(tmp_path / "rvf10k", ("train", "valid"), 5)
    dataset = resolve_dataset("rvf10k", tmp_path)
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert sum(sum(c.values()) for c in dataset.counts().values()) == 20


def test_140k_keeps_its_splits_and_inverts_labels(tmp_path):
    rows = kaggle_tree(tmp_path / "real_vs_fake" / "real-vs-fake", ("train", "valid", "test"), 3)
    for split, split_rows in rows.items():
        kaggle_csv(tmp_path / f"{split}.csv", split_rows[:-1] if split == "train" else split_rows, original_path=True)
    dataset = resolve_dataset("140k", tmp_path)
    assert dataset.counts() == {"train": {"real": 3, "fake": 2}, "val": {"real": 3, "fake": 3},
                                "test": {"real": 3, "fake": 3}}
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}
    assert all("/valid/" in s.path for s in dataset.split("val"))


def test_140k_without_csvs_reads_folders(tmp_path):
    kaggle_tree(tmp_path / "real_vs_fake" / "real-vs-fake", ("train", "valid", "test"), 2)
    assert resolve_dataset("140k", tmp_path).counts()["test"] == {"real": 2, "fake": 2}


@pytest.mark.parametrize("nested", ["Dataset", ""])
def test_190k_layout(tmp_path, nested):
    split_tree(tmp_path / nested, splits=("Train", "Validation", "Test"), classes=("Real", "Fake"))
    dataset = resolve_dataset("190k", tmp_path)
    assert dataset.counts() == {split: {"real": 3, "fake": 3} for split in ("train", "val", "test")}
    assert labels_by_folder(dataset) == {("real", REAL), ("fake", FAKE)}


def test_gravex200k_with_manifest(tmp_path):
    real = write_images(tmp_path / "real", 10)
    fake = write_images(tmp_path / "ai_images", 10)
    pd.DataFrame({
        "filename": [p.relative_to(tmp_path).as_posix() for p in real + fake],
        "class": ["real"] * 10 + ["ai"] * 10,
    }).to_csv(tmp_path / "gravex.csv", index=False)
    dataset = resolve_dataset("gravex200k", tmp_path)
    assert dataset.counts()["train"] == {"real": 8, "fake": 8}
    assert labels_by_folder(dataset) == {("real", REAL), ("ai_images", FAKE)}


@pytest.mark.parametrize("ones_mean", ["real", "fake"])
def test_gravex200k_numeric_labels_are_read_off_the_class_folders(tmp_path, ones_mean):
    """The authors' loader reads 1 as real for their 200k CSVs; the folders say which convention a CSV uses."""
    real = write_images(tmp_path / "real", 10)
    fake = write_images(tmp_path / "ai_images", 10)
    one, zero = (1, 0) if ones_mean == "real" else (0, 1)
    pd.DataFrame({"path": [p.relative_to(tmp_path).as_posix() for p in real + fake],
                  "label": [one] * 10 + [zero] * 10}).to_csv(tmp_path / "labels.csv", index=False)
    dataset = resolve_dataset("gravex200k", tmp_path)
    assert labels_by_folder(dataset) == {("real", REAL), ("ai_images", FAKE)}


def test_gravex200k_refuses_to_guess_what_0_and_1_mean(tmp_path):
    flat = write_images(tmp_path / "images", 10)
    pd.DataFrame({"path": [p.relative_to(tmp_path).as_posix() for p in flat],
                  "label": [0, 1] * 5}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DatasetError, match="ambiguous"):
        resolve_dataset("gravex200k", tmp_path)
    real = write_images(tmp_path / "real", 10)
    fake = write_images(tmp_path / "ai_images", 10)
    pd.DataFrame({"path": [p.relative_to(tmp_path).as_posix() for p in real + fake],
                  "label": [0, 1] * 10}).to_csv(tmp_path / "labels.csv", index=False)  # half agree either way
    with pytest.raises(DatasetError, match="agree with the class folders"):
        resolve_dataset("gravex200k", tmp_path)


def test_gravex200k_folders_only(tmp_path):
    write_images(tmp_path / "real", 10)
    write_images(tmp_path / "ai_images", 10)
    dataset = resolve_dataset("gravex200k", tmp_path)
    assert dataset.counts()["test"] == {"real": 1, "fake": 1}
    assert labels_by_folder(dataset) == {("real", REAL), ("ai_images", FAKE)}


def test_deepfake330k_nested_in_one_top_folder(tmp_path):
    split_tree(tmp_path / "Deepfake-dataset", splits=("train", "validation", "test"), classes=("Real", "Fake"))
    dataset = resolve_dataset("deepfake330k", tmp_path)
    assert dataset.name == "deepfake330k"
    assert dataset.counts()["val"] == {"real": 3, "fake": 3}


# ------------------------------------------------------------------ resolve_dataset


def test_preset_needs_data_root():
    with pytest.raises(DatasetError, match="dataset 'rvf10k' needs --data-root pointing at"):
        resolve_dataset("rvf10k")


def test_preset_with_missing_data_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset("190k", tmp_path / "nowhere")


def test_unknown_spec(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope': expected 'synthetic'.*rvf10k"):
        resolve_dataset("nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset"):
        resolve_dataset(str(tmp_path / "notes.txt"))


def test_folder_and_csv_specs(tmp_path):
    root = split_tree(tmp_path / "tree")
    assert resolve_dataset(str(root)).name == f"folder:{root}"
    csv_dir = tmp_path / "csvs"  # images in one unlabelled folder: only the manifest knows the labels
    images = write_images(csv_dir / "pictures", 10)
    pd.DataFrame({"path": [p.relative_to(csv_dir).as_posix() for p in images], "label": [0, 1] * 5}).to_csv(
        csv_dir / "list.csv", index=False)
    by_dir = resolve_dataset(str(csv_dir))
    by_file = resolve_dataset(str(csv_dir / "list.csv"))
    assert by_dir.name == f"csv:{csv_dir}" and by_file.name == f"csv:{csv_dir / 'list.csv'}"
    assert relative_assignment(by_dir) == relative_assignment(by_file)
    assert by_dir.counts()["train"] == {"real": 3, "fake": 3}


@pytest.fixture
def synthetic_benchmark(tmp_path, monkeypatch):
    """A two-source benchmark tree behind a stand-in for the real generator."""
    root = tmp_path / "bench"
    for source in ("upconv", "faceswap"):
        split_tree(root / source, count=2)
    calls = []

    def ensure_benchmark(data_root=None):
        calls.append(data_root)
        return root

    monkeypatch.setitem(sys.modules, "core.data.synthetic", types.SimpleNamespace(ensure_benchmark=ensure_benchmark))
    return calls


def test_synthetic_pooled_and_single_source(synthetic_benchmark, tmp_path):
    pooled = resolve_dataset("synthetic")
    assert pooled.name == "synthetic"
    assert {s.source for s in pooled.split("train")} == {"upconv", "faceswap"}
    one = resolve_dataset("synthetic:faceswap", tmp_path)
    assert one.name == "synthetic:faceswap"
    assert {s.source for s in one.split("test")} == {"faceswap"}
    assert one.counts()["train"] == {"real": 2, "fake": 2}
    assert synthetic_benchmark == [None, tmp_path]
    with pytest.raises(DatasetError, match="unknown synthetic source 'gan': available sources are faceswap, upconv"):
        resolve_dataset("synthetic:gan")


def test_describe_datasets_lists_every_preset():
    text = describe_datasets()
    for preset in DATASETS.values():
        assert preset.name in text and preset.title in text
    assert "synthetic:<source>" in text
