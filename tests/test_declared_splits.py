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
    pd.DataFrame({"path": listed + ["real/gone1.png", "fake/gone2.png", "notes.txt"], "label": [0] * 6 + [1] * 6 + [0, 1, 0]}
                 ).to_csv(tmp_path / "set" / "m.csv", index=False)
    code, info, err = _cli(["data", "info", str(tmp_path / "set" / "m.csv")], capsys)
    assert code == 0, err
    assert info["dropped_reasons"] == {"missing file": 2, "not an image": 1}
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
