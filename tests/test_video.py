"""Video-level detection: frame sampling, face crops, per-video verdicts, the annotated video, the face-crop dataset.

Test clips are made here from embedded-benchmark faces moving over backgrounds
(:mod:`core.data.synthetic_video`), at 320x180 and 10 fps to stay fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.data.datasets import FAKE, REAL, Sample
from core.data.frames import frames_per_label
from core.data.synthetic_video import ClipConfig, render_clip, write_video, write_video_dataset
from core.data.video import SamplingOptions, VideoError, probe_video, sample_frame_indices

REPO = Path(__file__).resolve().parents[1]
PEARSON = REPO / "checkpoints" / "student-pearson-resnet50-synthetic-faceswap.safetensors"
CLIP = ClipConfig(seconds=3.0, fps=10.0, width=320, height=180, face_side=110)


def _cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ))
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def _json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[Sample]:
    """A 64 px faceswap-only benchmark (all splits): enough faces for a few detectable clips."""
    from core.data.datasets import resolve_dataset
    from core.data.synthetic import SynthConfig, generate_benchmark

    root = tmp_path_factory.mktemp("faces") / "synthetic"
    generate_benchmark(root, SynthConfig(image_size=64, per_source=240, sources=("faceswap",)), workers=1, progress=False)
    splits = resolve_dataset("synthetic:faceswap", root).splits
    return [sample for split in splits.values() for sample in split]


@pytest.fixture(scope="module")
def clips(faces, tmp_path_factory) -> Path:
    """Three real and three fake clips under real/faceswap and fake/faceswap."""
    out = tmp_path_factory.mktemp("clips")
    write_video_dataset(out, faces, per_label=3, config=CLIP, progress=False)
    return out


# ---------------------------------------------------------------- sampling


def test_fixed_num_frames_spreads_evenly_and_never_repeats():
    assert sample_frame_indices(250, SamplingOptions(num_frames=32)) == [int((i + 0.5) * 250 / 32) for i in range(32)]
    assert sample_frame_indices(10, SamplingOptions(num_frames=32)) == list(range(10)), "a short video gives all its frames"
    drawn = sample_frame_indices(250, SamplingOptions(num_frames=32, random=True, seed=3))
    assert len(set(drawn)) == 32 and drawn == sorted(drawn) and all(0 <= i < 250 for i in drawn)
    assert drawn == sample_frame_indices(250, SamplingOptions(num_frames=32, random=True, seed=3)), "seeded"
    assert drawn != sample_frame_indices(250, SamplingOptions(num_frames=32, random=True, seed=4))
    assert sample_frame_indices(25, SamplingOptions(strategy="fixed_stride", stride=10)) == [0, 10, 20]
    assert sample_frame_indices(0, SamplingOptions()) == []
    with pytest.raises(ValueError, match="strategy"):
        SamplingOptions(strategy="every_frame")


# ---------------------------------------------------------------- labels, splits, balance


def test_plain_folders_are_labelled_by_their_first_class_folder(tmp_path):
    from core.data.benchmarks import index_benchmark

    for relative in ("clips/Fake/gan/a_1.mp4", "real/b.avi", "misc/c.mp4"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    index = index_benchmark(tmp_path)
    assert index.layout == "folders"
    by_id = {e.video_id: e for e in index.entries}
    assert (by_id["gan/a_1"].label, by_id["gan/a_1"].category) == (FAKE, "gan") and by_id["real/b"].label == REAL
    assert [(Path(s.path).name, s.reason) for s in index.skipped] == [("c.mp4", "no real/fake folder in its path")]


def test_split_is_by_group_stratified_deterministic_and_covers_every_split():
    from core.data.benchmarks import Entry, assign_splits

    entries = [Entry(f"{i}", REAL, "original", f"original/{i:03d}", (f"{i:03d}",)) for i in range(40)]
    entries += [Entry(f"{i}f", FAKE, "Deepfakes", f"Deepfakes/{i:03d}_1", (f"{i:03d}",)) for i in range(40)]
    splits = {e.video_id: e.split for e in assign_splits(entries)[0]}
    assert splits == {e.video_id: e.split for e in assign_splits(list(reversed(entries)))[0]}
    originals = [splits[f"original/{i:03d}"] for i in range(40)]
    assert [originals.count(name) for name in ("train", "val", "test")] == [32, 4, 4]
    assert all(splits[f"Deepfakes/{i:03d}_1"] == splits[f"original/{i:03d}"] for i in range(40)), "a fake with its original"
    plain = [Entry(n, label, "x", f"x/{n}", (f"x/{n}",)) for label in (REAL, FAKE) for n in (f"{label}a", f"{label}b", f"{label}c")]
    for label in (REAL, FAKE):  # three videos of each label: one per split, for both labels
        assert sorted(e.split for e in assign_splits(plain)[0] if e.label == label) == ["test", "train", "val"]
    assert {e.split for e in assign_splits(plain[:2])[0]} == {"train"}


def test_fake_videos_give_fewer_frames_when_they_outnumber_the_real_ones():
    from core.data.frames import Item

    entries = [Item(f"{i}", REAL, "original", f"original/{i}", f"{i}", "train") for i in range(2)]
    entries += [Item(f"{m}{i}", FAKE, m, f"{m}/{i}", f"{i}", "train")
                for m in ("Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures") for i in range(2)]
    assert frames_per_label(entries, 32, balance=True) == {REAL: 32, FAKE: 8}
    assert frames_per_label(entries, 32, balance=False) == {REAL: 32, FAKE: 32}


# ---------------------------------------------------------------- the video command


def test_video_command_gives_per_frame_scores_and_a_verdict_with_every_frame_annotated(clips, tmp_path):
    clip = next((clips / "fake" / "faceswap").glob("*.mp4"))
    out = tmp_path / "annotated.mp4"
    result = _json(_cli("video", str(clip), "--checkpoint", str(PEARSON), "--out", str(out), "--num-frames", "12", "--json"))
    source, written = probe_video(clip), probe_video(out)
    assert written.frames == source.frames == CLIP.frames and written.fps == pytest.approx(source.fps)
    assert (written.width, written.height) == (CLIP.width, CLIP.height)
    assert result["sampled"] == len(result["frames"]) == len(result["faces"]) == 12
    assert result["faces"] == [record["faces"] for record in result["frames"]]
    assert sum(result["faces"]) == result["faces_total"] >= 6, "the clip's face is found in most sampled frames"
    assert result["frames_without_face"] == [r["index"] for r in result["frames"] if r["faces"] == 0]
    scores = [s for record in result["frames"] for s in record["scores"]]
    assert result["video_score"] == pytest.approx(float(np.mean(scores)), abs=1e-5)
    assert result["label"] == ("fake" if result["video_score"] > 0.5 else "real")
    assert set(result["timing"]) == {"decode_s", "detect_s", "classify_s", "encode_s", "total_s"}
    assert result["output"]["frames"] == CLIP.frames and result["output"]["codec"] in ("avc1", "mp4v")
    median = _json(_cli("video", str(clip), "--checkpoint", str(PEARSON), "--num-frames", "12", "--aggregate", "max", "--json"))
    assert median["video_score"] == pytest.approx(max(scores), abs=1e-5) and "output" not in median


def test_scores_equal_the_model_on_the_same_crops(clips):
    import core
    from core.data.video import FaceOptions, crop, crop_box_of, find_faces, iterate_frames, smooth_tracks
    from core.evaluation.video import VideoOptions, analyse_video

    clip = next((clips / "real" / "faceswap").glob("*.mp4"))
    model = core.load_model(PEARSON)
    options = VideoOptions(sampling=SamplingOptions(num_frames=5), faces=FaceOptions(crop_scale=1.8))
    result = analyse_video(clip, model, options, progress=False)
    indices = [r["index"] for r in result["frames"]]
    frames = dict(iterate_frames(clip, indices))
    found = smooth_tracks({index: find_faces(frame, options.faces) for index, frame in frames.items()}, options.faces.smooth)
    for index, record in zip(indices, result["frames"], strict=True):
        assert record["faces"] == len(found[index]) and record["boxes"] == [list(f.box) for f in found[index]]
        frame = frames[index]
        for face, score in zip(found[index], record["scores"], strict=True):
            box = crop_box_of(face.box, (frame.shape[1], frame.shape[0]), options.faces)
            with torch.no_grad():
                expected = torch.sigmoid(model(model.preprocess(crop(frame, box))[None])).item()
            assert score == pytest.approx(expected, abs=1e-5)


def test_browser_playable_webm(clips, tmp_path):
    clip = next((clips / "real" / "faceswap").glob("*.mp4"))
    result = _json(_cli("video", str(clip), "--checkpoint", str(PEARSON), "--out", str(tmp_path / "a.webm"), "--num-frames", "4",
                        "--json"))
    assert result["output"]["codec"] == "VP80" and result["output"]["browser_playable"]
    assert probe_video(tmp_path / "a.webm").frames == CLIP.frames


def test_a_video_without_faces_reports_every_frame_and_gives_no_verdict(tmp_path):
    clip = write_video(tmp_path / "empty_room.mp4", render_clip(None, CLIP), CLIP.fps)
    result = _json(_cli("video", str(clip), "--checkpoint", str(PEARSON), "--out", str(tmp_path / "out.mp4"), "--json"))
    assert result["label"] is None and result["video_score"] is None and result["faces_total"] == 0
    assert result["frames_without_face"] == [r["index"] for r in result["frames"]] and len(result["frames"]) == CLIP.frames
    assert "no face found" in result["verdict"] and probe_video(tmp_path / "out.mp4").frames == CLIP.frames


def test_bad_videos_get_one_clear_line(tmp_path, capsys):
    from core.cli import main

    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4096))
    no_frames = tmp_path / "no_frames.avi"
    writer = cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    writer.release()
    huge = tmp_path / "huge.avi"
    writer = cv2.VideoWriter(str(huge), cv2.VideoWriter_fourcc(*"MJPG"), 25, (4096, 2304))
    writer.write(np.zeros((2304, 4096, 3), np.uint8))
    writer.release()
    for path, message in ((tmp_path / "zero.mp4", "empty file"), (tmp_path / "junk.mp4", "not a readable video"),
                          (no_frames, "no frames|not a readable video"), (huge, "larger than 4K"),
                          (tmp_path / "missing.mp4", "no such video")):
        assert main(["video", str(path), "--checkpoint", str(PEARSON)]) == 2, path  # in-process: the CLI's own handling
        stderr = capsys.readouterr().err
        (line,) = stderr.strip().splitlines()[-1:]
        assert line.startswith("error: ") and "Traceback" not in stderr
        assert any(m in line for m in message.split("|")), line
    with pytest.raises(VideoError):
        probe_video(tmp_path / "junk.mp4")


# ---------------------------------------------------------------- data frames -> train -> video-level AUC


def test_face_crop_dataset_trains_and_evaluates_with_video_level_auc(clips, tmp_path):
    from core.config import build_config
    from core.data.datasets import resolve_dataset
    from core.training.engine import train

    out = tmp_path / "crops"
    summary = _json(_cli("data", "frames", str(clips), "--out", str(out), "--frames-per-video", "6", "--size", "64", "--json"))
    assert summary["videos"] == 6 and summary["crops_per_label"]["real"] > 0 and summary["crops_per_label"]["fake"] > 0
    assert all(summary["crops_per_split"][s] > 0 for s in ("train", "val", "test"))
    dataset = resolve_dataset(str(out))
    seen = {split: {s.video_id for s in dataset.split(split)} for split in ("train", "val", "test")}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"]), "a video never straddles splits"
    assert all(s.video_id and s.source == "faceswap" for s in dataset.split("train"))
    again = _json(_cli("data", "frames", str(clips), "--out", str(out), "--frames-per-video", "6", "--size", "64", "--json"))
    assert again["frames_written"] == 0 and again["items_resumed"] == 6, "the same command again: nothing to do"
    other = _cli("data", "frames", str(clips), "--out", str(out), "--size", "32", ok=False)
    assert other.returncode == 2 and "options.size" in other.stderr, "another extraction into it is refused"
    config = build_config(method="teacher", arch="resnet-tiny", data=str(out), image_size=32, epochs=1, batch_size=16,
                          num_workers=0, runs_dir=str(tmp_path / "runs"))
    run = train(config, progress=False).run_dir
    metrics = _json(_cli("evaluate", str(run), "--data", str(out), "--json"))
    assert metrics["video"]["videos"] == len(seen["test"]) and "auc" in metrics["video"]
    assert set(metrics["per_source"]) == {"faceswap"}


# ---------------------------------------------------------------- the dashboard page


def test_video_page_analyses_an_upload_and_refuses_a_broken_one(tiny_benchmark, clips):
    from streamlit.testing.v1 import AppTest

    clip = next((clips / "fake" / "faceswap").glob("*.mp4"))
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180).run()
    app.switch_page("views/video.py").run()
    assert not app.exception and app.title[0].value == "Video"
    assert "student-pearson" in app.selectbox(key="video_checkpoint").value
    app.slider(key="video_frames").set_value(8)
    app.file_uploader(key="video_upload").set_value((clip.name, clip.read_bytes(), "video/mp4")).run()
    app.button(key="video_run").click().run()
    assert not app.exception and not app.error
    verdict = next(m for m in app.metric if m.label == "Verdict")
    assert verdict.value in ("FAKE", "REAL")
    assert len(app.get("video")) == 1 and len(app.get("plotly_chart")) == 1
    app.file_uploader(key="video_upload").set_value(("broken.mp4", os.urandom(2048), "video/mp4")).run()
    app.button(key="video_run").click().run()
    assert not app.exception and app.error[0].value.startswith("Cannot use this file: broken.mp4 does not start like a video")
