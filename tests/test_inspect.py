"""core.evaluation.inspect: feature maps, per-filter records, layer correlation and embeddings, checked exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.evaluation import inspect
from core.models.masked import MaskedResNet
from core.models.registry import build_model
from core.pruning.surgery import compact_from_masked, filter_record


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode maps differ channel to channel."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@pytest.fixture()
def students():
    """A masked resnet-tiny with about half its filters dropped, and its compact model with a header."""
    torch.manual_seed(0)
    masked = MaskedResNet("resnet-tiny")
    _randomise(masked)
    with torch.no_grad():
        masked.sampler.logits.copy_(torch.randn(masked.sampler.logits.shape, generator=torch.Generator().manual_seed(1)))
    masked.sampler.temperature = 0.5
    masked.eval()
    record = filter_record(masked)
    masked.header = {"pruning": {"channels": masked.sampler.channels, **record}}
    compact = compact_from_masked(masked)
    compact.header = {"pruning": {"channels": masked.sampler.channels, **record}}
    return masked, compact, record


def test_filter_record_matches_an_independent_computation(students):
    masked, _, record = students
    logits = masked.sampler.logits.detach()
    keep = torch.softmax(logits / 0.5, dim=-1)[:, 1]
    margin = logits[:, 1] - logits[:, 0]
    start = 0
    layer_names = [layer.name for layer in masked.layers]
    for index, channels in enumerate(masked.sampler.channels):
        layer_margin = margin[start:start + channels]
        expected_kept = torch.nonzero(layer_margin > 0).flatten().tolist() or [int(layer_margin.argmax())]
        assert record["kept"][index] == expected_kept
        np.testing.assert_allclose(record["keep_probability"][index], keep[start:start + channels].numpy(), atol=1e-4)
        weight = inspect.layer_weight(masked, layer_names[index]).flatten(1).double().numpy()
        rho = np.corrcoef(weight)
        expected_redundancy = ((rho ** 2).sum(1) - 1) / (channels - 1)
        np.testing.assert_allclose(record["redundancy"][index], expected_redundancy, atol=2e-4)
        start += channels


def test_compact_feature_maps_sit_at_the_teachers_channel_positions(students):
    masked, compact, record = students
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(2))
    names = [layer.name for layer in masked.layers]
    assert inspect.block_conv_names(compact) == names
    for index, layer in enumerate(names):
        maps_masked, kept_masked = inspect.feature_maps(masked, image, layer)
        maps_compact, kept_compact = inspect.feature_maps(compact, image, layer)
        assert kept_compact.tolist() == kept_masked.tolist()
        assert np.flatnonzero(kept_compact).tolist() == record["kept"][index]
        np.testing.assert_allclose(maps_compact, maps_masked, atol=1e-4)
        assert not maps_compact[~kept_compact].any(), "a pruned channel is all zeros"
        if layer.endswith("conv1"):  # inside the block: after the ReLU
            assert maps_compact.min() >= 0


def test_teacher_feature_maps_are_the_bn_output(students):
    teacher = build_model("resnet-tiny").eval()
    _randomise(teacher)
    image = torch.randn(3, 32, 32)
    maps, kept = inspect.feature_maps(teacher, image, "layer2.0.conv2")
    with torch.no_grad():
        x = teacher.maxpool(teacher.relu(teacher.bn1(teacher.conv1(image[None]))))
        block = teacher.layer2[0]
        inner = teacher.relu(block.bn1(block.conv1(teacher.layer1(x))))
        expected = block.bn2(block.conv2(inner))[0]  # the block's last conv: before the residual add, no ReLU
    assert kept.all()
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-5)


def test_tile_scales_each_kept_channel_and_blanks_the_pruned():
    maps = np.stack([np.full((2, 3), 5.0), np.arange(6.0).reshape(2, 3), np.ones((2, 3))])
    grid = inspect.tile(maps, np.array([True, True, False]), columns=2, gap=1)
    assert grid.shape == (2 * 2 + 1, 2 * 3 + 1)
    np.testing.assert_array_equal(grid[:2, :3], 0.0)  # constant map -> zeros
    np.testing.assert_allclose(grid[:2, 4:7], np.arange(6.0).reshape(2, 3) / 5)
    assert np.isnan(grid[3:5, 0:3]).all() and np.isnan(grid[2]).all() and np.isnan(grid[3:5, 4:7]).all()


def test_layer_filters_of_a_masked_and_a_compact_student(students):
    masked, compact, record = students
    layer, index = "layer1.0.conv1", 0
    weight = inspect.layer_weight(masked, layer).flatten(1).double().numpy()
    kept = record["kept"][index]
    view = inspect.layer_filters(masked, layer)
    np.testing.assert_allclose(view.before, np.corrcoef(weight), atol=1e-5)
    np.testing.assert_allclose(view.after, np.corrcoef(weight[kept]), atol=1e-5)
    assert view.kept == kept and view.channels == weight.shape[0]
    np.testing.assert_allclose(view.keep_probability, record["keep_probability"][index])

    teacher = build_model("resnet-tiny")
    compact_view = inspect.layer_filters(compact, layer, teacher)
    teacher_weight = teacher.layer1[0].conv1.weight.detach().flatten(1).double().numpy()
    np.testing.assert_allclose(compact_view.before, np.corrcoef(teacher_weight), atol=1e-5)
    # the compact layer's filters are the masked student's kept ones (its first conv sees every input channel)
    np.testing.assert_allclose(compact_view.after, np.corrcoef(weight[kept]), atol=1e-5)
    np.testing.assert_allclose(compact_view.redundancy, record["redundancy"][index])
    searched = inspect.layer_filters(compact, layer, masked)  # before = the search's own filters, when its checkpoint is kept
    np.testing.assert_allclose(searched.before, np.corrcoef(weight), atol=1e-5)
    assert "end of the search" in searched.before_source
    with pytest.raises(ValueError, match="not the same architecture"):
        other = build_model("resnet18")
        other.header = {"model": {"type": "resnet", "arch": "resnet18"}}
        inspect.layer_filters(compact, "layer1.0.conv1", other)
    with pytest.raises(ValueError, match="needs its teacher"):
        inspect.layer_filters(compact, layer)
    with pytest.raises(ValueError, match="unknown layer"):
        inspect.layer_filters(compact, "layer9.0.conv1", teacher)


def test_penultimate_features_are_the_pooled_last_stage(tiny_benchmark):
    import core.data.images as images
    from core.data.datasets import resolve_dataset

    model = build_model("resnet-tiny").eval()
    model.preprocess = images.eval_transform(32, images.IMAGENET)
    samples = resolve_dataset("synthetic").split("test")[:10]
    features, indices = inspect.penultimate_features(model, samples, batch_size=4, progress=False)
    assert indices.tolist() == list(range(10))
    batch = torch.stack([model.preprocess(images.load_image(s.path)) for s in samples])
    with torch.no_grad():
        from core.models.resnet import forward_features

        _, stages = forward_features(model, batch)
    np.testing.assert_allclose(features, stages[-1].mean(dim=(2, 3)).numpy(), atol=1e-5)


def test_spread_subset_keeps_the_ends_and_every_group():
    items = list(range(100))
    subset = inspect.spread_subset(items, 10)
    assert len(subset) == 10 and subset[0] == 0 and subset[-1] == 99
    assert inspect.spread_subset(items, 500) == items


def test_knn_accuracy_separates_separable_features():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (40, 8)), rng.normal(6, 1, (40, 8))])
    labels = np.repeat([0, 1], 40)
    assert inspect.knn_accuracy(features, labels) == 1.0
    assert 0.3 < inspect.knn_accuracy(rng.normal(0, 1, (80, 8)), rng.permutation(labels)) < 0.7


def test_embedding_is_cached_on_disk(tiny_benchmark, tmp_path, monkeypatch):
    from core.checkpoint import save_checkpoint
    from core.data.datasets import resolve_dataset

    header = {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(tmp_path / "tiny.safetensors", build_model("resnet-tiny"), header)
    calls = []

    def fake_umap(features, seed=0, neighbours=15):  # the real one compiles for ~15 s; the page test covers it
        calls.append(len(features))
        return features[:, :2].astype(np.float32)

    monkeypatch.setattr(inspect, "umap_embedding", fake_umap)
    samples = resolve_dataset("synthetic").split("test")
    first = inspect.embedding(tmp_path / "tiny.safetensors", samples, progress=False)
    second = inspect.embedding(tmp_path / "tiny.safetensors", samples, progress=False)
    assert calls == [len(samples)]
    np.testing.assert_array_equal(first["xy"], second["xy"])
    assert first["labels"].tolist() == [s.label for s in samples] and first["sources"] == [s.source for s in samples]
    assert 0 <= first["knn_accuracy"] <= 1


def test_kept_per_layer_of_a_ticket_and_a_channel_pruned_network():
    from core.models import build_from_spec
    from core.models.shapes import layer_shapes
    from core.models.ticket import Ticket

    ticket = Ticket("cnn5")
    masks = ticket.masks()
    first = next(iter(masks))
    ticket.set_masks({first: torch.zeros_like(masks[first]).flatten().index_fill(0, torch.arange(27), 1.0).view_as(masks[first])})
    names, percent, unit = inspect.kept_per_layer(ticket)
    assert unit == "weights" and names == list(masks) and percent[0] == pytest.approx(100 * 27 / masks[first].numel())
    assert percent[1:] == [100.0] * (len(names) - 1)

    shapes = layer_shapes(build_model("cnn5"))
    shapes["features.0"]["out_channels"] = 4  # a quarter of the first conv's 16 filters
    pruned = build_from_spec({"type": "pruned-net", "arch": "cnn5", "shapes": shapes})
    pruned.header = {"model": {"type": "pruned-net", "arch": "cnn5"}}
    names, percent, unit = inspect.kept_per_layer(pruned)
    assert unit == "channels" and names[0] == "features.0" and percent[0] == 25.0 and percent[1:] == [100.0] * (len(names) - 1)
