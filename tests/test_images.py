"""Image decoding (every odd file is either decoded to RGB or skipped and counted) and what each transform does to the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from core.data.datasets import Sample
from core.data.images import (
    IMAGENET,
    ImageDataset,
    ImageLoadError,
    Normalization,
    collate_skipping,
    dataset_statistics,
    eval_transform,
    load_image,
    train_transform,
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
    assert len(list((tmp_path / "cache").glob("statistics/*.json"))) == 1
    assert dataset_statistics(samples, 16, tmp_path / "cache", progress=False) == stats


def _unnormalised(tensor: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """The uint8 pixels a transform's output stands for: x = (y * std + mean) * 255."""
    std, mean = (torch.tensor(v)[:, None, None] for v in (normalization.std, normalization.mean))
    return (tensor * std + mean).mul(255).round().to(torch.uint8).numpy()


def _windows(pixels: np.ndarray, pad: int) -> dict[tuple[bool, int, int], np.ndarray]:
    """(mirrored, top, left) -> every crop of the source's size from the source, or its mirror, reflect-padded by ``pad``."""
    side = pixels.shape[1]
    windows = {}
    for mirrored in (False, True):
        padded = np.pad(pixels[:, :, ::-1] if mirrored else pixels, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                windows[mirrored, top, left] = padded[:, top:top + side, left:left + side]
    return windows


def _without(transform: v2.Compose, *kinds: type) -> v2.Compose:
    return v2.Compose([step for step in transform.transforms if not isinstance(step, kinds)])


SIDE = 32  # the images below are made at the model's size, so the resize leaves their pixels as they are
PAD = max(1, round(SIDE * 0.0625))  # train_transform's crop padding: 1/16 of the side
SEEDS = range(40)


def _texture(grey: bool = False) -> Image.Image:
    pixels = np.random.default_rng(4).integers(64, 192, (SIDE, SIDE, 1 if grey else 3), dtype=np.uint8)
    return Image.fromarray(np.repeat(pixels, 3, axis=2) if grey else pixels)


def test_eval_transform_normalises():
    image = Image.new("RGB", (20, 20), (255, 0, 128))
    tensor = eval_transform(8, IMAGENET)(image)
    assert tensor.shape == (3, 8, 8)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    torch.testing.assert_close(tensor[:, 0, 0], expected, atol=1e-4, rtol=0)


def test_eval_transform_is_deterministic_and_normalises_with_the_given_statistics_exactly():
    normalization = Normalization((0.1, 0.5, 0.9), (0.5, 0.25, 0.125))
    image = _texture()
    outputs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        outputs.append(eval_transform(SIDE, normalization)(image))
    assert all(torch.equal(output, outputs[0]) for output in outputs), "no randomness at evaluation"
    pixels = np.asarray(image, dtype=np.float64).transpose(2, 0, 1) / 255
    expected = (pixels - np.array(normalization.mean)[:, None, None]) / np.array(normalization.std)[:, None, None]
    np.testing.assert_allclose(outputs[0].numpy(), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(train_transform(SIDE, normalization, "none")(image), outputs[0], rtol=0, atol=0)


def test_eval_transform_resizes_without_moving_the_content():
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)  # 60 wide, 40 high: white right half, red top-left quarter
    pixels[:, 30:] = 255
    pixels[:20, :30, 0] = 255
    seen = _unnormalised(eval_transform(10, IMAGENET)(Image.fromarray(pixels)), IMAGENET).astype(int)
    assert seen.shape == (3, 10, 10)
    assert (seen[:, :, 7:] >= 250).all()  # white, right half
    np.testing.assert_allclose(seen[:, :3, :3], [[[255] * 3] * 3, [[0] * 3] * 3, [[0] * 3] * 3], atol=5)  # red, top left
    np.testing.assert_allclose(seen[:, 7:, :3], 0, atol=5)  # black, bottom left


def test_light_augmentation_mirrors_and_crops_exactly():
    """Without its colour jitter, ``light`` shows a window of the reflect-padded image, mirrored about half the time."""
    image = _texture()
    windows = _windows(np.asarray(image).transpose(2, 0, 1), PAD)
    geometry = _without(train_transform(SIDE, IMAGENET, "light"), v2.ColorJitter)
    seen = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        pixels = _unnormalised(geometry(image), IMAGENET)
        matches = [key for key, window in windows.items() if np.array_equal(pixels, window)]
        assert len(matches) == 1, f"seed {seed}: not a (mirrored) crop of the source"
        seen += matches
    mirrored = sum(key[0] for key in seen)
    assert 10 <= mirrored <= 30, f"{mirrored} of {len(seen)} mirrored: a flip with p=0.5"
    assert len({key[1:] for key in seen}) >= 5 and {0, 2 * PAD} <= {key[1] for key in seen}, "the crop moves up to the padding"


def test_light_colour_jitter_changes_colour_not_geometry():
    """Brightness and contrast jitter map a grey image's pixels by one affine function (geometry untouched), saturation
    leaves grey alone, and no hue jitter: a colour pixel's brightest channel stays its brightest."""
    transform = train_transform(SIDE, IMAGENET, "light")
    geometry = _without(transform, v2.ColorJitter)
    for image, grey in ((_texture(grey=True), True), (_texture(), False)):
        for seed in SEEDS:
            torch.manual_seed(seed)
            jittered = _unnormalised(transform(image), IMAGENET).astype(float)
            torch.manual_seed(seed)  # the jitter draws its factors after the flip and the crop: the same geometry
            placed = _unnormalised(geometry(image), IMAGENET).astype(float)
            assert not np.array_equal(jittered, placed), f"seed {seed}: the colour did not change"
            if grey:
                scale, shift = np.polyfit(placed.ravel(), jittered.ravel(), 1)
                assert 0.8 <= scale <= 1.22, scale  # brightness and contrast within 0.9-1.1 each
                assert np.abs(scale * placed + shift - jittered).max() <= 2.5, f"seed {seed}: pixels moved"
            else:
                clear = np.sort(placed, axis=0)[-1] - np.sort(placed, axis=0)[-2] > 20
                assert (placed.argmax(axis=0) == jittered.argmax(axis=0))[clear].all(), f"seed {seed}: the hue changed"


def test_paper_augmentation_rotates_and_shifts_but_keeps_the_content():
    """``paper`` adds rotation and a random affine to ``light``: hardly any output is a plain crop, each is close to one."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    smooth = 128 + 50 * np.sin(xx / 5) * np.cos(yy / 7) + 40 * (xx > yy)  # smooth enough to survive a 10 degree turn
    image = Image.fromarray(np.repeat(smooth[..., None], 3, axis=2).astype(np.uint8))
    windows = _windows(np.asarray(image).transpose(2, 0, 1), PAD)
    geometry = _without(train_transform(SIDE, IMAGENET, "paper"), v2.ColorJitter)
    centre = slice(SIDE // 4, 3 * SIDE // 4)  # the corners a rotation fills with black are left out
    plain = 0
    for seed in SEEDS:
        torch.manual_seed(seed)
        pixels = _unnormalised(geometry(image), IMAGENET)[0].astype(float)
        plain += any(np.array_equal(pixels, window[0]) for window in windows.values())
        nearest = max(np.corrcoef(pixels[centre, centre].ravel(), window[0][centre, centre].ravel())[0, 1]
                      for window in windows.values())
        assert nearest > 0.9, f"seed {seed}: the content is gone ({nearest:.2f})"
    assert plain <= len(SEEDS) // 10, f"{plain} of {len(SEEDS)} outputs are plain crops (a turn under half a degree is one)"


def test_train_transform_variants():
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    torch.testing.assert_close(train_transform(16, IMAGENET, "none")(image), eval_transform(16, IMAGENET)(image))
    for augment in ("light", "paper"):
        torch.manual_seed(0)
        assert train_transform(16, IMAGENET, augment)(image).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="augment must be one of"):
        train_transform(16, IMAGENET, "heavy")
