"""core.load_model gives the network as it should run: BatchNorm folded, channels_last, same logits; or ONNX Runtime
through a cached export whose graph also outputs the out-of-distribution statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import core
from core.models.masked import MaskedResNet

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.parametrize("name", ["teacher-resnet50-synthetic-faceswap", "student-pearson-resnet50-synthetic-faceswap"])
def test_the_served_network_gives_the_trained_networks_logits(name):
    path = SHIPPED / f"{name}.safetensors"
    trained, served = core.load_model(path, serve=False), core.load_model(path)  # serving is the default
    assert served.served and not getattr(trained, "served", False)
    assert served.header == trained.header and served.preprocess is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in served.modules()), "every BatchNorm folded into its conv"
    assert any(isinstance(m, nn.BatchNorm2d) for m in trained.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in served.parameters() if p.dim() == 4)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (served(images) - trained(images)).abs().max() <= 1e-4


def test_the_trained_form_still_takes_gradients_for_grad_cam():
    trained = core.load_model(SHIPPED / "student-pearson-resnet50-synthetic-faceswap.safetensors", serve=False)
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    trained(images).sum().backward()
    assert images.grad is not None and any(p.grad is not None for p in trained.parameters())


def test_a_masked_student_is_served_as_it_is(tmp_path):
    from core.checkpoint import save_checkpoint

    masked = MaskedResNet("resnet-tiny")
    header = {"method": "pearson", "model": {"type": "masked-resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(tmp_path / "masked.safetensors", masked, header)
    loaded = core.load_model(tmp_path / "masked.safetensors", serve=True)
    assert isinstance(loaded, MaskedResNet) and not getattr(loaded, "served", False)


def test_onnx_runtime_serves_through_a_cached_export_with_the_ood_statistics(tmp_path, monkeypatch):
    from core.deploy.serving import serving_path
    from core.evaluation.ood import FeatureTap, Scorer, load_ood

    monkeypatch.setenv("CORE_CACHE_DIR", str(tmp_path / "cache"))
    path = SHIPPED / "student-pearson-resnet50-synthetic-faceswap.safetensors"
    onnx_model = core.load_model(path, runtime="onnx")
    export = serving_path(path)
    assert export.is_file() and export.parent == tmp_path / "cache" / "serving"
    stamp = export.stat().st_mtime_ns
    assert core.load_model(path, runtime="onnx").statistics == ["layer1", "layer2", "layer3", "layer4"]
    assert export.stat().st_mtime_ns == stamp, "the second load reuses the export"
    torch_model = core.load_model(path)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    logits, statistics = onnx_model.forward_with_statistics(images)
    with torch.no_grad(), FeatureTap(torch_model) as tap:
        expected = torch_model(images)
        expected_statistics = tap.take()
    assert (logits - expected).abs().max() <= 1e-4
    for stage, values in statistics.items():
        torch.testing.assert_close(values, expected_statistics[stage], rtol=1e-4, atol=1e-4)
    ood = load_ood(path)
    torch.testing.assert_close(Scorer(onnx_model, load_ood(export))(images)[1], Scorer(torch_model, ood)(images)[1],
                               rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="runtime must be one of"):
        core.load_model(path, runtime="tensorrt")


def test_round_to_keeps_the_most_probable_dropped_filters_and_the_masked_twin_agrees():
    from core.models.masked import KEEP
    from core.pruning.surgery import compact_from_masked, round_masks

    torch.manual_seed(0)
    masked = MaskedResNet("resnet-tiny").eval()
    with torch.no_grad():
        masked.sampler.logits.normal_()
    before = [m.clone() for m in masked.sampler.split(masked.sampler.eval_mask().bool())]
    probability = masked.sampler.split(masked.sampler.keep_probability().detach())
    round_masks(masked, 4)
    after = masked.sampler.split(masked.sampler.eval_mask().bool())
    for old, new, p in zip(before, after, probability, strict=True):
        count = int(new.sum())
        assert count % 4 == 0 or count == len(new)
        assert bool((new | ~old).all()), "every filter kept before is still kept"
        added, left = new & ~old, ~new
        if added.any() and left.any():
            assert p[added].min() >= p[left].max(), "the added filters are the most probable dropped ones"
    assert masked.sampler.logits[:, KEEP].isfinite().all()
    compact = compact_from_masked(masked)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (compact(images) - masked(images)).abs().max() <= 1e-4


def test_a_compact_checkpoint_is_padded_with_zero_filters_and_gives_the_same_logits():
    from core.pruning.surgery import pad_compact

    compact = core.load_model(SHIPPED / "student-pearson-resnet50-synthetic-faceswap.safetensors", serve=False)
    padded = pad_compact(compact, 8)
    # every ResNet-50 layer width is a multiple of 8, so every count is
    assert all(n % 8 == 0 for n in padded.active_filters) and sum(padded.active_filters) > sum(compact.active_filters)
    assert all(p >= c for p, c in zip(padded.active_filters, compact.active_filters, strict=True))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (padded(images) - compact(images)).abs().max() <= 1e-5
