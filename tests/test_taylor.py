"""Taylor pruning of EfficientNet-Lite0: the architecture, the importance maths, the pruned checkpoint
(parity, profile, listings), the iterative driver, and the engine's warm-up cosine and early stopping (on validation
accuracy or loss)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import thop
import torch
from torch import nn
from torch.nn import functional as F

import core
from core.checkpoint import save_checkpoint
from core.config import TrainConfig, build_config
from core.methods.distillation import kd_loss
from core.methods.taylor import PrunedStudent, TaylorOptions
from core.models import build_model
from core.models.shapes import layer_shapes
from core.pruning.flops import profile_model
from core.pruning.structured import taylor_prune, tie_broken_taylor_importance
from core.runs import Run
from core.training.drivers import prune_iteratively
from core.training.engine import make_scheduler, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(data="synthetic", image_size=32, batch_size=16, num_workers=0, epochs=1, max_train_samples=32, max_eval_samples=16)


def _cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pruning_steps(tiny_benchmark, tmp_path_factory) -> tuple[Path, list]:
    """A dense Lite0 (1 epoch), then two Taylor steps distilling from it (it is its own teacher here, to save a run)."""
    runs = str(tmp_path_factory.mktemp("taylor"))
    dense = train(build_config(method="teacher", arch="efficientnet_lite0", runs_dir=runs, **TINY), progress=False).run_dir
    config = build_config(method="taylor", teacher=str(dense), runs_dir=runs, **TINY,
                          method_options={"prune_ratio": 0.5, "steps": 2, "taylor_batches": 1, "alpha": 0.5})
    config.init_checkpoint = str(dense)
    return dense, prune_iteratively(config, progress=False)


def test_lite0_is_b0_without_squeeze_excitation_and_silu():
    from torchvision.ops.misc import SqueezeExcitation

    b0, lite = build_model("efficientnet_b0"), build_model("efficientnet_lite0")
    kinds = {type(m) for m in lite.modules()}
    assert SqueezeExcitation not in kinds and nn.SiLU not in kinds and nn.ReLU6 in kinds
    se_keys = {f"{name}.{key}" for name, m in b0.named_modules() if isinstance(m, SqueezeExcitation) for key in m.state_dict()}
    b0_state, lite_state = b0.state_dict(), lite.state_dict()
    assert se_keys and set(lite_state) == set(b0_state) - se_keys
    assert all(lite_state[k].shape == b0_state[k].shape for k in lite_state)


def _two_convs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1, bias=False),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))


def test_taylor_importance_is_the_group_mean_of_weight_times_gradient():
    import torch_pruning as tp

    model = _two_convs()
    images, labels = torch.randn(8, 3, 6, 6), torch.randint(0, 2, (8,)).float()
    F.binary_cross_entropy_with_logits(model(images).reshape(-1), labels).backward()
    conv1, conv2 = model[0], model[2]
    # channel c of conv1 owns its filter conv1.weight[c] and the input slice conv2.weight[:, c]
    own = (conv1.weight * conv1.weight.grad).abs().sum(dim=(1, 2, 3))
    consumer = (conv2.weight * conv2.weight.grad).abs().sum(dim=(0, 2, 3))
    by_hand = (own + consumer) / 2
    by_hand = by_hand / by_hand.mean()  # TaylorImportance's default group mean and mean normalisation
    graph = tp.DependencyGraph().build_dependency(model, images[:1])
    group = graph.get_pruning_group(conv1, tp.prune_conv_out_channels, idxs=list(range(4)))
    torch.testing.assert_close(tp.importance.TaylorImportance()(group), by_hand.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tie_broken_taylor_importance()(group), by_hand.detach(), atol=1e-6, rtol=1e-6)  # what we rank by

    # local pruning of a quarter removes exactly the least important channel of conv1
    kept = [c for c in range(4) if c != int(by_hand.argmin())]
    expected = conv1.weight.detach()[kept].clone()
    fresh = _two_convs()
    taylor_prune(fresh, [(images, labels)], lambda x, y: F.binary_cross_entropy_with_logits(fresh(x).reshape(-1), y), 0.25, False)
    assert fresh[0].out_channels == 3 and fresh[2].in_channels == 3
    torch.testing.assert_close(fresh[0].weight.detach(), expected)


def test_loss_is_pure_kd_at_alpha_one_and_pure_bce_at_alpha_zero():
    torch.manual_seed(0)
    student, teacher = _two_convs(), _two_convs()
    with torch.no_grad():
        teacher[-1].bias.add_(1.0)
    images, labels = torch.randn(4, 3, 6, 6), torch.tensor([0.0, 1.0, 1.0, 0.0])
    logits, teacher_logits = student(images).reshape(-1), teacher(images).reshape(-1)
    kd_only, terms = PrunedStudent(student, teacher, TaylorOptions(alpha=1.0, kd_temperature=2.0))(images, labels)
    assert torch.equal(kd_only, kd_loss(logits, teacher_logits, 2.0)) and set(terms) == {"bce", "kd"}
    bce_only, _ = PrunedStudent(student, teacher, TaylorOptions(alpha=0.0))(images, labels)
    assert torch.equal(bce_only, F.binary_cross_entropy_with_logits(logits, labels))
    mixed, _ = PrunedStudent(student, teacher, TaylorOptions(alpha=0.25, kd_temperature=2.0))(images, labels)
    torch.testing.assert_close(mixed, 0.25 * kd_only + 0.75 * bce_only)


def test_pruned_network_round_trips_through_its_spec(tmp_path):
    model = build_model("efficientnet_lite0")
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0.0, 1.0, 1.0, 0.0])
    taylor_prune(model, [(images, labels)], lambda x, y: F.binary_cross_entropy_with_logits(model(x).reshape(-1), y),
                 0.4, True, 0.9)
    model.eval()
    header = {"model": {"type": "pruned-net", "arch": "efficientnet_lite0", "shapes": layer_shapes(model)}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(tmp_path / "pruned.safetensors", model, header)
    loaded = core.load_model(tmp_path / "pruned.safetensors", serve=False)  # profiled as trained: BatchNorms counted
    with torch.no_grad():
        assert (loaded(images) - model(images)).abs().max() <= 1e-5
    assert profile_model(loaded, 32) == profile_model(model, 32)


def test_iterative_steps_prune_monotonically_and_are_listed(pruning_steps):
    from core.catalog import run_rows

    dense, (first, second) = pruning_steps
    params = [core.load_model(path).header["params"] for path in (dense, first.run_dir, second.run_dir)]
    assert params[0] > params[1] > params[2]
    headers = [core.load_model(r.run_dir).header for r in (first, second)]
    assert [h["structured_pruning"]["step"] for h in headers] == [1, 2]
    assert headers[0]["pruned_from"] == str(dense) and headers[1]["pruned_from"] == str(first.checkpoint)
    record = headers[1]["structured_pruning"]
    assert record["compact_params"] == params[2] and record["dense_params"] == profile_model(build_model("efficientnet_lite0"),
                                                                                               32)["params"]
    assert record["channel_ratio"] == pytest.approx(0.5, abs=0.01)  # R = 0.5 of the prunable channels after both steps
    assert record["prune_ratio"] == pytest.approx(1 - params[2] / record["dense_params"])
    assert {"bce", "kd"} <= set(Run(second.run_dir).metrics("step")[0])
    (row,) = [r for r in run_rows(second.run_dir.parent) if r["path"] == str(second.run_dir)]
    assert row["params_m"] == round(params[2] / 1e6, 2) and row["params_reduction"] == round(record["params_reduction"], 4)


def test_pruned_checkpoint_passes_parity_and_profile(pruning_steps, tmp_path):
    _, (_, second) = pruning_steps
    for fmt in ("pt", "onnx"):
        result = _cli("export", str(second.run_dir), "--format", fmt, "--out", str(tmp_path / f"pruned.{fmt}"))
        assert result["kind"] == "pruned-net" and result["max_abs_diff"] <= 1e-5
    profile = _cli("profile", str(second.run_dir))
    loaded = core.load_model(second.run_dir, serve=False)
    assert (profile["params"], profile["macs"]) == (result["params"], result["macs"])
    assert {k: profile[k] for k in ("params", "macs")} == {k: profile_model(loaded, 32)[k] for k in ("params", "macs")}
    macs, params = thop.profile(core.load_model(second.run_dir, serve=False), inputs=(torch.zeros(1, 3, 32, 32),), verbose=False)
    assert (profile["params"], profile["macs"]) == (int(params), int(macs))
    header = loaded.header["structured_pruning"]
    assert profile["kind"] == "pruned-net" and profile["macs_reduction"] == pytest.approx(header["macs_reduction"])


def test_taylor_needs_a_starting_network_and_a_teacher(pruning_steps):
    from core.methods.taylor import TaylorMethod

    dense, _ = pruning_steps
    with pytest.raises(ValueError, match="--init-checkpoint"):
        config = TrainConfig(method="taylor")
        TaylorMethod(config).check(config)
    with pytest.raises(ValueError, match="--teacher"):
        config = TrainConfig(method="taylor", init_checkpoint=str(dense))
        TaylorMethod(config).check(config)
    config = TrainConfig(method="taylor", init_checkpoint=str(dense), method_options={"alpha": 0})
    TaylorMethod(config).check(config)  # pure BCE needs no teacher; the architecture comes from the checkpoint
    assert config.arch == "efficientnet_lite0"


def test_taylor_defaults_to_the_shipped_lite0_and_b0_of_its_dataset():
    from core.methods.taylor import TaylorMethod

    config = TrainConfig(method="taylor", data="synthetic:faceswap")
    TaylorMethod(config).check(config)
    start, teacher = core.load_model(config.init_checkpoint).header, core.load_model(config.teacher).header
    assert (start["model"]["arch"], teacher["model"]["arch"]) == ("efficientnet_lite0", "efficientnet_b0")
    assert start["config"]["data"] == teacher["config"]["data"] == "synthetic:faceswap" and config.arch == "efficientnet_lite0"


def test_warmup_cosine_schedule_values():
    config = TrainConfig(scheduler="warmup-cosine", warmup_epochs=2, epochs=6, lr=1.0)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = make_scheduler(config, optimizer)
    lrs = []
    for _ in range(config.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    cosine = TrainConfig(scheduler="cosine", epochs=6, lr=1.0)  # no warm-up: exactly CosineAnnealingLR
    reference = make_scheduler(cosine, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0))
    ours = make_scheduler(TrainConfig(scheduler="warmup-cosine", epochs=6, lr=1.0),
                          torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0))
    for _ in range(6):
        assert ours.get_last_lr() == pytest.approx(reference.get_last_lr(), abs=1e-12)
        ours.optimizer.step(), reference.optimizer.step()
        ours.step(), reference.step()


def test_early_stopping_stops_and_still_tests(tiny_benchmark, tmp_path, monkeypatch):
    import core.training.engine as engine

    real = engine.classification_metrics
    monkeypatch.setattr(engine, "classification_metrics", lambda *a, **k: {**real(*a, **k), "accuracy": 0.5})  # never improves
    config = build_config(method="teacher", arch="resnet-tiny", runs_dir=str(tmp_path), early_stopping_patience=2,
                          **{**TINY, "epochs": 6})
    result = train(config, progress=False)
    run = Run(result.run_dir)
    assert result.stopped_early == 3 and len(run.metrics("epoch")) == 3  # best at epoch 1, then 2 epochs without a gain
    assert run.status()["status"] == "finished" and run.status()["stopped_early"] == 3
    assert run.metrics("test")[0]["stopped_early"] == 3
    header = core.load_model(result.run_dir).header
    assert header["metrics"]["epoch"] == 1 and "test_accuracy" in header["metrics"] and run.last_checkpoint.is_file()


def test_early_stopping_on_validation_loss_counts_across_a_resume(tiny_benchmark, tmp_path, monkeypatch):
    """``early_stopping_metric: loss`` (the NTU report's): the patience counts epochs without a lower validation loss,
    the best loss and the count live in the trainer state (a run killed mid-way and resumed stops where the whole run
    would), and the best checkpoint stays the best validation accuracy's."""
    import core.training.engine as engine

    # validation loss lower at epochs 1 and 2, not at 3 and 4 (patience 2: stop after 4); accuracy best at epoch 3
    script = {"loss": iter([1.0, 0.8, 0.9, 0.85, 0.7, 0.6]), "accuracy": iter([0.5, 0.6, 0.7, 0.4, 0.4, 0.4])}
    validations, validating = [], []  # every validation; the one whose metrics come next
    real_predict, real_metrics = engine.predict, engine.classification_metrics

    def scripted_predict(*args, **kwargs):
        result = real_predict(*args, **kwargs)
        if kwargs.get("desc") == "validate":
            validations.append(True)
            if len(validations) == 4:  # killed after epoch 3's trainer state, in epoch 4's validation
                raise RuntimeError("killed")
            validating.append(True)
            result.loss = next(script["loss"])
        return result

    def scripted_metrics(*args, **kwargs):
        metrics = real_metrics(*args, **kwargs)
        return {**metrics, "accuracy": next(script["accuracy"])} if validating and validating.pop() else metrics

    monkeypatch.setattr(engine, "predict", scripted_predict)
    monkeypatch.setattr(engine, "classification_metrics", scripted_metrics)
    config = build_config(method="teacher", arch="resnet-tiny", runs_dir=str(tmp_path), early_stopping_patience=2,
                          early_stopping_metric="loss", **{**TINY, "epochs": 6})
    with pytest.raises(RuntimeError, match="killed"):
        train(config, progress=False)
    (run_dir,) = [path for path in tmp_path.iterdir() if (path / "config.json").is_file()]
    result = train(resume=run_dir, progress=False)
    run = Run(result.run_dir)
    assert [e["val_loss"] for e in run.metrics("epoch")] == [1.0, 0.8, 0.9, 0.85] and result.stopped_early == 4
    assert core.load_model(result.run_dir).header["metrics"]["epoch"] == 3  # the best accuracy (0.7), not the best loss
    assert "no better validation loss for 2 epochs" in (run_dir / "log.txt").read_text()


def test_ntu_protocol_at_full_scale_runs_the_reports_settings_on_lite0_and_b0():
    """``reproduce ntu-taylor --scale full``: the dense B0 and Lite0 with the report's dense training, the B0
    fine-tuned into the teacher, then the Taylor steps (20 epochs each) at 224 px, batch 32; every stage's resolved
    config names the network it runs."""
    from core.training import protocols

    plan = protocols.plan("ntu-taylor", "synthetic:faceswap", scale="full", seeds=[0])
    assert [[s.key for s in wave] for wave in protocols.waves(plan.stages)] == [
        ["dense/efficientnet_b0", "dense"], ["teacher"], ["search/taylor-iterative/0", "search/taylor-one-shot/0"]]
    configs = {s.key: s.config for s in plan.stages}
    assert {key: config["arch"] for key, config in configs.items()} == {
        "dense/efficientnet_b0": "efficientnet_b0", "dense": "efficientnet_lite0", "teacher": "efficientnet_b0",
        "search/taylor-iterative/0": "efficientnet_lite0", "search/taylor-one-shot/0": "efficientnet_lite0"}
    assert all((c["image_size"], c["batch_size"]) == (224, 32) for c in configs.values())
    dense_settings = ("sgd", 0.0005, 1e-5, "warmup-cosine", 5)
    for key in ("dense/efficientnet_b0", "dense"):
        config = configs[key]
        assert (config["optimizer"], config["lr"], config["weight_decay"], config["scheduler"],
                config["early_stopping_patience"]) == dense_settings
    finetune = ("adam", 0.0002, 1e-5, "none", 3, 20)
    for key in ("teacher", "search/taylor-iterative/0"):
        config = configs[key]
        assert (config["optimizer"], config["lr"], config["weight_decay"], config["scheduler"],
                config["early_stopping_patience"], config["epochs"]) == finetune
    assert configs["teacher"]["init_checkpoint"] == "<dense/efficientnet_b0 checkpoint>"
    assert configs["search/taylor-iterative/0"]["method_options"]["alpha"] == 0.25
    dense, tuned = (build_config(preset="ntu", method=method) for method in ("teacher", "taylor"))
    assert dense.warmup_epochs == 10 and dense.early_stopping_metric == tuned.early_stopping_metric == "loss"
    mini = protocols.plan("ntu-taylor", "synthetic:faceswap", scale="mini", seeds=[0])
    assert [s.key for s in mini.stages][:2] == ["teacher", "dense"] and all(s.given for s in mini.stages[:2])
    assert {s.config["image_size"] for s in mini.stages if s.stage == "search"} == {64}


def test_a_teacher_fine_tune_starts_from_every_weight_of_the_dense_run(pruning_steps):
    """``train --method teacher --init-checkpoint RUN`` (the NTU report's B0 fine-tune): the network starts as the
    run's, head included, not from ImageNet; a run of another architecture is refused."""
    from core.checkpoint import load_checkpoint
    from core.methods import create_method

    dense, _ = pruning_steps
    config = build_config(method="teacher", arch="efficientnet_lite0", pretrained="imagenet", init_checkpoint=str(dense),
                          **TINY)
    method = create_method(config)
    method.check(config)
    assert config.pretrained is None  # the run's weights replace the ImageNet ones (no download)
    state = method.build(config).state_dict()
    expected, _ = load_checkpoint(dense)
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match="teacher-method resnet18 run"):
        create_method(config).check(build_config(method="teacher", arch="resnet18", init_checkpoint=str(dense), **TINY))


def test_report_counts_taylor_reductions_against_the_dense_network(pruning_steps):
    from types import SimpleNamespace

    from core.evaluation.report import collect_entries, main_table

    _, (_, second) = pruning_steps
    (entry,) = collect_entries([second.run_dir])
    entry.evaluations[entry.trained_on] = SimpleNamespace(metrics=lambda: {"accuracy": 0.5})
    (row,) = main_table([entry], "test").to_dict("records")
    record = entry.header["structured_pruning"]
    assert row["params ↓"] == f"{100 * record['params_reduction']:.1f}%" != "0.0%"
    assert row["MACs ↓"] == f"{100 * record['macs_reduction']:.1f}%"
    assert row["compression (MACs)"] == f"{record['macs_reduction']:.3f}"
