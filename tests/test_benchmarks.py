"""The video benchmarks' layouts as their authors distribute them (core.data.benchmarks): every video lands in the split
its authors' files name; without those files no identity is in two splits; FaceForensics++'s compression and methods
are picked; bad input is one line and loses nothing. Trees are made here (tests/benchmark_trees.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from benchmark_trees import FFPP_PAIRS, celebdf_tree, deepfakebench_tree, dfdc_tree, ffpp_tree, openforensics_tree

from core.data.benchmarks import GROUPS, OFFICIAL, detect_layout, index_benchmark
from core.data.datasets import FAKE, REAL, DatasetError, identity_groups, resolve_dataset


def _splits_by_person(index) -> dict[str, set[str]]:
    where = defaultdict(set)
    for entry in index.entries:
        for person in entry.identities:
            where[person].add(entry.split)
    return where


def test_ffpp_official_split_puts_each_pair_and_its_fakes_where_the_files_say(tmp_path):
    index = index_benchmark(ffpp_tree(tmp_path / "ff"))
    assert index.layout == "ffpp" and detect_layout(tmp_path / "ff") == "ffpp"
    official = {person: split for split, pairs in FFPP_PAIRS.items() for pair in pairs for person in pair}
    by_name = {Path(e.video_id).name: e for e in index.entries}
    assert len(index.entries) == 12 * 5  # 12 originals, 12 fakes for each of the 4 default methods
    for name, entry in by_name.items():
        assert entry.split == official[name.split("_")[0]] == official[name.split("_")[-1]], name
    fakes = [e for e in index.entries if e.label == FAKE]
    assert {e.category for e in fakes} == {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
    assert all(split.startswith(OFFICIAL) for split in index.provenance.values()) and index.skipped == []
    items = index.items()
    assert {item.split for item in items} == {"train", "val", "test"} and all(item.group for item in items)


def test_ffpp_without_split_files_never_puts_one_identity_in_two_splits(tmp_path):
    pairs = {"train": [[f"{i:03d}", f"{i + 1:03d}"] for i in range(0, 40, 2)]}
    pairs["train"] += [["041", "002"], ["043", "044"], ["044", "045"]]  # chains: 000-001-041-002-003..., 043-044-045
    index = index_benchmark(ffpp_tree(tmp_path / "ff", split_files=False, pairs=pairs))
    assert index.provenance == dict.fromkeys(("train", "val", "test"), GROUPS)
    assert all(len(splits) == 1 for splits in _splits_by_person(index).values()), "an identity in two splits"
    assert {e.split for e in index.entries} == {"train", "val", "test"}
    groups = identity_groups({e.video_id: e.identities for e in index.entries})
    assert groups["original/041"] == groups["original/002"] == groups["original/003"]  # 041_002 ties 041 to 002's pair
    assert len({groups["original/043"], groups["original/045"]}) == 1


def test_ffpp_compression_and_methods_are_picked(tmp_path):
    root = ffpp_tree(tmp_path / "ff", methods=("Deepfakes", "FaceShifter"), compressions=("c23", "c40"))
    c40 = index_benchmark(root, compression="c40", methods=("FaceShifter",))
    assert all("/c40/" in e.source for e in c40.entries) and {e.category for e in c40.entries} == {"original", "FaceShifter"}
    default = index_benchmark(root, methods=("Deepfakes",))
    assert all("/c23/" in e.source for e in default.entries)
    with pytest.raises(DatasetError, match="no manipulated_sequences/Face2Face .on disk: Deepfakes, FaceShifter"):
        index_benchmark(root)  # the paper's four are the default; two are not on disk
    with pytest.raises(DatasetError, match="c0 on disk"):
        index_benchmark(root, compression="c0", methods=("Deepfakes",))
    with pytest.raises(DatasetError, match="--methods: not an option of the celebdf layout"):
        index_benchmark(celebdf_tree(tmp_path / "cd"), methods=("Deepfakes",))


def test_ffpp_split_file_naming_a_missing_video_is_left_out_with_its_reason(tmp_path):
    root = ffpp_tree(tmp_path / "ff")
    (root / "original_sequences/youtube/c23/videos/011.mp4").unlink()
    index = index_benchmark(root)
    assert [(s.path, s.reason) for s in index.skipped] == [("011", "named by test.json, not on disk")]
    (root / "splits" / "val.json").write_text("[[\"005\", ")
    with pytest.raises(DatasetError, match="val.json: not a FaceForensics\\+\\+ split file"):
        index_benchmark(root)
    with pytest.raises(DatasetError, match="no train.json .FaceForensics\\+\\+ publishes"):
        index_benchmark(root, split_files=tmp_path)


def test_celebdf_test_list_is_the_test_split_and_val_is_carved_by_identity(tmp_path):
    root = celebdf_tree(tmp_path / "cd")
    index = index_benchmark(root)
    assert index.layout == "celebdf"
    listed = {"YouTube-real/00003", "Celeb-real/id4_0000", "Celeb-real/id4_0001", "Celeb-synthesis/id4_id5_0000",
              "Celeb-synthesis/id5_id4_0000"}
    assert {e.video_id for e in index.entries if e.split == "test"} == listed
    assert "List_of_testing_videos.txt" in index.provenance["test"] and index.provenance["val"].startswith("carved")
    train_val = [e for e in index.entries if e.split != "test"]
    people = defaultdict(set)
    for entry in train_val:
        for person in entry.identities:
            people[person].add(entry.split)
    assert all(len(splits) == 1 for splits in people.values()) and {e.split for e in train_val} == {"train", "val"}
    (root / "Celeb-real" / "id4_0001.mp4").unlink()
    assert [s.reason for s in index_benchmark(root).skipped] == ["named by List_of_testing_videos.txt, not on disk"]
    (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00003.mp4\nhello\n")
    with pytest.raises(DatasetError, match="line 2: expected"):
        index_benchmark(root)


def test_celebdf_without_its_test_list_cuts_identity_groups(tmp_path):
    index = index_benchmark(celebdf_tree(tmp_path / "cd", test_list=False))
    assert all(len(splits) == 1 for splits in _splits_by_person(index).values())
    assert index.provenance["test"] == GROUPS


def test_dfdc_labels_from_metadata_and_each_fake_with_its_original(tmp_path):
    root = dfdc_tree(tmp_path / "dfdc")
    index = index_benchmark(root)
    assert index.layout == "dfdc"
    by_id = {e.video_id: e for e in index.entries}
    assert by_id["test/fff"].split == by_id["test/fffx1"].split == "test" and by_id["test/fffx0"].label == FAKE
    groups = identity_groups({e.video_id: e.identities for e in index.entries})
    for entry in index.entries:  # a fake shares its original's group, and so its split
        original = f"{Path(entry.video_id).parent}/{Path(entry.video_id).name[:3]}"
        assert groups[entry.video_id] == groups[original] and entry.split == by_id[original].split
    assert index.provenance["val"].startswith("carved") and {e.split for e in index.entries} == {"train", "val", "test"}
    metadata = json.loads((root / "test" / "metadata.json").read_text())
    metadata["gone.mp4"] = {"label": "FAKE", "split": "test", "original": "fff.mp4"}
    (root / "test" / "metadata.json").write_text(json.dumps(metadata))
    assert [(Path(s.path).name, s.reason) for s in index_benchmark(root).skipped] == [
        ("gone.mp4", "named by test/metadata.json, no file")]
    (root / "test" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="test/metadata.json: not a DFDC metadata.json"):
        index_benchmark(root)


def test_openforensics_crops_each_annotated_face_with_its_label_and_keeps_the_four_sets(tmp_path):
    index = index_benchmark(openforensics_tree(tmp_path / "of"))
    assert index.layout == "openforensics"
    assert len(index.entries) == 4 * 2 * 2
    assert {(e.category, e.split) for e in index.entries} == {("Train", "train"), ("Val", "val"), ("Test-Dev", "test"),
                                                              ("Test-Challenge", "test")}
    first = [e for e in index.entries if e.video_id.startswith("train/train_0")]
    assert [(e.label, e.box) for e in first] == [(REAL, (10, 20, 40, 40)), (FAKE, (90, 31, 50, 50))]
    items = index.items()
    assert len({item.group for item in items if item.video_id.startswith("train/train_0")}) == 1  # one image, one group


def test_deepfakebench_frames_are_read_as_the_index_lists_them(tiny_benchmark, tmp_path):
    faces = sorted((tiny_benchmark / "train" / "real" / "gan").glob("*.png"))[:6] or sorted(tiny_benchmark.rglob("*.png"))[:6]
    root = deepfakebench_tree(tmp_path / "dfb", faces)
    dataset = resolve_dataset("deepfakebench", str(root))  # one index: no name needed
    assert dataset.name == "deepfakebench:Celeb-DF-v2"
    assert all(Path(s.path).is_file() and "/datasets/rgb/" not in s.path for split in dataset.splits.values() for s in split)
    test = dataset.splits["test"]
    assert {s.video_id.split("/")[1] for s in test} == {"id3_0000", "id3_id2_0000", "id2_id3_0000", "id2_0000"}
    assert len(test) == 4 * 3 and all(s.label == (FAKE if "fake" in s.source else REAL) for s in test)
    # its val repeats its test: used once (in test); val is carved from train by identity group
    assert dataset.dropped_reasons == {"listed twice": 12} and dataset.splits["val"]
    val_groups = {s.group for s in dataset.splits["val"]}
    assert not val_groups & {s.group for s in dataset.splits["train"]}
    with pytest.raises(DatasetError, match="no DeepfakeBench index 'DFDC'.*it has Celeb-DF-v2"):
        resolve_dataset("deepfakebench:DFDC", str(root))
    (root / "dataset_json" / "Celeb-DF-v2.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a DeepfakeBench index"):
        resolve_dataset("deepfakebench", str(root))


def test_a_registered_benchmark_name_on_raw_videos_says_how_to_extract(tmp_path):
    root = celebdf_tree(tmp_path / "cd")
    with pytest.raises(DatasetError, match=f"no face crops of celebdf .*data frames {root} --layout celebdf"):
        resolve_dataset("celebdf", str(root))
    with pytest.raises(DatasetError, match="takes no ':x'"):
        resolve_dataset("celebdf:x", str(root))


def test_each_layout_is_recognised(tmp_path):
    assert detect_layout(celebdf_tree(tmp_path / "a")) == "celebdf"
    assert detect_layout(dfdc_tree(tmp_path / "b")) == "dfdc"
    assert detect_layout(openforensics_tree(tmp_path / "c")) == "openforensics"
    (tmp_path / "d" / "real").mkdir(parents=True)
    assert detect_layout(tmp_path / "d") == "folders"


def test_data_check_reports_videos_and_identities_in_two_splits(tiny_benchmark, tmp_path):
    """An official split may put one person in train and test (Celeb-DF's does): data check names it."""
    import shutil

    from core.data.check import check

    faces = sorted(tiny_benchmark.rglob("*.png"))[:8]
    rows = []
    for index, face in enumerate(faces):
        shutil.copy(face, tmp_path / f"{index}.png")
        split = "train" if index < 4 else "test"
        video = "v-shared" if index in (3, 4) else f"v{index}"  # one video's frames in train and test
        group = "id7" if index in (2, 5) else f"g{index}"  # and one person's videos
        rows.append(f"{index}.png,{index % 2},{split},src,{video},{group}")
    (tmp_path / "m.csv").write_text("path,label,split,source,video_id,group\n" + "\n".join(rows) + "\n")
    shared = check(resolve_dataset(str(tmp_path / "m.csv")), progress=False)["shared_across_splits"]
    assert (shared["videos"], shared["groups"]) == (1, 1)
    assert {(s["kind"], s["name"], tuple(s["splits"])) for s in shared["listed"]} == {
        ("video", "v-shared", ("train", "test")), ("group", "id7", ("train", "test"))}
