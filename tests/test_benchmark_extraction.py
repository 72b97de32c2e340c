"""The video benchmarks end to end, on trees in their authors' layouts with real (synthetic) clips: ``data frames``
writes every video's crops in the split its authors' files name (FaceForensics++: the pair's), without them no
identity in two splits; a checkpoint evaluated on a Celeb-DF tree reports frame- and video-level AUC, EER and AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from benchmark_trees import FFPP_PAIRS, celebdf_tree, ffpp_tree
from cli_support import cli_json
from PIL import Image
from sklearn import metrics as skm

import core
from core.checkpoint import save_checkpoint
from core.data.datasets import FAKE, REAL, resolve_dataset
from core.data.synthetic_video import ClipConfig, detectable, render_clip, write_video
from core.models import build_model

CLIP = ClipConfig(seconds=0.4, fps=10.0, width=128, height=96, face_side=64)  # 4 frames
FRAMES = ["--frames-per-video", "2", "--no-balance", "--size", "32"]


@pytest.fixture(scope="module")
def clip(tiny_benchmark):
    """Writes a clip of a face the video pipeline finds, real or fake by the label (cycling through a few faces)."""
    samples = resolve_dataset("synthetic:faceswap").split("all")
    faces = {label: detectable([s for s in samples if s.label == label], 3, CLIP) for label in (REAL, FAKE)}
    assert all(len(found) == 3 for found in faces.values())
    made = {REAL: 0, FAKE: 0}

    def write(path: Path, label: int) -> None:
        with Image.open(faces[label][made[label] % 3].path) as image:
            write_video(path, render_clip(image.convert("RGB"), CLIP), CLIP.fps)
        made[label] += 1

    return write


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_model("resnet-tiny").eval(), {
        "method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "dataset": "synthetic", "metrics": {}})
    return path


def test_ffpp_crops_land_in_their_pairs_official_split_and_without_it_no_identity_crosses(clip, tmp_path):
    root = ffpp_tree(tmp_path / "ff", methods=("Deepfakes",), clip=clip)
    summary = cli_json("data", "frames", str(root), "--out", str(tmp_path / "official"), "--methods", "Deepfakes", *FRAMES)
    assert summary["layout"] == "ffpp" and summary["videos"] == 24 and summary["left_out"] == []
    official = {person: split for split, pairs in FFPP_PAIRS.items() for pair in pairs for person in pair}
    manifest = pd.read_csv(tmp_path / "official" / "manifest.csv", dtype=str)
    assert set(manifest["video_id"].map(lambda v: v.split("/")[0])) == {"original", "Deepfakes"}
    for row in manifest.itertuples():
        people = Path(row.video_id).name.split("_")
        assert row.split == official[people[0]] == official[people[-1]], row.video_id
    assert set(manifest["split"]) == {"train", "val", "test"}
    dataset = resolve_dataset("ffpp", str(tmp_path / "official"))
    assert dataset.name == "ffpp" and len(dataset.split("test")) == int((manifest["split"] == "test").sum())

    for split in ("train", "val", "test"):
        (root / "splits" / f"{split}.json").unlink()
    cli_json("data", "frames", str(root), "--out", str(tmp_path / "groups"), "--methods", "Deepfakes", *FRAMES)
    report = cli_json("data", "check", "ffpp", "--data-root", str(tmp_path / "groups"), "--no-cache")
    assert report["shared_across_splits"] == {"videos": 0, "groups": 0, "listed": []}
    where: dict[str, set] = {}
    for row in pd.read_csv(tmp_path / "groups" / "manifest.csv", dtype=str).itertuples():
        for person in Path(row.video_id).name.split("_"):
            where.setdefault(person, set()).add(row.split)
    assert all(len(splits) == 1 for splits in where.values()), "an identity in two splits"


def test_a_checkpoint_on_celebdf_reports_frame_and_video_level_metrics(clip, checkpoint, tmp_path):
    root = celebdf_tree(tmp_path / "cd", clip=clip)
    out = tmp_path / "crops"
    summary = cli_json("data", "frames", str(root), "--out", str(out), *FRAMES)
    assert summary["layout"] == "celebdf" and "List_of_testing_videos.txt" in summary["split_provenance"]["test"]
    result = cli_json("evaluate", str(checkpoint), "--data", "celebdf", "--data-root", str(out), "--no-cache")
    dataset = resolve_dataset("celebdf", str(out))
    test = dataset.split("test")
    assert {s.video_id for s in test} == {"YouTube-real/00003", "Celeb-real/id4_0000", "Celeb-real/id4_0001",
                                         "Celeb-synthesis/id4_id5_0000", "Celeb-synthesis/id5_id4_0000"}
    # independently: the checkpoint's probability of every test crop, then each video's mean
    model = core.load_model(checkpoint)
    with torch.no_grad():
        batch = torch.stack([model.preprocess(Image.open(s.path).convert("RGB")) for s in test])
        probabilities = torch.sigmoid(model(batch).reshape(-1)).numpy()
    labels = np.array([s.label for s in test])
    assert result["n"] == len(test) and result["auc"] == pytest.approx(skm.roc_auc_score(labels, probabilities), abs=1e-6)
    videos = sorted({s.video_id for s in test})
    scores = np.array([probabilities[[s.video_id == v for s in test]].mean() for v in videos])
    truth = np.array([next(s.label for s in test if s.video_id == v) for v in videos])
    video = result["video"]
    assert video["videos"] == 5 and video["auc"] == pytest.approx(skm.roc_auc_score(truth, scores), abs=1e-6)
    assert video["ap"] == pytest.approx(skm.average_precision_score(truth, scores), abs=1e-6)
    assert 0.0 <= video["eer"] <= 1.0
