"""User data used exactly as declared, end to end: evaluate scores the declared split whole (or
every image), says which images it used and why, counts every skipped file by reason, and bad
input stops at the boundary with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.__main__ import main
from core.config import build_config
from core.training.engine import train


def _images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index:03d}.png"
        Image.new("RGB", (32, 32), ((index * 37 + seed) % 256, 90, 150)).save(path)
        paths.append(path)
    return paths


def _cli(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main([*argv, "--json", "--quiet"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else None, err


@pytest.fixture(scope="module")
def checkpoint(tiny_benchmark, tmp_path_factory) -> str:
    runs = tmp_path_factory.mktemp("runs")
    return str(train(build_config(method="teacher", arch="resnet-tiny", data="synthetic", image_size=32, epochs=1,
                                  batch_size=16, num_workers=0, max_train_samples=32, max_eval_samples=12,
                                  runs_dir=str(runs)), progress=False).run_dir)


def test_a_test_only_folder_is_scored_whole(checkpoint, tmp_path, capsys):
    for cls in ("real", "fake"):
        _images(tmp_path / "eval" / "test" / cls, 20)
    code, result, err = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "eval")], capsys)
    assert code == 0, err
    assert result["n"] == 40 and result["images"] == "test: 40 images, declared by the data"
    assert "declared by the data" in err
    code, result, _ = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "eval"), "--split", "all"], capsys)
    assert result["n"] == 40 and result["images"] == "all: 40 images, every split"
    code, _, err = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "eval"), "--split", "val"], capsys)
    assert code == 2 and "declares no 'val' split (it declares test)" in err


def test_a_csv_of_test_rows_is_scored_whole_and_cannot_train(checkpoint, tmp_path, capsys):
    paths = _images(tmp_path / "set" / "real", 5) + _images(tmp_path / "set" / "fake", 5, seed=7)
    pd.DataFrame({"path": [p.relative_to(tmp_path / "set").as_posix() for p in paths], "label": [0] * 5 + [1] * 5,
                  "split": ["test"] * 10}).to_csv(tmp_path / "set" / "eval.csv", index=False)
    code, result, err = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "set" / "eval.csv")], capsys)
    assert code == 0 and result["n"] == 10, err
    code, _, err = _cli(["train", "--method", "teacher", "--arch", "resnet-tiny", "--data", str(tmp_path / "set" / "eval.csv"),
                         "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "declares no 'train' split" in err
    assert not (tmp_path / "runs").exists(), "refused before a run directory exists"


def test_a_row_escaping_its_root_stops_the_command_naming_it(checkpoint, tmp_path, capsys):
    paths = _images(tmp_path / "set" / "real", 5) + _images(tmp_path / "set" / "fake", 5, seed=7)
    listed = [p.relative_to(tmp_path / "set").as_posix() for p in paths]
    pd.DataFrame({"path": listed[:6] + ["../../../../etc/passwd"] + listed[6:], "label": [0] * 5 + [1] * 6}).to_csv(
        tmp_path / "set" / "m.csv", index=False)
    code, _, err = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "set" / "m.csv"), "--split", "all"], capsys)
    assert code == 2 and "line 8 lists '../../../../etc/passwd', which resolves outside the image root" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_rows_are_counted_and_named(tmp_path, capsys):
    paths = _images(tmp_path / "set" / "real", 6) + _images(tmp_path / "set" / "fake", 6, seed=7)
    listed = [p.relative_to(tmp_path / "set").as_posix() for p in paths]
    (tmp_path / "set" / "notes.txt").write_text("a row naming a text file")
    pd.DataFrame({"path": listed + ["real/gone1.png", "fake/gone2.png", "notes.txt"], "label": [0] * 6 + [1] * 6 + [0, 1, 0]}
                 ).to_csv(tmp_path / "set" / "m.csv", index=False)
    code, info, err = _cli(["data", "info", str(tmp_path / "set" / "m.csv")], capsys)
    assert code == 0, err
    assert info["dropped_reasons"] == {"missing file": 2, "unsupported type .txt": 1}
    assert [Path(p).name for p in info["dropped_examples"]["missing file"]] == ["gone1.png", "gone2.png"]
    assert "2 missing file" in err and "gone1.png" in err


def test_every_skipped_file_is_counted_by_reason(checkpoint, tmp_path, capsys):
    for cls in ("real", "fake"):
        _images(tmp_path / "eval" / "test" / cls, 6)
    bad = tmp_path / "eval" / "test" / "fake"
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image at all")
    good = (bad / "img000.png").read_bytes()
    (bad / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (4, 4)).save(bad / "tiny.png")
    code, result, err = _cli(["evaluate", checkpoint, "--data", str(tmp_path / "eval"), "--no-cache"], capsys)
    assert code == 0, err
    assert result["n"] == 12 and result["skipped"] == 4
    assert result["skipped_reasons"] == {"zero-byte": 1, "not an image": 1, "truncated": 1, "too small": 1}


@pytest.mark.parametrize("threshold", ["7", "-0.1", "nan-ish"])
def test_a_threshold_outside_0_1_is_refused_at_the_boundary(checkpoint, threshold, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", checkpoint, "--data", "synthetic", "--threshold", threshold])
    assert stopped.value.code == 2 and "threshold" in capsys.readouterr().err


def test_training_on_data_without_a_test_split_ends_without_a_test(tiny_benchmark, tmp_path):
    root = tmp_path / "tv"
    for split in ("train", "val"):
        for index, cls in enumerate(("real", "fake")):
            _images(root / split / cls, 6, seed=index * 101)
    result = train(build_config(method="teacher", arch="resnet-tiny", data=str(root), image_size=32, epochs=1, batch_size=8,
                                num_workers=0, runs_dir=str(tmp_path / "runs")), progress=False)
    assert result.status == "finished" and result.test["n"] == 0 and result.test["accuracy"] is None
    assert "test: 0 images, not declared" in result.test["note"]
    assert "val: 12 images, declared by the data" in (result.run_dir / "log.txt").read_text()


def _odd_files(folder: Path) -> dict[str, str]:
    """Files a user's folder really holds beside its images, each with the reason it must be skipped for."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGB", (32, 32), (index * 80, 0, 0)) for index in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    (folder / ".DS_Store").write_bytes(b"\0" * 16)
    (folder / "elsewhere").symlink_to(folder.parent)
    return {"animated.gif": "unsupported type .gif", "pipe.png": "not a regular file", "zero.png": "not a regular file",
            "gone.png": "missing file", ".DS_Store": "hidden file", "elsewhere": "link to a folder (not followed)"}


def test_predict_accounts_for_every_file_of_a_folder(checkpoint, tmp_path, capsys):
    """An animated GIF, a FIFO and a link to /dev/zero named like images, a dangling link, a hidden file and a link
    to a folder beside three images: three verdicts, six skipped with their true reasons, nothing unaccounted."""
    folder = tmp_path / "photos"
    _images(folder, 3)
    odd = _odd_files(folder)
    code, result, err = _cli(["predict", str(folder), str(folder / "img000.png"), "--checkpoint", checkpoint, "--no-crop"],
                             capsys)
    assert code == 0, err
    assert sorted(Path(p["path"]).name for p in result["predictions"]) == ["img000.png", "img001.png", "img002.png"]
    assert {Path(s["path"]).name: s["reason"] for s in result["skipped"] if Path(s["path"]).name != "img000.png"} == odd
    assert [s["reason"] for s in result["skipped"] if Path(s["path"]).name == "img000.png"] == ["listed twice"]
    assert len(result["predictions"]) + len(result["skipped"]) == 3 + len(odd) + 1, "every file given, once each"


def test_every_manifest_row_is_used_or_skipped_with_its_reason(checkpoint, tmp_path, capsys):
    """A row naming a folder, a row listed twice, rows naming a GIF, a FIFO and a missing file: evaluate's
    n + skipped is the number of rows of the split, and data check says the same per split."""
    import os

    root = tmp_path / "set"
    images = _images(root / "real", 3) + _images(root / "fake", 3, seed=9)
    (root / "i").mkdir()
    Image.new("RGB", (32, 32)).save(root / "anim.gif")
    os.mkfifo(root / "pipe.png")
    rows = [(p.relative_to(root).as_posix(), int(p.parent.name == "fake"), "test") for p in images]
    rows += [("i", 1, "test"), (rows[0][0], rows[0][1], "test"), ("anim.gif", 1, "test"), ("pipe.png", 0, "test"),
             ("fake/gone.png", 1, "test"), (rows[1][0], rows[1][1], "train")]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(root / "m.csv", index=False)
    code, result, err = _cli(["evaluate", checkpoint, "--data", str(root / "m.csv"), "--no-cache"], capsys)
    assert code == 0, err
    test_rows = sum(split == "test" for _, _, split in rows)
    assert result["n"] == 6 and result["n"] + result["skipped"] == test_rows == 11
    assert result["skipped_reasons"] == {"a folder, not a file": 1, "listed twice": 1, "unsupported type .gif": 1,
                                         "not a regular file": 1, "missing file": 1}
    code, everything, err = _cli(["evaluate", checkpoint, "--data", str(root / "m.csv"), "--split", "all", "--no-cache"],
                                 capsys)
    assert code == 0 and everything["n"] + everything["skipped"] == len(rows) == 12, err
    assert everything["skipped_reasons"]["listed twice"] == 2, "a file in two splits is used once"
    code, report, err = _cli(["data", "check", str(root / "m.csv"), "--no-cache"], capsys)
    assert code == 0, err
    assert report["splits"]["test"]["n"] + report["splits"]["test"]["skipped"] == 11
    assert report["skipped"]["total"] == 6 and report["skipped"]["reasons"]["listed twice"] == 2
