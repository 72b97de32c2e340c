"""The embedded benchmark: layout, determinism, balance, and that each signature is real."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.data.synthetic import (
    SOURCES,
    SynthConfig,
    ensure_benchmark,
    generate_benchmark,
    read_manifest,
    render_image,
)


def _tree_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_layout_counts_and_manifest(tiny_benchmark):
    manifest = read_manifest(tiny_benchmark)
    assert manifest["config"]["sources"] == list(SOURCES)
    for source in SOURCES:
        for split, expected in {"train": 42, "val": 6, "test": 12}.items():
            real = list((tiny_benchmark / source / split / "real").glob("*.png"))
            fake = list((tiny_benchmark / source / split / "fake").glob("*.png"))
            assert len(real) == len(fake) == expected // 2
            assert manifest["counts"][source][split] == {"real": expected // 2, "fake": expected // 2}


def test_deterministic_and_independent_of_worker_count(tmp_path):
    config = SynthConfig(image_size=32, per_source=20, sources=("upconv", "jpeg2"))
    generate_benchmark(tmp_path / "a", config, workers=1, progress=False)
    generate_benchmark(tmp_path / "b", config, workers=2, progress=False)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    generate_benchmark(tmp_path / "c", SynthConfig(image_size=32, per_source=20, sources=("upconv", "jpeg2"), seed=1),
                       workers=1, progress=False)
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_ensure_benchmark_generates_once(tmp_path):
    config = SynthConfig(image_size=16, per_source=20, sources=("gan",))
    root = ensure_benchmark(tmp_path / "bench", config, progress=False)
    assert (root / "gan" / "test" / "fake").is_dir()
    stamp = (root / "manifest.json").stat().st_mtime_ns
    ensure_benchmark(tmp_path / "bench", config, progress=False)
    assert (root / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("bad", [{"image_size": 15}, {"per_source": 4}, {"sources": ("nope",)}])
def test_rejects_bad_settings(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_benchmark(tmp_path / "x", SynthConfig(**bad), progress=False)


def _render(source: str, label: int, count: int, difficulty: float = 0.0) -> np.ndarray:
    config = SynthConfig(image_size=64, difficulty=difficulty, secondary_probability=0.0)
    images = [render_image(config, source, label, np.random.default_rng(1000 + i)) for i in range(count)]
    return np.stack(images).astype(np.float64) / 255.0


def _nyquist_energy(images: np.ndarray) -> float:
    """Mean power at the (pi, pi) corner of the spectrum: the checkerboard's peak."""
    grey = images.mean(-1)
    spectrum = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
    return float(spectrum[:, 32, 32].mean())


def _high_frequency_energy(images: np.ndarray) -> float:
    grey = images.mean(-1)
    laplacian = 4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    return float((laplacian ** 2).mean())


def _off_grid_blockiness(images: np.ndarray) -> float:
    """Mean over images and axes of max/median of pixel steps folded modulo 8, the
    final JPEG's own grid phase left out: a second, shifted 8x8 grid stands out."""
    grey = images.mean(-1)
    ratios = []
    for axis in (1, 2):
        for steps in np.abs(np.diff(grey, axis=axis)).mean(axis=3 - axis):
            folded = np.delete(np.array([steps[phase::8].mean() for phase in range(8)]), 7)
            ratios.append(folded.max() / np.median(folded))
    return float(np.mean(ratios))


def test_jpeg2_leaves_a_shifted_block_grid():
    assert _off_grid_blockiness(_render("jpeg2", 1, 24)) > 1.25 * _off_grid_blockiness(_render("jpeg2", 0, 24))


def test_upconv_leaves_a_checkerboard_peak():
    assert _nyquist_energy(_render("upconv", 1, 24)) > 3 * _nyquist_energy(_render("upconv", 0, 24))


def test_gan_fakes_have_smoother_skin_than_reals():
    face = (slice(None), slice(22, 42), slice(24, 40))  # the centre of every rendered face
    fake, real = _render("gan", 1, 24)[face], _render("gan", 0, 24)[face]
    assert _high_frequency_energy(fake) < 0.5 * _high_frequency_energy(real)


def test_faceswap_changes_the_inner_face_more_than_the_background():
    config = SynthConfig(image_size=64, difficulty=0.0, secondary_probability=0.0)
    inner, outer = [], []
    for i in range(16):
        # same seed: the fake starts from the very face the real shows
        real = render_image(config, "faceswap", 0, np.random.default_rng(i)).astype(float)
        fake = render_image(config, "faceswap", 1, np.random.default_rng(i)).astype(float)
        difference = np.abs(real - fake).mean(-1)
        inner.append(difference[24:40, 26:38].mean())
        outer.append(np.concatenate([difference[:, :6], difference[:, -6:]]).mean())
    assert np.mean(inner) > 3 * np.mean(outer)


def test_every_source_differs_from_its_reals():
    for source in SOURCES:
        fake, real = _render(source, 1, 8), _render(source, 0, 8)
        assert not np.allclose(fake, real), source


def _ensure_in_child(root: str) -> str:
    config = SynthConfig(image_size=16, per_source=20, sources=("warp",))
    return str(ensure_benchmark(Path(root), config, progress=False))


def test_concurrent_first_use_generates_once(tmp_path):
    root = tmp_path / "shared"
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_ensure_in_child, [str(root)] * 3))
    assert results == [str(root)] * 3
    assert read_manifest(root)["images"] == 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shared-")]  # no staging left behind


def test_cli_if_missing_keeps_an_existing_benchmark(tmp_path, capsys):
    from core.__main__ import main

    argv = ["data", "synth", "--out", str(tmp_path / "b"), "--image-size", "16", "--per-source", "20",
            "--sources", "gan", "--workers", "1", "--quiet", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--if-missing"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["generated"] and not second["generated"]
    assert second["counts"] == first["counts"] and second["sources"] == ["gan"]
