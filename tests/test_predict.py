"""``python -m core predict``: files and folders in, one verdict per image with its face and ood score out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

import core
from core.cli import main
from core.data.synthetic import SynthConfig, render_split_image
from core.evaluation.ood import UNRELIABLE, load_ood
from core.evaluation.predict import COLUMNS, list_images, predict_files

REPO = Path(__file__).resolve().parents[1]
PEARSON = REPO / "checkpoints" / "student-pearson-resnet50-synthetic-faceswap.safetensors"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.jpg", quality=92)
    for index in range(5):  # held-out test images of the student's own source
        Image.fromarray(render_split_image(SynthConfig(), "faceswap", "test", index)[0]).save(root / "nested" / f"b{index}.png")
    Image.fromarray(render_split_image(SynthConfig(), "faceswap", "test", 5)[0]).save(root / "nested" / "deeper" / "b5.webp")
    (root / "nested" / "truncated.png").write_bytes((root / "nested" / "b0.png").read_bytes()[:100])
    (root / "nested" / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, and not listed: a folder gives its image files")
    Image.new("RGB", (40, 40)).save(root / ".hidden" / "skip.png")
    return root


def test_folders_are_taken_recursively_and_named_files_as_they_are(folder):
    files, skipped = list_images([folder, folder / "notes.txt", folder / "missing.png"])
    assert [p.relative_to(folder).as_posix() for p in files] == [
        "astronaut.jpg", "nested/b0.png", "nested/b1.png", "nested/b2.png", "nested/b3.png", "nested/b4.png",
        "nested/deeper/b5.webp", "nested/empty.jpg", "nested/truncated.png"]  # sorted; decoding decides on the last two
    assert skipped == [{"path": str(folder / ".hidden"), "reason": "hidden folder"},
                       {"path": str(folder / "notes.txt"), "reason": "unsupported type .txt"},  # in the folder
                       {"path": str(folder / "notes.txt"), "reason": "unsupported type .txt"},  # and named
                       {"path": str(folder / "missing.png"), "reason": "missing file"}]


def test_predictions_carry_the_face_the_verdict_and_the_ood_verdict(folder):
    model = core.load_model(PEARSON)
    result = predict_files(model, [folder], load_ood(PEARSON), batch_size=4, progress=False)
    by_name = {Path(p["path"]).name: p for p in result["predictions"]}
    assert set(by_name) == {"astronaut.jpg", "b0.png", "b1.png", "b2.png", "b3.png", "b4.png", "b5.webp"}
    assert {Path(s["path"]).name: s["reason"] for s in result["skipped"]} == {
        "truncated.png": "truncated", "empty.jpg": "zero-byte", "notes.txt": "unsupported type .txt", ".hidden": "hidden folder"}
    photo = by_name["astronaut.jpg"]
    assert set(COLUMNS) <= set(photo)
    assert photo["face"] is not None and photo["face_confidence"] >= 0.6 and 70 < photo["face"][2] < 130
    assert photo["in_distribution"] is False and photo["ood_score"] > 1 and photo["note"] == UNRELIABLE
    benchmark = [by_name[f"b{i}.png"] for i in range(5)] + [by_name["b5.webp"]]
    assert sum(p["in_distribution"] for p in benchmark) >= 5 and all("note" not in p or not p["in_distribution"]
                                                                       for p in benchmark)
    assert all(p["label"] == ("fake" if p["p_fake"] > 0.5 else "real") for p in result["predictions"])
    # the same numbers one image at a time: batching changes nothing but speed
    single = predict_files(model, [folder], load_ood(PEARSON), batch_size=1, progress=False)
    for a, b in zip(result["predictions"], single["predictions"], strict=True):
        assert a["path"] == b["path"] and a["p_fake"] == pytest.approx(b["p_fake"], abs=1e-5)
        assert a["ood_score"] == pytest.approx(b["ood_score"], rel=1e-3)
    assert result["images_per_s"] > 0 and set(result["timing"]) == {"decode_s", "face_s", "model_s", "total_s"}


def test_the_command_writes_json_and_the_same_columns_as_csv(folder, tmp_path, capsys):
    out = tmp_path / "verdicts.csv"
    code = main(["predict", str(folder / "astronaut.jpg"), str(folder / "nested"), "--checkpoint", str(PEARSON), "--out",
                 str(out), "--threshold", "0.9", "--json", "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) >= {"predictions", "skipped"} and len(printed["predictions"]) == 7 and len(printed["skipped"]) == 2
    assert all(p["label"] == ("fake" if p["p_fake"] > 0.9 else "real") for p in printed["predictions"])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*COLUMNS, "note"] and len(rows) == 7
    first = printed["predictions"][0]
    assert rows[0]["path"] == first["path"] and float(rows[0]["p_fake"]) == pytest.approx(first["p_fake"])
    assert rows[0]["face"] == " ".join(map(str, first["face"])) and rows[0]["in_distribution"] == "False"
    # whole images, no face search
    code = main(["predict", str(folder / "astronaut.jpg"), "--checkpoint", str(PEARSON), "--no-crop", "--json", "--quiet"])
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"][0]
    assert code == 0 and whole["face"] is None and whole["face_confidence"] is None


def test_bad_requests_get_one_line_errors(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert capsys.readouterr().err.strip().startswith("error:")
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path), "--checkpoint", str(PEARSON), "--runtime", "tensorrt"])
    assert main(["predict", str(tmp_path), "--checkpoint", str(PEARSON), "--json", "--quiet"]) == 0
    empty = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert empty["predictions"] == [] and empty["skipped"] == [{"path": str(tmp_path), "reason": "empty folder"}]
