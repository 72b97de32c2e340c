"""Two-in-one distillation: the frequency transform, the dual-branch teacher, the projectors and feature loss,
the gradient-homogenisation rule (known gradients), and tiny end-to-end runs (every mode, a compact start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import thop
import torch
from torch import nn

import core
from core.config import TrainConfig, build_config
from core.data.frequency import block_dct, frequency_representation
from core.methods.two_in_one import (
    MODES,
    TwoInOneOptions,
    TwoInOneStudent,
    feature_distance,
    homogenised,
    route_feature_gradients,
)
from core.models import build_model
from core.pruning.flops import profile_model
from core.runs import Run
from core.training.engine import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(data="synthetic", image_size=32, batch_size=16, num_workers=0, epochs=1, max_train_samples=32, max_eval_samples=16)


def _cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the frequency representation ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 16, 24), (1, 2, 12, 20)])  # the second ends in 4x4 / 4-wide partial blocks
def test_block_dct_is_scipy_dctn_ortho_on_every_block(shape):
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    coefficients = block_dct(images).numpy()
    pixels = images.numpy()
    for top in range(0, shape[-2], 8):
        for left in range(0, shape[-1], 8):
            tile = pixels[..., top:top + 8, left:left + 8]
            expected = scipy.fft.dctn(tile, axes=(-2, -1), norm="ortho")
            np.testing.assert_allclose(coefficients[..., top:top + 8, left:left + 8], expected, atol=1e-5, rtol=0)
    # orthonormal: the energy of every channel is kept
    np.testing.assert_allclose((coefficients**2).sum(axis=(-2, -1)), (pixels**2).sum(axis=(-2, -1)), rtol=1e-5)


def _standardised(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1)
    mean, std = flat.mean(1), flat.std(1)
    return (values - mean[:, None, None, None]) / (std[:, None, None, None] + 1e-6)


def test_frequency_representation_is_the_standardised_log_magnitude():
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pixels = images.numpy().astype(np.float64)
    dct = np.zeros_like(pixels)
    for top in range(0, 16, 8):
        for left in range(0, 16, 8):
            dct[..., top:top + 8, left:left + 8] = scipy.fft.dctn(pixels[..., top:top + 8, left:left + 8], axes=(-2, -1),
                                                                   norm="ortho")
    np.testing.assert_allclose(frequency_representation(images, "dct").numpy(), _standardised(np.log1p(np.abs(dct))),
                               atol=1e-5, rtol=0)
    spectrum = np.fft.fftshift(np.fft.fft2(pixels), axes=(-2, -1))
    np.testing.assert_allclose(frequency_representation(images, "fft").numpy(), _standardised(np.log1p(np.abs(spectrum))),
                               atol=1e-5, rtol=0)
    assert frequency_representation(torch.zeros(1, 3, 8, 8)).abs().max() == 0, "a constant spectrum stays finite (zeros)"
    with pytest.raises(ValueError, match="unknown frequency representation"):
        frequency_representation(images, "wavelet")


# --- the dual-branch teacher ---------------------------------------------------------------------


def test_dual_teacher_fuses_its_branches_and_profiles_like_thop():
    torch.manual_seed(0)
    model = build_model("dual_resnet_tiny").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, spatial, frequency = model.forward_branches(images)
        assert spatial.shape == frequency.shape == (3, 512) and model.feature_widths == (512, 512)
        torch.testing.assert_close(spatial, model.spatial(images))
        torch.testing.assert_close(frequency, model.frequency(frequency_representation(images)))
        torch.testing.assert_close(logits, model.fc(torch.cat([spatial, frequency], 1)).reshape(-1))
        torch.testing.assert_close(model(images), logits.reshape(-1, 1))
    assert not any("to_frequency" in key for key in model.state_dict()), "the DCT is a constant, not checkpoint state"
    for arch, size in (("dual_resnet_tiny", 32), ("dual_resnet18", 64)):
        network = build_model(arch)
        macs, params = thop.profile(network, inputs=(torch.zeros(1, 3, size, size),), verbose=False)
        cost = profile_model(network, size)
        assert (cost["macs"], cost["params"]) == (int(macs), int(params)), "the DCT's matrix products counted as thop does"
    single = profile_model(build_model("resnet18"), 64)
    dual = profile_model(build_model("dual_resnet18"), 64)
    # two branches without their heads, one head on 1024 features (2 x 512 MACs), and the DCT
    assert dual["macs"] - 2 * single["macs"] == 3 * 64 * 64 * (64 + 64)


def test_grad_cam_explains_a_dual_teacher_at_its_spatial_branch():
    from core.evaluation.attribution import grad_cam

    torch.manual_seed(0)
    model = build_model("dual_resnet_tiny").eval()
    heatmap = grad_cam(model, torch.randn(3, 32, 32))
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert grad_cam(model, torch.randn(3, 32, 32), layer="frequency.layer3").shape == (32, 32)


# --- projectors and the feature loss ------------------------------------------------------------


def _student(mode: str, hidden: int = 16, lambda_feature: float = 1.0) -> TwoInOneStudent:
    torch.manual_seed(0)
    return TwoInOneStudent(build_model("resnet-tiny"), build_model("dual_resnet_tiny"),
                           TwoInOneOptions(mode=mode, projector_hidden=hidden, lambda_feature=lambda_feature))


def _distance_by_hand(projected: torch.Tensor, target: torch.Tensor) -> float:
    p, t = projected.detach().double().numpy(), target.double().numpy()
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return float(((p - t) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("mode", MODES)
def test_projectors_map_the_student_width_to_each_branch_and_the_loss_is_the_normalised_distance(mode):
    model = _student(mode)
    shapes = {name: (head[0].in_features, head[0].out_features, head[2].out_features) for name, head in model.projectors.items()}
    expected = {"spatial": {"spatial": (512, 16, 512)}, "naive": {"joint": (512, 16, 1024)}}.get(
        mode, {"spatial": (512, 16, 512), "frequency": (512, 16, 512)})
    assert shapes == expected
    features = torch.randn(4, 512)
    targets = {"spatial": torch.randn(4, 512), "frequency": torch.randn(4, 512) + 1}
    losses = model.branch_losses(features, targets)
    assert set(losses) == ({"spatial"} if mode == "spatial" else {"spatial", "frequency"})
    if mode == "naive":  # one projector, its output's halves against the two branches
        output = model.projectors["joint"](features)
        projected = {"spatial": output[:, :512], "frequency": output[:, 512:]}
    else:
        projected = {name: model.projectors[name](features) for name in losses}
    for name, loss in losses.items():
        assert float(loss.detach()) == pytest.approx(_distance_by_hand(projected[name], targets[name]), abs=1e-6)
    same = torch.randn(4, 8)
    assert float(feature_distance(3 * same, same)) == pytest.approx(0, abs=1e-6)  # scale-free: 2 - 2 cos
    assert float(feature_distance(-same, same)) == pytest.approx(4, abs=1e-5)


def test_no_projectors_without_feature_distillation():
    model = _student("two-in-one", lambda_feature=0)
    assert len(model.projectors) == 0
    loss, terms = model(torch.randn(2, 3, 32, 32), torch.tensor([0.0, 1.0]))
    assert set(terms) == {"bce", "kd"}


# --- gradient homogenisation -------------------------------------------------------------------------


def test_homogenised_gradients_share_the_mean_norm():
    small, large = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, -45.0]])  # norms 5 and 45: the mean is 25
    combined = homogenised([small, large])
    torch.testing.assert_close(combined, 25 * small / 5 + 25 * large / 45)
    torch.testing.assert_close(homogenised([small, torch.zeros(1, 2)]), small), "a zero gradient stays zero, the other keeps its norm"
    assert homogenised([torch.zeros(2, 2), torch.zeros(2, 2)]).abs().max() == 0


@pytest.mark.parametrize("homogenise", [True, False])
def test_backbone_gets_the_homogenised_gradient_and_projectors_their_own(homogenise):
    """A linear backbone ``f = x W^T`` and two linear "projectors" with losses ``L_b = sum(P_b(h) * c_b)``:

    ``dL_b/dh = c_b P_b`` (known), ``dL_b/dP_b = c_b^T f`` (unscaled), and the backbone's gradient is
    ``dL/dW = g^T x`` with ``g`` the homogenised (or summed) feature gradient.
    """
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    backbone = nn.Linear(3, 4, bias=False)
    spatial, frequency = nn.Linear(4, 2, bias=False), nn.Linear(4, 6, bias=False)
    c_spatial, c_frequency = torch.randn(5, 2), 10 * torch.randn(5, 6)  # very different gradient norms
    features = backbone(x)

    def losses(h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"spatial": (spatial(h) * c_spatial).sum(), "frequency": (frequency(h) * c_frequency).sum()}

    total, terms = route_feature_gradients(features, losses, homogenise)
    expected_value = sum(losses(features.detach()).values())
    torch.testing.assert_close(total, expected_value)  # the surrogate adds nothing to the value
    total.backward()

    g_spatial, g_frequency = c_spatial @ spatial.weight.detach(), c_frequency @ frequency.weight.detach()
    n_spatial, n_frequency = g_spatial.norm(), g_frequency.norm()
    assert float(terms["grad_norm_spatial"]) == pytest.approx(float(n_spatial), rel=1e-6)
    assert float(terms["grad_norm_frequency"]) == pytest.approx(float(n_frequency), rel=1e-6)
    assert n_frequency > 5 * n_spatial
    if homogenise:
        target = (n_spatial + n_frequency) / 2
        routed = target * g_spatial / n_spatial + target * g_frequency / n_frequency
    else:
        routed = g_spatial + g_frequency
    torch.testing.assert_close(backbone.weight.grad, routed.T @ x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spatial.weight.grad, c_spatial.T @ features.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frequency.weight.grad, c_frequency.T @ features.detach(), rtol=1e-5, atol=1e-5)


def test_the_student_loss_logs_both_gradient_norms_and_trains_every_part():
    model = _student("two-in-one")
    model.train()
    loss, terms = model(torch.randn(4, 3, 32, 32), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert {"bce", "kd", "feature_spatial", "feature_frequency", "grad_norm_spatial", "grad_norm_frequency"} == set(terms)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "student and both projectors"
    assert all(p.grad is None for p in model.teacher.parameters()) and len(list(model.teacher.parameters())) > 0
    assert not any(key.startswith(("_teacher", "teacher")) for key in model.state_dict())


# --- end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_root(tiny_benchmark, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("two-in-one-runs")


@pytest.fixture(scope="module")
def dual_teacher(runs_root) -> Path:
    return train(build_config(method="teacher", arch="dual_resnet_tiny", runs_dir=str(runs_root), **TINY), progress=False).run_dir


@pytest.fixture(scope="module")
def mode_sweep(dual_teacher, runs_root) -> dict:
    """One CLI call: a resnet-tiny student per mode (the ablation), 1 epoch each."""
    return _cli("train", "--method", "two-in-one", "--data", "synthetic", "--arch", "resnet-tiny", "--teacher", str(dual_teacher),
                "--sweep", "mode=" + ",".join(MODES), "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                "--num-workers", "0", "--max-train-samples", "32", "--max-eval-samples", "16", "--projector-hidden", "32",
                "--lambda-feature", "2", "--runs-dir", str(runs_root))


def test_every_mode_trains_a_student_that_loads_evaluates_and_exports(mode_sweep, dual_teacher, tmp_path):
    from core.deploy.export import export

    runs = mode_sweep["runs"]
    assert len(runs) == len(MODES)
    for run_dir, mode in zip(runs, MODES, strict=True):
        student = core.load_model(run_dir)
        header = student.header
        assert header["method"] == "two-in-one" and header["model"] == {"type": "resnet", "arch": "resnet-tiny"}
        assert header["two_in_one"]["mode"] == mode and header["two_in_one"]["teacher_arch"] == "dual_resnet_tiny"
        assert header["two_in_one"]["lambda_feature"] == 2 and header["teacher"] == str(dual_teacher)
        assert header["params"] == profile_model(build_model("resnet-tiny"), 32)["params"], "the checkpoint is the student alone"
        step = Run(Path(run_dir)).metrics("step")[0]
        expected = {"grad_norm_spatial"} | ({"grad_norm_frequency", "feature_frequency"} if mode != "spatial" else set())
        assert expected <= set(step) and (mode != "spatial" or "feature_frequency" not in step)
        assert "test_accuracy" in header["metrics"]
        result = export(run_dir, "pt", tmp_path / f"{mode}.pt")
        assert result["max_abs_diff"] <= 1e-4
    evaluation = _cli("evaluate", runs[-1], "--data", "synthetic")
    assert evaluation["n"] == 60 and 0 <= evaluation["accuracy"] <= 1


def test_the_sweep_is_reported_as_an_ablation(mode_sweep, tmp_path):
    from core.evaluation.report import build_report

    result = build_report(mode_sweep["runs"], tmp_path / "report", latency=False, progress=False, png=False)
    text = Path(result["tables"]["ablation"]).read_text()
    assert "mode" in text and all(mode in text for mode in MODES)


def test_a_compact_student_is_a_start_and_keeps_its_pruning_record(dual_teacher, tmp_path):
    from core.checkpoint import save_checkpoint
    from core.deploy.export import export
    from core.models.masked import MaskedResNet

    torch.manual_seed(0)
    masked = MaskedResNet("resnet-tiny")
    with torch.no_grad():  # keep logit 1 everywhere, every other filter dropped
        masked.sampler.logits[:, 1] = 1.0
        masked.sampler.logits[::2, 0] = 2.0
    active = masked.active_filters()
    pruning = {"active_filters": active, "compact_params": 1, "compact_macs": 2, "params_reduction": 0.5, "macs_reduction": 0.5}
    header = {"method": "pearson", "model": {"type": "masked-resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "pruning": pruning}
    save_checkpoint(tmp_path / "masked.safetensors", masked, header)

    config = build_config(method="two-in-one", arch="resnet18", teacher=str(dual_teacher), runs_dir=str(tmp_path / "runs"),
                          method_options={"projector_hidden": 32}, **TINY)
    config.init_checkpoint = str(tmp_path / "masked.safetensors")
    result = train(config, progress=False)
    student = core.load_model(result.run_dir)
    assert student.header["model"] == {"type": "compact-resnet", "arch": "resnet-tiny", "active_filters": active}
    assert student.header["config"]["arch"] == "resnet-tiny", "the architecture comes from the start checkpoint"
    assert student.header["pruning"] == pruning and student.header["init_from"] == config.init_checkpoint
    assert student.header["two_in_one"]["student_start"] == config.init_checkpoint
    assert export(result.run_dir, "pt", tmp_path / "compact.pt")["max_abs_diff"] <= 1e-4


def test_two_in_one_needs_a_dual_teacher_and_a_single_branch_student(dual_teacher, tmp_path):
    from core.checkpoint import save_checkpoint
    from core.methods.two_in_one import TwoInOneMethod

    def check(config: TrainConfig) -> None:  # a method object per run, its options checked as it is made
        TwoInOneMethod(config).check(config)

    with pytest.raises(ValueError, match="--arch dual_resnet18 --data synthetic"):
        check(TrainConfig(method="two-in-one", arch="resnet18", data="synthetic"))  # none shipped for pooled synthetic
    single = tmp_path / "single.safetensors"
    save_checkpoint(single, build_model("resnet-tiny"), {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"},
                                                         "image_size": 32, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    with pytest.raises(ValueError, match="needs a dual-branch teacher"):
        check(TrainConfig(method="two-in-one", arch="resnet18", teacher=str(single)))
    with pytest.raises(ValueError, match="single-branch ResNet"):
        check(TrainConfig(method="two-in-one", arch="dual_resnet18", teacher=str(dual_teacher)))
    with pytest.raises(ValueError, match="single-branch ResNet"):
        check(TrainConfig(method="two-in-one", arch="mesonet", teacher=str(dual_teacher)))
    with pytest.raises(ValueError, match="single-branch ResNet"):
        check(TrainConfig(method="two-in-one", teacher=str(dual_teacher), init_checkpoint=str(dual_teacher)))
    with pytest.raises(ValueError, match="mode must be one of"):
        check(TrainConfig(method="two-in-one", arch="resnet18", teacher=str(dual_teacher),
                                 method_options={"mode": "both"}))
    config = TrainConfig(method="two-in-one", arch="resnet18", teacher=str(dual_teacher))
    check(config)
    assert config.arch == "resnet18"


def test_the_shipped_dual_teacher_is_the_default_on_faceswap():
    from core.methods.two_in_one import TwoInOneMethod

    config = build_config(method="two-in-one", preset="full", data="synthetic:faceswap")
    TwoInOneMethod(config).check(config)
    teacher = core.load_model(config.teacher)
    assert Path(config.teacher).name == "teacher-dual_resnet18-synthetic-faceswap.safetensors"
    assert teacher.header["model"] == {"type": "resnet", "arch": "dual_resnet18"} and teacher.header["image_size"] == 64
    assert (config.arch, config.epochs, config.method_options["mode"]) == ("resnet18", 15, "two-in-one")


# --- the Embeddings page's branch views ------------------------------------------------------------------


def test_branch_embeddings_of_a_dual_teacher(dual_teacher, monkeypatch):
    from core.data.datasets import resolve_dataset
    from core.evaluation import inspect

    teacher = core.load_model(dual_teacher)
    assert inspect.feature_views(teacher.header) == ["spatial", "frequency"]
    assert inspect.feature_views({"model": {"type": "resnet", "arch": "resnet50"}}) == [None]
    samples = resolve_dataset("synthetic").split("test")[:10]
    spatial, indices = inspect.penultimate_features(teacher, samples, batch_size=4, progress=False, branch="spatial")
    frequency, _ = inspect.penultimate_features(teacher, samples, batch_size=4, progress=False, branch="frequency")
    fused, _ = inspect.penultimate_features(teacher, samples, batch_size=4, progress=False)
    batch = torch.stack([teacher.preprocess(core.data.images.load_image(s.path)) for s in samples])
    with torch.no_grad():
        _, expected_spatial, expected_frequency = teacher.forward_branches(batch)
    np.testing.assert_allclose(spatial, expected_spatial.numpy(), atol=1e-5)
    np.testing.assert_allclose(frequency, expected_frequency.numpy(), atol=1e-5)
    np.testing.assert_allclose(fused, np.concatenate([spatial, frequency], axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="only a dual-branch teacher has branches"):
        inspect.penultimate_features(build_model("resnet-tiny"), samples, branch="spatial")

    calls = []
    monkeypatch.setattr(inspect, "umap_embedding", lambda features, seed=0: calls.append(features.shape) or features[:, :2])
    for branch in ("spatial", "frequency", "spatial"):
        inspect.embedding(dual_teacher, samples, progress=False, branch=branch)
    assert calls == [(10, 512), (10, 512)], "one cache entry per branch"


def test_embeddings_page_shows_both_branches_next_to_the_student(mode_sweep, dual_teacher, runs_root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.evaluation import inspect

    monkeypatch.setattr(inspect, "umap_embedding", lambda features, seed=0: features[:, :2])  # the dashboard tests run the real one
    monkeypatch.setenv("CORE_RUNS_DIR", str(runs_root))
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180).run()
    app.switch_page("views/embeddings.py").run()
    picked = [f"run: {Path(dual_teacher).name}", f"run: {Path(mode_sweep['runs'][-1]).name}"]  # the two-in-one student
    app.multiselect(key="embeddings_pick").set_value(picked).run()
    assert not app.exception
    specs = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert len(specs) == 3 and len(app.metric) == 3
    assert "spatial branch" in specs[0] and "frequency branch" in specs[1] and "branch" not in specs[2]


def test_sidebar_offers_the_modes_the_start_and_only_dual_teachers(dual_teacher, runs_root, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CORE_RUNS_DIR", str(runs_root))
    st.cache_data.clear()  # an earlier test in this process may have cached runs_root's listing before the dual teacher
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    app.sidebar.selectbox(key="launch_method").set_value("two-in-one").run()
    assert not app.exception
    mode = app.sidebar.selectbox(key="launch_mode")
    assert mode.options == list(MODES) and mode.value == "two-in-one"
    assert app.sidebar.selectbox(key="launch_arch").value == "resnet18"
    teachers = app.sidebar.selectbox(key="launch_teacher").options
    assert any(name.startswith(f"run: {Path(dual_teacher).name} (dense dual_resnet_tiny") for name in teachers)
    assert not any("teacher-resnet50" in name for name in teachers)
    starts = app.sidebar.selectbox(key="launch_student_init").options
    assert any("student-pearson" in name for name in starts) and not any("teacher" in name for name in starts)
    assert "lambda-feature" in {key.removeprefix("launch_") for key in (w.key for w in app.sidebar.number_input)}
    app.sidebar.selectbox(key="launch_method").set_value("teacher").run()
    assert "dual_resnet18" in app.sidebar.selectbox(key="launch_arch").options
