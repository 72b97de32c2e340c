"""Verdicts that know their limits: the out-of-distribution score, its calibration, where it is stored, and what it
says about real photographs for the shipped students."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import core
from core.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from core.evaluation import ood

REPO = Path(__file__).resolve().parents[1]
PEARSON = REPO / "checkpoints" / "student-pearson-resnet50-synthetic-faceswap.safetensors"


def _numpy_ppca_score(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Tipping & Bishop's PPCA score written out with numpy's eigendecomposition of the sample covariance."""
    mean = train.mean(axis=0)
    covariance = np.cov(train - mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    w = eigenvectors[:, :k]
    noise = eigenvalues[k:].mean()
    projected = np.cov((train - mean) @ w, rowvar=False)
    projected += ood.SHRINKAGE * np.trace(projected) / k * np.eye(k)
    z = (queries - mean) @ w
    residual = (queries - mean) - z @ w.T
    return np.einsum("nk,kl,nl->n", z, np.linalg.inv(projected), z) + (residual**2).sum(axis=1) / noise


def test_stage_score_is_the_ppca_mahalanobis_plus_residual():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 12))
    train = rng.normal(size=(400, 3)) * [5, 3, 2] @ basis + rng.normal(scale=0.3, size=(400, 12)) + 7
    queries = np.concatenate([train[:5], rng.normal(size=(5, 12)) * 4])
    density = ood.fit_density(torch.tensor(train), dims=3)
    expected = _numpy_ppca_score(train, queries, 3)
    actual = density.raw_score(torch.tensor(queries)).numpy()
    # the principal directions' signs and the float32 storage differ; the score does not (to float precision)
    np.testing.assert_allclose(actual, expected, rtol=2e-4)
    # off the learned subspace scores far above on it, for points equally far from the mean
    on = basis[0] / np.linalg.norm(basis[0]) * 10 + train.mean(axis=0)
    off_direction = rng.normal(size=12)
    off_direction -= basis.T @ np.linalg.lstsq(basis.T, off_direction, rcond=None)[0]
    off = off_direction / np.linalg.norm(off_direction) * 10 + train.mean(axis=0)
    on_score, off_score = density.raw_score(torch.tensor(np.stack([on, off]))).tolist()
    assert off_score > 100 * on_score


def test_statistics_are_channel_means_and_standard_deviations():
    maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    stats = ood.stage_statistics(maps)
    assert stats.shape == (2, 6)
    np.testing.assert_allclose(stats[:, :3], maps.numpy().mean(axis=(2, 3)))
    np.testing.assert_allclose(stats[:, 3:], maps.numpy().std(axis=(2, 3)), rtol=1e-4)
    rng = np.random.default_rng(3)
    wide = rng.gamma(2.0, 1.5, size=(2, 64, 7, 9)).astype(np.float32)  # post-ReLU-like values, channels_last too
    tensor = torch.from_numpy(wide).contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(ood.stage_statistics(tensor)[:, 64:], wide.astype(np.float64).std(axis=(2, 3)), rtol=1e-4)
    assert torch.equal(ood.stage_statistics(torch.ones(2, 5)), torch.ones(2, 5))


def _statistics(rng, n, shift=0.0):
    return {"a": torch.tensor(rng.normal(size=(n, 6)) + shift, dtype=torch.float32),
            "b": torch.tensor(rng.normal(size=(n, 4)) * 2 + shift, dtype=torch.float32)}


def test_calibration_puts_95_percent_of_validation_in_and_shifted_data_out():
    rng = np.random.default_rng(1)
    fitted, validation = _statistics(rng, 500), _statistics(rng, 400)
    model = ood.OODModel(["a", "b"], [ood.fit_density(fitted[n], 3) for n in ("a", "b")])
    ood.calibrate(model, validation)
    inside = int((model.score(validation) <= 1).sum())
    assert inside in (380, 381)  # 95% of 400: the quantile, up to one image
    # each stage's scale is its own 95% quantile, and the score is the worse stage's
    per_stage = [d.raw_score(validation[n]) / d.scale for n, d in zip(model.stages, model.densities, strict=True)]
    assert [float(torch.quantile(s.double(), 0.95)) for s in per_stage] == pytest.approx([1.0, 1.0], rel=1e-5)
    torch.testing.assert_close(model.score(validation), torch.maximum(*per_stage) / model.threshold)
    assert (model.score(_statistics(rng, 200, shift=3.0)) > 1).float().mean() > 0.95
    assert (model.score(_statistics(rng, 200)) <= 1).float().mean() > 0.85  # fresh images of the same distribution


def test_round_trip_in_the_checkpoint_header_and_in_a_sidecar(tmp_path):
    rng = np.random.default_rng(2)
    net = torch.nn.Linear(6, 1)
    stats = _statistics(rng, 300)
    model = ood.calibrate(ood.OODModel(["a", "b"], [ood.fit_density(stats[n], 3) for n in ("a", "b")],
                                       info={"n_fit": 300}), stats)
    queries = _statistics(rng, 20, shift=1.0)
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, net, {"method": "teacher", "model": {}, "ood": model.record()}, extra=model.tensors())
    header = read_header(path)
    assert header["extra_tensors"] == ["ood."] and header["ood"]["threshold"] == model.threshold
    assert header["ood"]["method"].startswith("stage-ensemble Mahalanobis")
    state, _ = load_checkpoint(path)
    assert set(state) == {"weight", "bias"}  # the ood tensors are not weights
    loaded = ood.load_ood(path)
    assert loaded.stages == ["a", "b"] and loaded.info["n_fit"] == 300
    torch.testing.assert_close(loaded.score(queries), model.score(queries), rtol=1e-3, atol=1e-4)  # fp16 components
    # a checkpoint without its own goes to the sidecar; a damaged sidecar is a clear error, a missing one None
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(bare, net, {"method": "teacher", "model": {}})
    assert ood.load_ood(bare) is None
    ood.save_sidecar(model, ood.sidecar_path(bare))
    assert ood.sidecar_path(bare).name == "bare.ood.safetensors"
    torch.testing.assert_close(ood.load_ood(bare).score(queries), loaded.score(queries))
    ood.sidecar_path(bare).write_bytes(b"not a sidecar")
    with pytest.raises(CheckpointError, match="damaged out-of-distribution sidecar"):
        ood.load_ood(bare)
    with pytest.raises(ValueError, match="shadow model weights"):
        save_checkpoint(path, torch.nn.Sequential(net), {"method": "teacher", "model": {}}, extra={"0.x": torch.ones(1)})


def test_stages_are_found_in_every_kind_of_network():
    from torchvision.models import efficientnet_b0, resnet18

    assert list(ood.stage_modules(resnet18())) == ["layer1", "layer2", "layer3", "layer4"]
    assert list(ood.stage_modules(efficientnet_b0())) == ["features.0", "features.3", "features.5", "features.8"]
    assert list(ood.stage_modules(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1)))) == ["1"]
    net = resnet18()
    with ood.FeatureTap(net) as tap:
        net.eval()(torch.randn(2, 3, 64, 64))
        stats = tap.take()
    assert {name: s.shape[1] for name, s in stats.items()} == {"layer1": 128, "layer2": 256, "layer3": 512, "layer4": 1024}
    assert not net._forward_hooks and not net.layer1._forward_hooks  # removed on exit


# --------------------------------------------------------------------------- the shipped student


@pytest.fixture(scope="module")
def pearson():
    model = core.load_model(PEARSON)
    return model, ood.load_ood(PEARSON)


def test_shipped_students_have_a_sidecar_and_real_photographs_are_flagged(pearson):
    import skimage.data

    from core.data.faces import crop_face

    model, detector = pearson
    assert detector is not None and ood.sidecar_path(PEARSON).stat().st_size < 400_000
    scorer = ood.Scorer(core.load_model(PEARSON, serve=True), detector)
    photo = Image.fromarray(skimage.data.astronaut())
    images = [photo, crop_face(photo)[0], Image.fromarray(skimage.data.coffee())]
    _, scores = scorer(torch.stack([model.preprocess(i) for i in images]))
    assert (scores > 1).all(), scores


def test_held_out_benchmark_images_of_its_own_source_are_in_distribution(pearson):
    from core.data.synthetic import SynthConfig, render_split_image

    model, detector = pearson
    config = SynthConfig()  # the shipped checkpoints' benchmark: 64 px, 2400 images per source
    assert model.header["image_size"] == config.image_size
    images = [Image.fromarray(render_split_image(config, "faceswap", "test", index)[0]) for index in range(0, 240, 2)]
    _, scores = ood.Scorer(model, detector)(torch.stack([model.preprocess(i) for i in images]))
    assert (scores <= 1).float().mean() >= 0.9, scores
