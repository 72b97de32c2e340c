"""Image decoding: every odd file is either decoded to RGB or skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.datasets import Sample
from core.data.images import (
    IMAGENET,
    ImageDataset,
    ImageLoadError,
    collate_skipping,
    dataset_statistics,
    eval_transform,
    load_image,
)


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture()
def odd_files(tmp_path):
    """name -> (path, loads?) for the awkward files scraped folders contain."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    good = _save(tmp_path / "good.png", rgb)
    truncated = tmp_path / "truncated.jpg"
    _save(truncated, rgb, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = _save(tmp_path / "rotated.jpg", rgb, format="JPEG", exif=exif)
    files = {
        "good": (good, True),
        "cmyk": (_save(tmp_path / "cmyk.jpg", rgb.convert("CMYK"), format="JPEG"), True),
        "palette": (_save(tmp_path / "palette.png", rgb.convert("P")), True),
        "grey_alpha": (_save(tmp_path / "la.png", rgb.convert("LA")), True),
        "sixteen_bit": (_save(tmp_path / "i16.png", Image.fromarray((np.arange(1200).reshape(40, 30) * 50).astype(np.uint16))), True),
        "rotated": (rotated, True),
        "tiny": (_save(tmp_path / "tiny.png", rgb.resize((5, 5))), False),
        "truncated": (truncated, False),
        "empty": (empty, False),
        "not_an_image": (text, False),
    }
    return files


def test_load_image_modes_and_failures(odd_files):
    for name, (path, loads) in odd_files.items():
        if loads:
            image = load_image(path)
            assert image.mode == "RGB", name
        else:
            with pytest.raises(ImageLoadError):
                load_image(path)


def test_exif_rotation_is_applied(odd_files):
    assert load_image(odd_files["rotated"][0]).size == (40, 30)  # stored 30 wide x 40 high


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", Image.new("RGB", (200, 200)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="larger than"):
        load_image(path)


def test_dataset_skips_and_counts_bad_files(odd_files):
    samples = [Sample(str(path), i % 2) for i, (path, _) in enumerate(odd_files.values())]
    dataset = ImageDataset(samples, eval_transform(16, IMAGENET))
    batch = collate_skipping([dataset[i] for i in range(len(dataset))])
    bad = sum(1 for _, loads in odd_files.values() if not loads)
    assert batch["skipped"] == bad
    assert batch["images"].shape == (len(samples) - bad, 3, 16, 16)
    assert collate_skipping([None, None])["skipped"] == 2


def test_dataset_statistics_match_numpy_and_are_cached(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    samples = [Sample(str(_save(tmp_path / f"{i}.png", Image.fromarray(a))), i % 2) for i, a in enumerate(arrays)]
    stats = dataset_statistics(samples, 16, tmp_path / "cache", progress=False)
    stacked = np.stack(arrays).astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean, stacked.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(stats.std, stacked.std(axis=(0, 1, 2)), atol=1e-5)
    assert len(list((tmp_path / "cache").glob("stats-*.json"))) == 1
    assert dataset_statistics(samples, 16, tmp_path / "cache", progress=False) == stats


def test_eval_transform_normalises():
    image = Image.new("RGB", (20, 20), (255, 0, 128))
    tensor = eval_transform(8, IMAGENET)(image)
    assert tensor.shape == (3, 8, 8)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    torch.testing.assert_close(tensor[:, 0, 0], expected, atol=1e-4, rtol=0)


def test_train_transform_variants():
    from core.data.images import train_transform

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    torch.testing.assert_close(train_transform(16, IMAGENET, "none")(image), eval_transform(16, IMAGENET)(image))
    for augment in ("light", "paper"):
        torch.manual_seed(0)
        assert train_transform(16, IMAGENET, augment)(image).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="augment must be one of"):
        train_transform(16, IMAGENET, "heavy")
