"""Face-crop extraction at dataset scale (``core.data.frames.extract_items``): videos, videos given as frame images
and annotated faces give their crops and records; bad input is recorded, never fatal; a run killed mid-way resumes
without writing a frame twice; two worker processes give the dataset one gives; another extraction's folder is
refused with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.datasets import FAKE, REAL, resolve_dataset
from core.data.frames import MANIFEST_COLUMNS, Item, extract_items, item_names
from core.data.synthetic_video import ClipConfig, render_clip, write_video, write_video_dataset
from core.data.video import FaceOptions, SamplingOptions, VideoError, crop, crop_box_of, iterate_frames, sample_frame_indices
from core.io import PAUSE_AT, PAUSE_FILE

REPO = Path(__file__).resolve().parents[1]
CLIP = ClipConfig(seconds=1.0, fps=10.0, width=128, height=96, face_side=64)  # 10 frames
SIZE = 32  # side of the saved crops
SOURCE = {"layout": "test-layout", "root": "clips"}


@pytest.fixture(scope="module")
def clips(tiny_benchmark, tmp_path_factory) -> list[dict]:
    """Two real and two fake clips of the tiny benchmark's faces, whose face the pipeline finds."""
    return write_video_dataset(tmp_path_factory.mktemp("clips"), resolve_dataset("synthetic").split("all"), per_label=2,
                               config=CLIP, progress=False)


def _video_item(clip: dict, split: str) -> Item:
    stem = Path(clip["path"]).stem
    return Item(clip["path"], clip["label"], f"{clip['source']}-{clip['label']}", f"clips/{stem}", stem, split)


def _frame_images(folder: Path, clip: dict) -> tuple[str, ...]:
    """The clip's frames as PNG files, as DeepfakeBench ships its videos."""
    folder.mkdir(parents=True)
    for index, frame in iterate_frames(clip["path"]):
        Image.fromarray(frame).save(folder / f"{index:03d}.png")
    return tuple(str(path) for path in sorted(folder.glob("*.png")))


def _annotated_image(path: Path, clip: dict) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """An image holding two faces at known places (OpenForensics-style annotations)."""
    face = Image.open(clip["image"]).convert("RGB").resize((60, 60))
    image = Image.new("RGB", (200, 100), (90, 120, 150))
    image.paste(face, (10, 20))
    image.paste(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (120, 30))
    image.save(path)
    return path, [(10, 20, 60, 60), (120, 30, 60, 60)]


@pytest.fixture(scope="module")
def items(clips, tmp_path_factory) -> list[Item]:
    """Every kind: 2 real videos, 1 fake video, 1 fake given as its frame images, 1 faceless fake video, and the two
    annotated faces of one image (fakes outnumber reals 3 to 2 among the videos: a fake video gets fewer frames)."""
    folder = tmp_path_factory.mktemp("inputs")
    real, fake = [c for c in clips if c["label"] == REAL], [c for c in clips if c["label"] == FAKE]
    faceless = write_video(folder / "empty_room.mp4", render_clip(None, CLIP), CLIP.fps)
    image, boxes = _annotated_image(folder / "two_faces.png", fake[0])
    return [_video_item(real[0], "train"), _video_item(real[1], "test"), _video_item(fake[0], "train"),
            Item(str(folder / "frames"), FAKE, "frames-fake", "frames/fake_001", "fake_001", "test",
                 frames=_frame_images(folder / "frames", fake[1])),
            Item(str(faceless), FAKE, "empty", "empty/room", "room", "val"),
            *[Item(str(image), FAKE, "openforensics", "images/two_faces", "two_faces", "val", box=box) for box in boxes]]


def _extract(items: list[Item], out: Path, source: dict = SOURCE, **options) -> dict:
    return extract_items(items, out, source=source, **{"frames_per_video": 4, "size": SIZE, "progress": False, **options})


@pytest.fixture(scope="module")
def unbroken(items, tmp_path_factory) -> tuple[dict, Path]:
    """One run, start to end, in this process."""
    out = tmp_path_factory.mktemp("unbroken") / "crops"
    return _extract(items, out), out


def _manifest(out: Path) -> str:
    return (out / "manifest.csv").read_text()


def _pngs(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out`` but the records: relative path -> (inode, mtime in ns)."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix == ".png"}


def test_videos_frame_images_and_annotated_faces_give_their_crops_and_records(items, unbroken):
    summary, out = unbroken
    rows = [line.split(",") for line in _manifest(out).splitlines()]
    assert rows[0] == MANIFEST_COLUMNS == ["path", "label", "split", "source", "video_id", "group"]
    meta = json.loads((out / "frames.json").read_text())
    assert meta["layout"] == "test-layout" and meta["source"] == SOURCE and meta["config"]["size"] == SIZE
    records = meta["per_video"]
    assert [r["video_id"] for r in records] == [i.video_id for i in items], "one record per item, in order"
    assert [r["kind"] for r in records] == ["video"] * 3 + ["frames", "video", "box", "box"]
    # balance: 2 real videos, 3 fake ones -> 4 frames per real, round(4 x 2/3) = 3 per fake
    assert summary["frames_per_video"] == {"real": 4, "fake": 3}
    for item, record in zip(items[:5], records[:5], strict=True):
        count = 4 if item.label == REAL else 3
        assert sorted(record["frames_with_face"] + record["frames_without_face"]) == \
            sample_frame_indices(CLIP.frames, SamplingOptions(num_frames=count)), item.video_id
        assert record["sampled"] == count and record["faces"] == len(record["frames_with_face"])
    assert all(records[k]["faces"] >= 2 for k in range(4)), "the clips' faces are found"
    faceless = records[4]
    assert faceless["faces"] == 0 and faceless["frames_without_face"] == [1, 5, 8] and "error" not in faceless
    assert summary["frames_without_face"] == sum(len(r["frames_without_face"]) for r in records)
    # the manifest lists exactly the records' crops, each once, with the item's label, split, category, id and group
    expected = []
    for item, record, name in zip(items, records, item_names(items), strict=True):
        crops = [f"faces/{name}.png"] if item.box else [f"videos/{name}/{i:06d}.png" for i in record["frames_with_face"]]
        expected += [[path, str(item.label), item.split, item.category, item.video_id, item.group] for path in crops]
    assert rows[1:] == expected and summary["crops"] == len(expected) == summary["frames_written"]
    assert set(_pngs(out)) == {row[0] for row in expected}, "no other image is written"
    assert all(Image.open(out / row[0]).size == (SIZE, SIZE) for row in expected)
    assert [row[0] for row in expected[-2:]] == ["faces/openforensics__images__two_faces__0.png",
                                                 "faces/openforensics__images__two_faces__1.png"]
    # an annotated face is cropped as a detected one would be: crop_scale x its box, no detector
    image = np.asarray(Image.open(items[-1].source).convert("RGB"))
    wanted = crop(image, crop_box_of(items[-1].box, (200, 100), FaceOptions())).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(out / expected[-1][0])), np.asarray(wanted))
    assert {k: records[-1][k] for k in ("sampled", "faces", "box")} == {"sampled": 1, "faces": 1, "box": [120, 30, 60, 60]}


def test_file_names_are_unique_even_when_stems_repeat():
    def item(video_id: str, category: str = "DFDC", box=None) -> Item:
        return Item("x", FAKE, category, video_id, video_id, "train", box=box)

    names = item_names([item("dfdc_train_part_0/aaa"), item("dfdc_train_part_1/aaa"),  # DFDC parts share stems
                        item("id0_0000", "Celeb-real"), item("id0_0000", "Celeb-synthesis"),  # so do Celeb-DF's
                        item("Deepfakes/000_003", "Deepfakes"),  # an id that starts with its category keeps it once
                        item("a/b"), item("a__b"), item("Case"), item("case"),  # clashes once made file names
                        item("img/1", "OF", (0, 0, 5, 5)), item("img/1", "OF", (9, 9, 5, 5)), item("../../etc passwd")])
    assert names[:5] == ["DFDC__dfdc_train_part_0__aaa", "DFDC__dfdc_train_part_1__aaa", "Celeb-real__id0_0000",
                         "Celeb-synthesis__id0_0000", "Deepfakes__000_003"]
    assert names[9:11] == ["OF__img__1__0", "OF__img__1__1"]
    assert len({name.lower() for name in names}) == len(names), names
    assert all("/" not in name and not name.startswith(".") and " " not in name for name in names)


def test_bad_input_is_recorded_and_the_run_goes_on(clips, tmp_path):
    junk, empty = tmp_path / "junk.mp4", tmp_path / "empty.mp4"
    junk.write_bytes(os.urandom(4096))
    empty.write_bytes(b"")
    frames = _frame_images(tmp_path / "frames", clips[0])
    Path(frames[3]).unlink()
    Path(frames[6]).write_bytes(b"not a png")
    gone = tuple(str(tmp_path / "gone" / f"{i}.png") for i in range(4))
    items = [_video_item(clips[0], "train"), Item(str(junk), FAKE, "junk", "junk/1", "1", "test"),
             Item(str(empty), FAKE, "junk", "junk/2", "2", "test"),
             Item(str(tmp_path / "frames"), REAL, "frames", "frames/1", "f1", "train", frames=frames),
             Item(str(tmp_path / "gone"), REAL, "frames", "frames/2", "f2", "train", frames=gone),
             Item(str(junk), FAKE, "of", "images/junk", "junk", "test", box=(0, 0, 10, 10))]
    summary = _extract(items, tmp_path / "out", frames_per_video=10, balance=False)
    records = json.loads((tmp_path / "out" / "frames.json").read_text())["per_video"]
    assert "not a readable video" in records[1]["error"] and "empty file" in records[2]["error"]
    skipped = {s["index"]: s["reason"] for s in records[3]["skipped_frames"]}
    assert set(skipped) == {3, 6} and "No such file" in skipped[3] and "cannot identify image" in skipped[6]
    assert records[3]["sampled"] == 8 and records[3]["faces"] > 0 and "error" not in records[3]
    assert len(records[4]["skipped_frames"]) == 4 and "none of the 4 sampled frame images" in records[4]["error"]
    assert "error" in records[5] and records[5]["faces"] == 0
    assert summary["unreadable_videos"] == [str(junk), str(empty), str(tmp_path / "gone"), str(junk)]
    assert summary["skipped_frames"] == 6 and summary["crops"] == records[0]["faces"] + records[3]["faces"] > 0


RUN = """
import json, sys
from core.data.frames import Item, extract_items
spec = json.loads(open(sys.argv[1]).read())
items = [Item(**{**i, "frames": tuple(i["frames"]), "box": tuple(i["box"]) if i["box"] else None}) for i in spec["items"]]
extract_items(items, spec["out"], source=spec["source"], frames_per_video=4, size=spec["size"], progress=False)
"""


def test_a_run_killed_mid_way_resumes_writing_each_frame_once(items, unbroken, tmp_path):
    out, ready = tmp_path / "crops", tmp_path / "paused"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"items": [asdict(i) for i in items], "out": str(out), "source": SOURCE, "size": SIZE}))
    env = {**os.environ, "PYTHONPATH": str(REPO), PAUSE_AT: "frame@6", PAUSE_FILE: str(ready)}
    process = subprocess.Popen([sys.executable, "-c", RUN, str(spec)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):  # the 6th crop is written, its item's record is not
            if ready.exists() or process.poll() is not None:
                break
            time.sleep(0.02)
        assert ready.exists(), process.stderr.read() if process.poll() is not None else "no pause within 60 s"
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()
    before = _pngs(out)
    finished = len(list((out / "items").glob("*.json")))
    assert len(before) == 6 and 1 <= finished < len(items) and not (out / "manifest.csv").exists()

    summary = _extract(items, out)
    assert summary["items_resumed"] == finished
    assert summary["frames_written"] == summary["crops"] - len(before), "each frame is written once over the two runs"
    after = _pngs(out)
    assert {path: after[path] for path in before} == before, "the crops of the killed run are untouched (inode, mtime)"
    paths = [line.split(",")[0] for line in _manifest(out).splitlines()[1:]]
    assert len(paths) == len(set(paths)) == len(after), "the manifest lists each crop once"
    assert _manifest(out) == _manifest(unbroken[1]), "the resumed dataset is the unbroken run's"
    assert not list(out.rglob("*.tmp"))


def test_two_worker_processes_give_the_dataset_one_gives(items, unbroken, tmp_path):
    seen = []
    summary = _extract(items, tmp_path / "crops", workers=2, on_progress=lambda done, total: seen.append((done, total)))
    assert _manifest(tmp_path / "crops") == _manifest(unbroken[1])
    frames_json = json.loads((tmp_path / "crops" / "frames.json").read_text())
    assert frames_json["per_video"] == json.loads((unbroken[1] / "frames.json").read_text())["per_video"]
    assert summary["frames_written"] == unbroken[0]["frames_written"] and summary["workers"] == 2
    assert seen[0] == (0, len(items)) and seen[-1] == (len(items), len(items)) and len(seen) == len(items) + 1


def test_another_extraction_or_a_foreign_folder_is_refused_with_nothing_written(items, unbroken, tmp_path):
    _, out = unbroken
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for changed, differs in (({"size": 64}, "options.size"), ({"frames_per_video": 8}, "options.frames_per_video"),
                             ({"items": items[:-1]}, "items"), ({"source": {**SOURCE, "root": "other"}}, "source.root")):
        options = {"items": items, "source": SOURCE, **changed}
        with pytest.raises(VideoError, match="not empty: it holds another extraction") as refused:
            _extract(options.pop("items"), out, **options)
        assert differs in str(refused.value) and "\n" not in str(refused.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(VideoError, match="not empty and holds no extraction.json"):
        _extract(items, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    again = _extract(items, out)  # the same extraction: everything is finished, nothing is written
    assert again["items_resumed"] == len(items) and again["frames_written"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix == ".png"} == \
        {p: t for p, t in files.items() if p.suffix == ".png"}


def test_bench_frames_smoke_reports_what_it_timed(tiny_benchmark, tmp_path):
    import statistics

    from bench import run_benchmark
    from bench.frames import WORKERS_CORES_TARGET

    result, path = run_benchmark("frames", smoke=True, out=tmp_path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(result)) and result["summary"].startswith("frames: ")
    assert {"machine", "date", "config", "raw_s", "median_s", "rates", "ratios", "targets"} <= set(result)
    medians = {name: statistics.median(values) for name, values in result["raw_s"].items()}
    assert result["median_s"] == pytest.approx(medians, abs=1e-4)
    speedup = result["ratios"]["workers 2 / workers 1 speed-up"]
    assert speedup == pytest.approx(medians["workers 1"] / medians["workers 2"], rel=1e-3)
    busy = result["median_cpu_s"]["workers 2"] / result["median_s"]["workers 2"]
    assert result["ratios"]["workers 2: cores busy (CPU seconds / wall seconds)"] == pytest.approx(busy, rel=1e-2)
    target = result["targets"]["workers 2: cores busy"]
    assert target["target"] == WORKERS_CORES_TARGET and target["value"] == pytest.approx(busy, rel=1e-2)
    assert target["met"] is (target["value"] >= WORKERS_CORES_TARGET)
    sampled = result["config"]["sampled_frames"]
    assert sampled == 2 * 4 and 0 < result["config"]["crops"] <= sampled
    for workers in (1, 2):
        assert result["rates"][f"workers {workers}"]["sampled_frames_per_s"] == \
            pytest.approx(sampled / medians[f"workers {workers}"], rel=1e-2, abs=0.006)  # the JSON rounds to 0.01
