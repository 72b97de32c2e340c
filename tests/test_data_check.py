"""`data check`: counts, skipped reasons, unbalanced splits, sizes, and the near-duplicate finder
(exact, re-encoded and resized copies found; no false pair among 200 unrelated faces); cached hashes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.__main__ import main
from core.data.check import DUPLICATE_THRESHOLD, check, near_duplicates
from core.data.datasets import load_image_folder, resolve_dataset


def _cli(argv: list[str], capsys) -> dict:
    assert main([*argv, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def faces(tiny_benchmark) -> list[Path]:
    """Distinct faces of the embedded benchmark (each its own render)."""
    return [Path(s.path) for s in resolve_dataset("synthetic").split("all")]


def test_copies_across_splits_are_found_and_unrelated_faces_are_not(faces, tmp_path):
    root = tmp_path / "leaky"
    train, test = faces[:200], faces[200:212]
    for index, path in enumerate(train):
        folder = root / "train" / ("real" if index % 2 else "fake")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"t{index:03d}.png")
    leaks = {}
    for index, path in enumerate(test):  # unrelated test images, so the test split has both classes
        folder = root / "test" / ("real" if index % 2 else "fake")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"u{index:03d}.png")
    source = Image.open(train[0]).convert("RGB")
    shutil.copy(train[0], root / "test" / "real" / "exact.png")
    leaks["exact.png"] = "t000.png"
    buffer = io.BytesIO()
    Image.open(train[1]).convert("RGB").save(buffer, "JPEG", quality=70)
    (root / "test" / "fake" / "reencoded.jpg").write_bytes(buffer.getvalue())
    leaks["reencoded.jpg"] = "t001.png"
    resized = Image.open(train[2]).convert("RGB")
    resized.resize((int(resized.width * 0.9), int(resized.height * 0.9)), Image.BILINEAR).save(root / "test" / "real" / "small.png")
    leaks["small.png"] = "t002.png"
    assert source.size == (32, 32)

    report = check(load_image_folder(root), None, progress=False)
    found = {Path(p["b"]).name: Path(p["a"]).name for p in report["duplicates_across_splits"]}
    assert found == leaks, "every copy found, and among 200 unrelated train faces x 12 unrelated test faces no false pair"
    # (val is carved from train here, so a copy's original may sit in either)
    assert all(p["splits"][0] in ("train", "val") and p["splits"][1] == "test" and p["distance"] <= DUPLICATE_THRESHOLD
               for p in report["duplicates_across_splits"])
    assert report["duplicates"]["pairs"] == 3 and report["splits"]["test"]["n"] == 15


def test_the_report_counts_skips_and_flags_unbalanced_splits(faces, tmp_path, capsys):
    root = tmp_path / "set"
    layout = {("train", "real"): 10, ("train", "fake"): 10, ("val", "real"): 9, ("val", "fake"): 1, ("test", "fake"): 4}
    position = 0
    for (split, cls), count in layout.items():
        (root / split / cls).mkdir(parents=True)
        for index in range(count):
            shutil.copy(faces[position], root / split / cls / f"{index}.png")
            position += 1
    (root / "test" / "real").mkdir()
    (root / "test" / "real" / "empty.png").write_bytes(b"")
    (root / "test" / "real" / "text.png").write_text("no image")
    report = _cli(["data", "check", str(root), "--no-cache"], capsys)
    assert report["splits"]["train"]["labels"] == {"real": 10, "fake": 10} and report["splits"]["test"]["skipped"] == 2
    assert report["skipped"]["reasons"] == {"zero-byte": 1, "not an image": 1}
    warnings = " ".join(report["warnings"])
    assert "val: badly unbalanced (9 real, 1 fake" in warnings and "test: one class only (fake)" in warnings
    assert report["sizes"]["common"] == [["32x32", 34]]
    assert set(report) >= {"splits", "skipped", "duplicates_across_splits"}


def test_a_second_check_reads_every_hash_from_the_cache(faces, tmp_path, monkeypatch):
    root = tmp_path / "cached"
    for split in ("train", "test"):
        for cls in ("real", "fake"):
            (root / split / cls).mkdir(parents=True)
    for index, path in enumerate(faces[:24]):
        split = "train" if index < 16 else "test"
        shutil.copy(path, root / split / ("real" if index % 2 else "fake") / f"{index}.png")
    first = check(load_image_folder(root), tmp_path / "cache", progress=False)
    second = check(load_image_folder(root), tmp_path / "cache", progress=False)
    assert (first["hashed"], second["hashed"], second["from_cache"]) == (24, 0, 24)
    assert first["splits"] == second["splits"]
    touched = next((root / "test" / "real").iterdir())
    Image.new("RGB", (32, 32), "white").save(touched)  # a changed file is hashed again
    assert check(load_image_folder(root), tmp_path / "cache", progress=False)["hashed"] == 1


def test_the_data_page_shows_a_folders_leaked_pairs_side_by_side(faces, tmp_path):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "leaky"
    for index, path in enumerate(faces[:40]):
        split = "train" if index < 30 else "test"
        folder = root / split / ("real" if index % 2 else "fake")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{index}.png")
    shutil.copy(faces[0], root / "test" / "fake" / "copy.png")
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "Home.py"), default_timeout=120)
    app.secrets["access"] = {"data_roots": [str(tmp_path)]}  # the dashboard reads typed folders only inside its roots
    app.run()
    app.switch_page("views/data.py").run()
    app.radio(key="data_data_kind").set_value("Folder or CSV").run()
    app.text_input(key="data_path").set_value(str(root)).run()
    assert not app.exception
    assert "Near-duplicates across splits: 1" in [s.value for s in app.subheader]
    captions = [caption for element in app.get("image") for caption in element.captions]
    assert len(captions) == 2 and captions[0] in ("train", "val") and captions[1] == "test", \
        "the pair, side by side, each under its split (val is carved from train here)"
    assert "distance 0 bits" in app.markdown[-1].value


def test_near_duplicates_finds_exactly_the_pairs_popcount_finds():
    """The matrix-product distance against an independent XOR + popcount over every cross-split pair."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=(40, 4), dtype=np.uint64)
    flips = np.zeros_like(base)
    for row, n in enumerate(rng.integers(0, 40, size=40)):  # each test hash: a train hash with n random bits flipped
        for bit in rng.choice(256, size=n, replace=False):
            flips[row, bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
    words = {"train": base, "val": rng.integers(0, 2**63, size=(7, 4), dtype=np.uint64), "test": base ^ flips}
    expected = []
    names = list(words)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            distance = np.bitwise_count(words[first][:, None, :] ^ words[second][None, :, :]).sum(axis=-1)
            expected += [(first, a, second, b, int(distance[a, b])) for a, b in zip(*np.nonzero(distance <= 24), strict=True)]
    found = near_duplicates(words, threshold=24, budget=50)  # tiny blocks: the block edges are exercised
    assert sorted(found) == sorted(expected)
    assert {(a, b) for _, a, s, b, _ in found if s == "test"} >= {(r, r) for r in range(40) if np.bitwise_count(flips[r]).sum() <= 24}
