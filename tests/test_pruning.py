"""The pruning maths: Pearson correlation and redundancy scores against numpy, the Gumbel
sampler, the differentiable MACs estimate against the profiler, and the compact model
against the masked one (20 random mask patterns, extremes included)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from core.methods.distillation import StudentOptions, kd_loss, temperature
from core.methods.pearson import correlation_loss
from core.models.compact import CompactResNet
from core.models.masked import MaskedResNet
from core.pruning import pearson_correlation, redundancy_scores
from core.pruning.flops import MaskedCost, profile_model
from core.pruning.surgery import compact_from_masked


def numpy_correlation(weight: np.ndarray) -> np.ndarray:
    """Independent reference: rho_ij by the definition, 0 for a constant filter."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    count = flat.shape[1]
    rho = np.zeros((len(flat), len(flat)))
    for i in range(len(flat)):
        for j in range(len(flat)):
            si, sj = flat[i].std(ddof=1), flat[j].std(ddof=1)
            if si == 0 or sj == 0:
                continue
            rho[i, j] = np.sum((flat[i] - flat[i].mean()) / si * (flat[j] - flat[j].mean()) / sj) / (count - 1)
    return rho


def numpy_scores(weight: np.ndarray) -> np.ndarray:
    rho = numpy_correlation(weight)
    channels = len(rho)
    return np.array([sum(rho[i, j] ** 2 for j in range(channels) if j != i) / (channels - 1) for i in range(channels)])


def _weights():
    rng = np.random.default_rng(0)
    random_wide = rng.normal(size=(6, 4, 3, 3))  # W = 36 > C = 6
    random_tall = rng.normal(size=(40, 8, 1, 1))  # W = 8 < C = 40: the Gram path
    degenerate = rng.normal(size=(7, 3, 3, 3))
    degenerate[1] = 0.25  # constant filter
    degenerate[2] = 0.0  # all-zero filter
    degenerate[4] = degenerate[3]  # duplicate
    degenerate[5] = -2 * degenerate[3] + 1  # perfectly anti-correlated, rescaled
    tall_degenerate = rng.normal(size=(12, 2, 1, 1))
    tall_degenerate[0] = 1.0
    tall_degenerate[3] = tall_degenerate[2]
    return {"wide": random_wide, "tall": random_tall, "degenerate": degenerate, "tall-degenerate": tall_degenerate}


@pytest.mark.parametrize("name", list(_weights()))
def test_pearson_functions_match_numpy(name):
    weight = _weights()[name]
    tensor = torch.tensor(weight, dtype=torch.float32)
    np.testing.assert_allclose(pearson_correlation(tensor).double().numpy(), numpy_correlation(weight), atol=1e-6)
    np.testing.assert_allclose(redundancy_scores(tensor).double().numpy(), numpy_scores(weight), atol=1e-6)


def test_degenerate_filters_are_finite_and_have_gradients():
    weight = torch.tensor(_weights()["degenerate"], dtype=torch.float32, requires_grad=True)
    rho = pearson_correlation(weight).detach()
    assert float(rho[3, 4]) == pytest.approx(1.0, abs=1e-6) and float(rho[3, 5]) == pytest.approx(-1.0, abs=1e-6)
    assert torch.all(rho[1] == 0) and torch.all(rho[2] == 0)
    redundancy_scores(weight).sum().backward()
    assert torch.isfinite(weight.grad).all()


def test_batched_scores_equal_per_layer_scores():
    weights = torch.randn(3, 16, 8, 3, 3)
    batched = redundancy_scores(weights)
    for index in range(3):
        torch.testing.assert_close(batched[index], redundancy_scores(weights[index]))


@pytest.fixture(scope="module")
def masked() -> MaskedResNet:
    torch.manual_seed(0)
    model = MaskedResNet("resnet50")
    for module in model.modules():  # non-trivial BN statistics, so a wrong slice cannot hide
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.2)
            module.bias.data.normal_(0, 0.2)
    return model.eval()


def test_resnet50_has_48_masked_layers(masked):
    assert len(masked.layers) == 48
    assert masked.sampler.logits.shape == (sum(layer.channels for layer in masked.layers), 2)
    assert masked.layers[0].name == "layer1.0.conv1" and masked.layers[-1].name == "layer4.2.conv3"
    assert sum(layer.residual for layer in masked.layers) == 16


def test_correlation_loss_is_the_mean_over_layers(masked):
    keep = torch.rand(masked.sampler.logits.shape[0])
    modules = dict(masked.named_modules())
    expected = np.mean([
        float((redundancy_scores(modules[layer.name].weight.detach()) * phi).mean())
        for layer, phi in zip(masked.layers, masked.sampler.split(keep), strict=True)
    ])
    assert float(correlation_loss(masked, keep).detach()) == pytest.approx(expected, rel=1e-5)


def test_scores_of_a_channels_last_student_equal_the_contiguous_ones():
    """The engine trains in channels_last: its filters are read in memory order, and the scores stay the same."""
    import copy

    from core.methods.pearson import layer_scores

    torch.manual_seed(0)
    plain = MaskedResNet("resnet-tiny")
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    assert any(not m.weight.is_contiguous() for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))
    for a, b in zip(layer_scores(nhwc, weight_gradient=False), layer_scores(plain, weight_gradient=False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_scores_refreshed_every_n_steps_are_reused_in_between_and_their_agreement_recorded(masked):
    from types import SimpleNamespace

    from core.config import TrainConfig
    from core.methods.distillation import StudentOptions
    from core.methods.pearson import CorrelationPenalty

    keep = torch.rand(masked.sampler.logits.shape[0])
    distiller = SimpleNamespace(student=masked, options=StudentOptions(correlation_weight_gradient=False, score_every=3))
    penalty = CorrelationPenalty(distiller.options)  # the distiller's own: it keeps the cached scores
    conv = masked.layer1[0].conv2
    losses = []
    for step in range(5):
        losses.append(float(penalty(distiller, None, keep)))
        fresh = float(correlation_loss(masked, keep, weight_gradient=False,
                                       normalization=distiller.options.correlation_normalization))
        assert losses[-1] == pytest.approx(fresh, rel=1e-6) if step in (0, 3) else losses[-1] != fresh
        with torch.no_grad():
            conv.weight.add_(0.05 * torch.randn_like(conv.weight))  # the weights move after every step
    assert losses[1] == losses[2] == losses[0] and losses[4] == losses[3], "reused between refreshes"
    (agreement,) = penalty.agreement  # one refresh after the first: step 3
    assert 0.9 < agreement < 1.0 and penalty.summary() == {"score_agreement": agreement}
    penalty.new_epoch()
    assert penalty.scores is None and penalty.summary() == {}, "each epoch starts with fresh scores"
    with pytest.raises(ValueError, match="score_every"):
        StudentOptions.from_config(TrainConfig(method="pearson", method_options={"score_every": 4}))


def _set_pattern(model: MaskedResNet, pattern: str, rng: np.random.Generator) -> None:
    logits = model.sampler.logits.data
    channels = model.sampler.channels
    if pattern == "all":
        keep = np.ones(logits.shape[0], bool)
    elif pattern == "one":
        keep = np.concatenate([np.eye(1, c, rng.integers(c))[0].astype(bool) for c in channels])
    elif pattern == "none":  # nothing kept anywhere: every layer is rescued to one filter
        keep = np.zeros(logits.shape[0], bool)
    else:
        rate = rng.uniform(0.02, 0.98)
        keep = rng.random(logits.shape[0]) < rate
    margin = torch.tensor(rng.uniform(0.1, 2.0, logits.shape[0]), dtype=torch.float32)
    logits[:, 1] = torch.where(torch.tensor(keep), margin, -margin)
    logits[:, 0] = 0.0


PATTERNS = ["all", "one", "none"] + [f"random-{i}" for i in range(17)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_compact_model_matches_masked_model(masked, pattern):
    rng = np.random.default_rng(PATTERNS.index(pattern))
    _set_pattern(masked, pattern, rng)
    images = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compact = compact_from_masked(masked)
    assert bool(caught) == (pattern == "none")
    with torch.no_grad():
        torch.testing.assert_close(compact(images), masked(images), atol=1e-4, rtol=0)
    active = masked.active_filters()
    assert compact.active_filters == active and min(active) >= 1
    if pattern == "all":
        assert active == [layer.channels for layer in masked.layers]
    if pattern in ("one", "none"):
        assert active == [1] * 48
    profiled = profile_model(compact, 48)
    cost = MaskedCost(masked, 48)
    mask = masked.sampler.eval_mask().double()
    assert float(cost.macs(mask)) == pytest.approx(profiled["macs"], rel=0.01)
    assert float(cost.params(mask)) == pytest.approx(profiled["params"], rel=0.01)


def test_cost_is_exact_and_differentiable_through_straight_through_mask(masked):
    cost = MaskedCost(masked, 64)
    assert cost.full_macs == 337_285_120  # ResNet-50 at 64 px, as `profile --arch resnet50 --image-size 64`
    masked.train()
    try:
        masked.sampler.logits.grad = None
        mask, _ = masked.sampler()
        macs = cost.macs(mask)
        macs.backward()
        assert masked.sampler.logits.grad.abs().sum() > 0
        hard_sizes = [int(m.sum()) for m in masked.sampler.split(mask.detach())]
        compact = CompactResNet("resnet50", [max(1, n) for n in hard_sizes])
        if min(hard_sizes) >= 1:
            assert float(macs.detach()) == pytest.approx(profile_model(compact, 64)["macs"], rel=1e-6)
    finally:
        masked.eval()


def test_gumbel_sampler_is_hard_in_training_and_argmax_in_eval(masked):
    sampler = masked.sampler
    sampler.train()
    sampler.seed(3)
    first, keep = sampler()
    assert set(first.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.all((keep > 0) & (keep < 1))
    sampler.seed(3)
    again, _ = sampler()
    assert torch.equal(first, again), "the same seed gives the same masks (every DDP rank agrees)"
    sampler.eval()
    margin = sampler.logits[:, 1] - sampler.logits[:, 0]
    eval_mask, _ = sampler()
    kept_layers = [bool(m.any()) for m in sampler.split(margin > 0)]
    for layer_mask, layer_margin, has_any in zip(sampler.split(eval_mask), sampler.split(margin), kept_layers, strict=True):
        if has_any:
            assert torch.equal(layer_mask.bool(), layer_margin > 0)


def test_temperature_schedule_and_kd_loss():
    options = StudentOptions(tau_start=2.0, tau_end=0.2)
    assert temperature(options, 0, 10) == pytest.approx(2.0 * 0.1 ** 0.1)
    assert temperature(options, 9, 10) == pytest.approx(0.2)
    assert temperature(options, 3, 10) == pytest.approx(2.0 * 0.1 ** 0.4)
    zs, zt, t = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, -0.5, 0.1]), 3.0
    p, q = 1 / (1 + np.exp(-zs.numpy() / t)), 1 / (1 + np.exp(-zt.numpy() / t))
    kl = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))  # Bernoulli KL(q || p)
    expected = np.mean(kl) * t**2
    assert float(kd_loss(zs, zt, t)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_mask_folded_into_the_batch_norm_equals_batch_norm_then_mask(momentum):
    """masked_batch_norm(bn, x, m) == bn(x) * m: output, every gradient, running statistics, in training and eval."""
    import copy

    from torch import nn

    from core.models.masked import masked_batch_norm

    torch.manual_seed(0)
    reference = nn.BatchNorm2d(8, momentum=momentum)
    nn.init.normal_(reference.weight), nn.init.normal_(reference.bias)
    folded = copy.deepcopy(reference)
    images = torch.randn(4, 8, 5, 5)
    upstream = torch.randn(4, 8, 5, 5)
    results = []
    for bn, fn in ((reference, lambda bn, x, m: bn(x) * m.view(1, -1, 1, 1)), (folded, masked_batch_norm)):
        x = images.clone().requires_grad_()
        mask = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 0], requires_grad=True)
        for _ in range(2):  # twice: running statistics and the cumulative-average factor move
            out = fn(bn, x, mask)
        (out * upstream).sum().backward()
        bn.eval()
        results.append({"out": out, "eval": fn(bn, images, mask.detach()), "x": x.grad, "mask": mask.grad,
                        "weight": bn.weight.grad, "bias": bn.bias.grad, "mean": bn.running_mean, "var": bn.running_var,
                        "count": bn.num_batches_tracked})
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-5, atol=1e-5, msg=name)
    assert torch.all(results[1]["out"].detach()[:, [1, 4, 7]] == 0), "a dropped filter is exactly zero"


def test_teacher_with_batch_norms_folded_gives_the_same_logits_and_features():
    from core.models.registry import build_model
    from core.models.resnet import fold_batch_norms, forward_features

    torch.manual_seed(0)
    teacher = build_model("resnet-tiny")
    teacher.train()
    teacher(torch.randn(8, 3, 32, 32))  # non-trivial running statistics
    teacher.eval()
    folded = fold_batch_norms(teacher)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    assert teacher.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        (logits, features), (folded_logits, folded_features) = forward_features(teacher, images), forward_features(folded, images)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(folded_features, features, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
