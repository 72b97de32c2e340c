"""The student objectives against independent computations, in both forms where the Pearson paper's equations and
its authors' code differ: the authors' code (``kd_scale: none``, no T^2; ``feature_stages: mean``, L_RL averaged over
the stages; ``feature_decoders: false``, no decoder) and the paper (Eq. 9: the KD term times T^2, ``kd_scale: t2``;
Eq. 10: a decoder at each downsampling stage and the stages summed, ``feature_decoders: true``, ``feature_stages:
sum``). Also Pearson's two score normalisations, the KDFS MACs penalty, the lambda wiring of the distiller's forward,
and the planted-duplicate ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from core.methods.distillation import Distiller, StudentOptions, kd_loss, reconstruction_loss
from core.methods.kdfs import MacsPenalty
from core.methods.pearson import CorrelationPenalty, correlation_loss, layer_scores, shape_groups
from core.models.masked import MaskedResNet
from core.models.registry import build_model
from core.models.resnet import forward_features
from core.pruning.flops import MaskedCost, profile_model
from core.pruning.surgery import compact_from_masked

SIZE = 32
# the loss forms where the paper's equations and its authors' code differ (module docstring)
FORMS = {"authors-code": {"kd_scale": "none", "feature_stages": "mean", "feature_decoders": False},
         "paper-eq9-eq10": {"kd_scale": "t2", "feature_stages": "sum", "feature_decoders": True}}


def _numpy_scores(weight: np.ndarray) -> np.ndarray:
    """The paper's Score_i = 1/(C-1) sum_{j != i} rho_ij^2, rho from numpy's corrcoef of the flattened filters."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    rho = np.corrcoef(flat)
    np.fill_diagonal(rho, 0.0)
    return (rho**2).sum(axis=1) / (flat.shape[0] - 1)


def _student(seed: int = 0) -> MaskedResNet:
    torch.manual_seed(seed)
    return MaskedResNet("resnet-tiny")


@pytest.mark.parametrize("normalization", ["paper", "author-code"])
def test_correlation_loss_matches_numpy_at_both_normalisations(normalization):
    student = _student()
    keep = torch.rand(sum(student.sampler.channels), generator=torch.Generator().manual_seed(1))
    modules = dict(student.named_modules())
    per_layer = []
    for layer, phi in zip(student.layers, student.sampler.split(keep), strict=True):
        weight = modules[layer.name].weight.detach().numpy()
        width = weight[0].size
        factor = (width - 1) ** 2 if normalization == "author-code" else 1.0  # the published code's Zn Zn^T, no 1/(W-1)
        per_layer.append(factor * float(np.mean(_numpy_scores(weight) * phi.numpy())))
    expected = float(np.mean(per_layer))  # (1/L) sum_l (1/C_l) sum_i Score_l,i phi_l,i
    got = float(correlation_loss(student, keep, normalization=normalization).detach())
    assert got == pytest.approx(expected, rel=1e-5)


def test_author_code_scores_are_w_minus_1_squared_times_the_papers_per_layer():
    student = _student()
    paper, author = layer_scores(student, normalization="paper"), layer_scores(student, normalization="author-code")
    modules = dict(student.named_modules())
    for group_paper, group_author, (indices, convs) in zip(paper, author, shape_groups(student), strict=True):
        width = convs[0].weight[0].numel()
        torch.testing.assert_close(group_author, group_paper * (width - 1) ** 2, rtol=1e-6, atol=0)
        for row, index in zip(group_paper, indices, strict=True):  # and the paper's scores are numpy's
            weight = modules[student.layers[index].name].weight.detach().numpy()
            np.testing.assert_allclose(row.detach().numpy(), _numpy_scores(weight), rtol=1e-4, atol=1e-7)


def test_author_code_moves_each_layers_keep_logits_w_minus_1_squared_times_the_paper_scale():
    """The published lambda_3 acts at the author-code scale: on every layer's keep logits, the correlation loss's
    gradient is exactly (W - 1)^2 times the paper-scale one, W that layer's filter size (576 to 4,608 weights here), so
    a wrong normalisation (W^2, W - 1, one factor for every layer) fails."""
    grads = {}
    for normalization in ("paper", "author-code"):
        student = _student()
        correlation_loss(student, student.sampler.keep_probability(), normalization=normalization).backward()
        grads[normalization] = student.sampler.logits.grad[:, 1]
    modules = dict(student.named_modules())
    per_layer = zip(student.layers, student.sampler.split(grads["paper"]), student.sampler.split(grads["author-code"]),
                    strict=True)
    for layer, paper, author in per_layer:
        width = modules[layer.name].weight[0].numel()
        assert paper.abs().min() > 0
        torch.testing.assert_close(author, paper * (width - 1) ** 2, rtol=1e-4, atol=0)


def _distiller(options: StudentOptions, penalty, seed: int = 0) -> Distiller:
    torch.manual_seed(seed)
    teacher = build_model("resnet-tiny").eval()
    student = MaskedResNet("resnet-tiny")
    student.load_state_dict(teacher.state_dict(), strict=False)
    cost = MaskedCost(student, SIZE)
    return Distiller(student, teacher, options, penalty, cost, profile_model(teacher, SIZE)["macs"])


def test_kdfs_prune_loss_is_the_squared_gap_of_the_compact_models_macs_to_the_target():
    options = StudentOptions(target_rate=0.7)
    distiller = _distiller(options, MacsPenalty(options.target_rate))
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        mask = (torch.rand(sum(distiller.student.sampler.channels), generator=generator) > 0.4).float()
        with torch.no_grad():  # the eval mask of these logits is exactly `mask`
            distiller.student.sampler.logits[:, 1] = mask * 2 - 1
            distiller.student.sampler.logits[:, 0] = 0
        compact = compact_from_masked(distiller.student.eval())
        ratio = profile_model(compact, SIZE)["macs"] / profile_model(build_model("resnet-tiny"), SIZE)["macs"]
        got = distiller.penalty(distiller, mask, mask)
        assert float(got) == pytest.approx((ratio - (1 - 0.7)) ** 2, rel=1e-6)


def _attention(features: torch.Tensor) -> np.ndarray:
    """normalize_L2(mean_c f^2) per image, in numpy."""
    maps = (features.detach().double().numpy() ** 2).mean(axis=1).reshape(len(features), -1)
    return maps / np.linalg.norm(maps, axis=1, keepdims=True)


@pytest.mark.parametrize("form", FORMS)
def test_reconstruction_loss_is_the_attention_distance_stage_mean_of_the_authors_code_or_eq10_sum(form):
    """Without decoders: the authors' code averages the per-stage attention distances; ``feature_stages: sum`` (Eq. 10)
    adds them."""
    torch.manual_seed(0)
    student = [torch.randn(3, c, s, s) for c, s in ((64, 8), (128, 4), (256, 2), (512, 1))]
    teacher = [torch.randn(3, 2 * c, s, s) for c, s in ((64, 8), (128, 4), (256, 2), (512, 1))]  # other widths
    per_stage = [float(((_attention(a) - _attention(b)) ** 2).mean()) for a, b in zip(student, teacher, strict=True)]
    stages = FORMS[form]["feature_stages"]
    expected = np.mean(per_stage) if stages == "mean" else np.sum(per_stage)
    got = reconstruction_loss(student, teacher, None, StudentOptions(feature_stages=stages))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_kd_scale_t2_is_the_authors_code_kd_times_t_squared_exactly():
    """Eq. 9's KD term (``kd_scale: t2``) is the authors' code's (no factor) times T^2, bit for bit."""
    generator = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(16, generator=generator), torch.randn(16, generator=generator)
    for temperature in (1.0, 1.5, 2.0, 3.0):
        authors = kd_loss(student, teacher, temperature, t_squared=False)
        assert authors > 0 and torch.equal(kd_loss(student, teacher, temperature, t_squared=True), authors * temperature**2)


def test_eq10_decoders_one_1x1_per_stage_only_when_asked_the_authors_code_none_and_mse_needs_matching_widths():
    assert len(_distiller(StudentOptions(), MacsPenalty(0.8)).decoders) == 0  # the KDFS code has none
    with_decoders = _distiller(StudentOptions(feature_decoders=True), MacsPenalty(0.8))
    assert [d.kernel_size for d in with_decoders.decoders] == [(1, 1)] * 4  # Eq. 10: one per downsampling stage
    assert len(_distiller(StudentOptions(feature_decoders=True, lambda_rl=0), MacsPenalty(0.8)).decoders) == 0
    teacher = build_model("resnet18")  # the student's stages are narrower than a ResNet-50's, not than a ResNet-18's
    student = MaskedResNet("resnet-tiny", "sign")
    wide = build_model("resnet50")
    Distiller(student, teacher, StudentOptions(feature_distance="mse"), MacsPenalty(0.8), MaskedCost(student, SIZE), 1.0)
    with pytest.raises(ValueError, match="feature_decoders true"):
        Distiller(student, wide, StudentOptions(feature_distance="mse"), MacsPenalty(0.8),
                  MaskedCost(student, SIZE), 1.0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("penalty", [MacsPenalty, CorrelationPenalty])
def test_forward_weights_every_term_by_its_lambda_in_the_authors_code_and_the_paper_form(penalty, form):
    """The distiller's loss is BCE + lambda_1 KD + lambda_2 L_RL + lambda_3 L_prune, each term recomputed here: KD
    the Bernoulli KL (times T^2 in the paper's form), L_RL the attention distances of the student's stage outputs
    (through each stage's 1x1 decoder in the paper's form) averaged (authors' code) or summed (paper) over the stages."""
    options = StudentOptions(kd_temperature=2.0, lambda_kd=0.5, lambda_rl=10.0, lambda_prune=0.3, target_rate=0.7,
                             **FORMS[form])
    made = MacsPenalty(options.target_rate) if penalty is MacsPenalty else CorrelationPenalty(options)
    distiller = _distiller(options, made).eval()  # eval: deterministic masks
    torch.manual_seed(5)
    images, labels = torch.randn(4, 3, SIZE, SIZE), torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss, terms = distiller(images, labels)
    with torch.no_grad():
        logits, features, mask, keep = distiller.student.forward_features(images)
        teacher_logits, teacher_features = forward_features(distiller.teacher, images)
        if options.feature_decoders:
            assert len(distiller.decoders) == len(features) == 4
            features = [F.conv2d(f, d.weight, d.bias) for d, f in zip(distiller.decoders, features, strict=True)]
        z, t, y, temperature = logits.double(), teacher_logits.double(), labels.double(), 2.0
        bce = F.binary_cross_entropy_with_logits(z, y)
        q = torch.sigmoid(t / temperature)
        p = torch.sigmoid(z / temperature)
        kl = (q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))).mean()  # the Bernoulli KL
        kd = kl * (temperature**2 if options.kd_scale == "t2" else 1)
        per_stage = [((_attention(a) - _attention(b)) ** 2).mean() for a, b in zip(features, teacher_features, strict=True)]
        rl = np.sum(per_stage) if options.feature_stages == "sum" else np.mean(per_stage)
        prune = float(distiller.penalty(distiller, mask, keep))
    assert float(terms["bce"]) == pytest.approx(float(bce), rel=1e-5)
    assert float(terms["kd"]) == pytest.approx(float(kd), rel=1e-4, abs=1e-7)
    assert float(terms["rl"]) == pytest.approx(rl, rel=1e-5)
    assert float(terms["prune"]) == pytest.approx(prune, rel=1e-6)
    expected = float(bce) + 0.5 * float(kd) + 10.0 * rl + 0.3 * prune
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_pearson_drops_a_planted_duplicate_before_the_unique_filters():
    """A layer whose filter 1 is a scaled copy of filter 0: the author-code loss ranks the pair first, and
    gradient steps on it drop a duplicate before any unique filter of that layer."""
    student = _student(seed=2)
    layer = 4  # layer3.0.conv1: 128 filters of 576 weights
    conv = dict(student.named_modules())[student.layers[layer].name]
    with torch.no_grad():
        conv.weight[1] = 0.5 * conv.weight[0] + 1e-3  # correlation 1 with filter 0
        student.sampler.logits[:, 0] = 0.0
        student.sampler.logits[:, 1] = 1.0  # every filter starts with the same keep margin
    offset = sum(student.sampler.channels[:layer])
    channels = student.sampler.channels[layer]
    optimizer = torch.optim.SGD([student.sampler.logits], lr=0.05)
    first_dropped = None
    for _ in range(200):
        student.sampler.temperature = 1.0
        keep = student.sampler.keep_probability()
        optimizer.zero_grad()
        correlation_loss(student, keep, normalization="author-code").backward()
        optimizer.step()
        margin = student.sampler.margin()[offset:offset + channels].detach()
        if (margin <= 0).any():
            first_dropped = set(torch.nonzero(margin <= 0).flatten().tolist())
            break
    assert first_dropped is not None and first_dropped <= {0, 1}, first_dropped
