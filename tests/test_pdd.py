"""PDD: sign masks with the ApproxSign gradient, a student of another architecture than its teacher."""

from __future__ import annotations

import pytest
import torch

import core
from core.config import build_config
from core.models.masked import ApproxSignMask, MaskedResNet, SignSampler, approx_sign01, masked_layers
from core.models.registry import build_model
from core.pruning.flops import profile_model
from core.training.engine import train


def test_approx_sign_forward_is_binary_and_backward_is_the_polynomial_slope():
    scores = torch.tensor([-1.5, -1.0, -0.5, -1e-6, 0.0, 1e-6, 0.25, 0.5, 0.999, 1.0, 2.0], requires_grad=True)
    mask = ApproxSignMask.apply(scores)
    assert mask.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    mask.sum().backward()
    # d/dm of (ApproxSign(m) + 1) / 2: 1 + m on [-1, 0), 1 - m on [0, 1), 0 outside
    expected = [0, 0, 0.5, 1 - 1e-6, 1, 1 - 1e-6, 0.75, 0.5, 0.001, 0, 0]
    torch.testing.assert_close(scores.grad, torch.tensor(expected), atol=1e-6, rtol=0)
    # and the surrogate itself: its numerical derivative is that slope, its range [0, 1]
    grid = torch.linspace(-0.99, 0.99, 199, dtype=torch.float64)
    step = 1e-6
    numeric = (approx_sign01(grid + step) - approx_sign01(grid - step)) / (2 * step)
    torch.testing.assert_close(numeric, (1 - grid.abs()), atol=1e-6, rtol=0)
    assert approx_sign01(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]


def test_sign_sampler_eval_mask_rescues_an_empty_layer():
    layers = masked_layers(build_model("resnet-tiny"))
    sampler = SignSampler(layers).eval()
    with torch.no_grad():
        sampler.scores.fill_(0.5)
        first = sampler.channels[0]
        sampler.scores[:first] = -torch.linspace(0.1, 0.9, first)  # layer 0 drops everything
    mask, keep = sampler()
    per_layer = sampler.split(mask)
    assert per_layer[0].sum() == 1 and per_layer[0][0] == 1, "the least-negative filter is kept"
    assert all(m.all() for m in per_layer[1:])
    assert sampler.empty_layers() == [layers[0].name]
    assert ((keep >= 0) & (keep <= 1)).all()


def test_masked_resnet_with_sign_masks_round_trips_through_a_checkpoint(tmp_path):
    from core.checkpoint import save_checkpoint

    student = MaskedResNet("resnet-tiny", sampler="sign")
    assert "sampler.scores" in student.state_dict() and "sampler.logits" not in student.state_dict()
    header = {"method": "pdd", "model": {"type": "masked-resnet", "arch": "resnet-tiny", "sampler": "sign"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    with torch.no_grad():
        student.sampler.scores.normal_()
    save_checkpoint(tmp_path / "s.safetensors", student, header)
    loaded = core.load_model(tmp_path / "s.safetensors")
    assert isinstance(loaded.sampler, SignSampler)
    torch.testing.assert_close(loaded.sampler.scores, student.sampler.scores)
    with pytest.raises(ValueError, match="unknown mask sampler"):
        MaskedResNet("resnet-tiny", sampler="bernoulli")


def test_pdd_distils_a_resnet18_from_a_resnet_tiny_teacher_and_prunes_against_resnet18(tiny_benchmark, tmp_path):
    """The student's architecture differs from the teacher's; the cost is reported against the dense student."""
    tiny = dict(data="synthetic", image_size=32, batch_size=8, num_workers=0, max_train_samples=32, max_eval_samples=24)
    teacher = train(build_config(method="teacher", arch="resnet-tiny", epochs=1, runs_dir=str(tmp_path / "t"), **tiny),
                    progress=False).run_dir
    result = train(build_config(method="pdd", arch="resnet18", epochs=1, teacher=str(teacher), runs_dir=str(tmp_path / "s"),
                                method_options={"sampler_lr": 0.3}, **tiny), progress=False)
    student = core.load_model(result.run_dir)
    header = student.header
    assert header["model"] == {"type": "masked-resnet", "arch": "resnet18", "sampler": "sign"}
    dense = profile_model(build_model("resnet18"), 32)
    pruning = header["pruning"]
    assert pruning["teacher_params"] == dense["params"] and pruning["teacher_macs"] == dense["macs"]
    assert len(pruning["active_filters"]) == 16 and sum(pruning["active_filters"]) < sum(pruning["channels"]), \
        "a large mask lr flips some scores below zero within one epoch"
    from core.pruning.surgery import compact_of

    compact, compact_header = compact_of(student)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compact(images), student(images), atol=1e-4, rtol=0)
    assert profile_model(compact, 32)["macs"] == pytest.approx(pruning["compact_macs"], rel=1e-6)
    with pytest.raises(ValueError, match="student_init teacher needs a resnet18 teacher"):
        train(build_config(method="pdd", arch="resnet18", epochs=1, teacher=str(teacher), runs_dir=str(tmp_path / "x"),
                           method_options={"student_init": "teacher"}, **tiny), progress=False)
