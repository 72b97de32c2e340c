"""Small trees in each video benchmark's layout, as its authors distribute it (shared by the benchmark tests).

Videos are empty files unless ``clip`` is given (a function writing a real clip to a path): listing and splitting
never open a video.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

Writer = Callable[[Path, int], None]  # (path, label) -> writes a video there


def _video(path: Path, label: int, clip: Writer | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if clip is None:
        path.write_bytes(b"")
    else:
        clip(path, label)
    return path


# 12 FaceForensics++ ids in 6 pairs; the official split: 4 pairs train, 1 val, 1 test
FFPP_PAIRS = {"train": [["000", "003"], ["001", "010"], ["002", "006"], ["004", "008"]], "val": [["005", "009"]],
              "test": [["007", "011"]]}


def ffpp_tree(root: Path, methods=("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"), compressions=("c23",),
              split_files: bool = True, clip: Writer | None = None, pairs: dict | None = None) -> Path:
    pairs = pairs or FFPP_PAIRS
    for compression in compressions:
        for pair in (p for split in pairs.values() for p in split):
            for target, source in (pair, pair[::-1]):
                _video(root / f"original_sequences/youtube/{compression}/videos/{target}.mp4", 0, clip)
                for method in methods:
                    _video(root / f"manipulated_sequences/{method}/{compression}/videos/{target}_{source}.mp4", 1, clip)
    if split_files:
        (root / "splits").mkdir(parents=True, exist_ok=True)
        for split, listed in pairs.items():
            (root / "splits" / f"{split}.json").write_text(json.dumps(listed))
    return root


def celebdf_tree(root: Path, test_list: bool = True, clip: Writer | None = None) -> Path:
    """id0..id5 real videos, YouTube-real videos, syntheses idX_idY; the test list names one of each kind."""
    for person in range(6):
        for take in range(2):
            _video(root / f"Celeb-real/id{person}_{take:04d}.mp4", 0, clip)
    for number in range(4):
        _video(root / f"YouTube-real/{number:05d}.mp4", 0, clip)
    for target, source in ((0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)):
        _video(root / f"Celeb-synthesis/id{target}_id{source}_0000.mp4", 1, clip)
    if test_list:
        (root / "List_of_testing_videos.txt").write_text(
            "1 YouTube-real/00003.mp4\n1 Celeb-real/id4_0000.mp4\n1 Celeb-real/id4_0001.mp4\n"
            "0 Celeb-synthesis/id4_id5_0000.mp4\n0 Celeb-synthesis/id5_id4_0000.mp4\n")
    return root


def dfdc_tree(root: Path, clip: Writer | None = None) -> Path:
    """Two training parts and a test part; every fake names its original."""
    parts = {"dfdc_train_part_0": ("train", ["aaa", "bbb"]), "dfdc_train_part_1": ("train", ["ccc", "ddd", "eee"]),
             "test": ("test", ["fff", "ggg"])}
    for part, (split, originals) in parts.items():
        metadata = {}
        for original in originals:
            _video(root / part / f"{original}.mp4", 0, clip)
            metadata[f"{original}.mp4"] = {"label": "REAL", "split": split, "original": None}
            for variant in range(2):
                name = f"{original}x{variant}.mp4"
                _video(root / part / name, 1, clip)
                metadata[name] = {"label": "FAKE", "split": split, "original": f"{original}.mp4"}
        (root / part / "metadata.json").write_text(json.dumps(metadata))
    return root


def openforensics_tree(root: Path) -> Path:
    """Each set has two images with a real and a fake face each (COCO-style boxes)."""
    for subset in ("Train", "Val", "Test-Dev", "Test-Challenge"):
        images, annotations = [], []
        for index in range(2):
            name = f"{subset.lower()}_{index}.jpg"
            (root / subset).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (160, 120), (40 * index, 90, 150)).save(root / subset / name)
            images.append({"id": index, "file_name": name, "width": 160, "height": 120})
            annotations += [{"id": 2 * index, "image_id": index, "bbox": [10, 20, 40, 40], "category_id": 0},
                            {"id": 2 * index + 1, "image_id": index, "bbox": [90.4, 30.6, 50, 50], "category_id": 1}]
        (root / f"{subset}_poly.json").write_text(json.dumps({
            "images": images, "annotations": annotations,
            "categories": [{"id": 0, "name": "Real"}, {"id": 1, "name": "Fake"}]}))
    return root


def deepfakebench_tree(root: Path, faces: list[Path]) -> Path:
    """A DeepfakeBench data root: ``dataset_json/Celeb-DF-v2.json`` over frames/ (the index names frames under
    ``datasets/rgb/``, as DeepfakeBench's scripts write them); its val repeats its test, as DeepfakeBench's does."""
    videos = {"CelebDFv2_real": ["id0_0000", "id1_0000", "id2_0000", "id3_0000", "id4_0000", "id6_0000", "00001", "00002"],
              "CelebDFv2_fake": ["id0_id1_0000", "id1_id0_0000", "id2_id3_0000", "id3_id2_0000", "id4_id5_0000"]}
    test = {"id3_0000", "id3_id2_0000", "id2_id3_0000", "id2_0000"}
    block: dict = {}
    position = 0
    for label_key, names in videos.items():
        for name in names:
            frames = []
            for frame in range(3):
                path = root / "Celeb-DF-v2" / label_key / "frames" / name / f"{frame:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.open(faces[position % len(faces)]).save(path)
                position += 1
                frames.append(f"datasets/rgb/Celeb-DF-v2/{label_key}/frames/{name}/{frame:03d}.png")
            modes = ["test", "val"] if name in test else ["train"]
            for mode in modes:
                block.setdefault(label_key, {}).setdefault(mode, {})[name] = {"label": label_key, "frames": frames}
    (root / "dataset_json").mkdir(parents=True, exist_ok=True)
    (root / "dataset_json" / "Celeb-DF-v2.json").write_text(json.dumps({"Celeb-DF-v2": block}))
    return root
