"""Deployment: ONNX exports of every checkpoint kind (parity with PyTorch), the header in the ONNX metadata,
ONNX files as checkpoints (load, evaluate, profile, report), int8 static quantisation, the cached exports,
the ``onnx`` benchmark and the live-inference page running the exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

import core
from core.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from core.data.images import load_image
from core.deploy.export import export
from core.deploy.onnx import OnnxModel, StaticAdaptivePool, deployed_header, exportable
from core.deploy.quantize import calibration_samples
from core.models import build_model
from core.models.masked import MaskedResNet
from core.models.shapes import layer_shapes
from core.models.ticket import Ticket
from core.pruning.flops import profile_model
from core.pruning.magnitude import magnitude_masks
from core.pruning.structured import taylor_prune
from core.pruning.surgery import compact_from_masked

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
PARITY = 1e-4  # the acceptance bound for fp32 ONNX
BASE_HEADER = {"method": "teacher", "image_size": SIZE, "dataset": "synthetic:faceswap", "config": {"data": "synthetic:faceswap"},
               "normalization": {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]}, "metrics": {"test_accuracy": 0.5}}


def _cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _masked() -> MaskedResNet:
    """A resnet-tiny student whose eval masks keep a random ~60% of each layer's filters (at least one)."""
    torch.manual_seed(0)
    model = MaskedResNet("resnet-tiny").eval()
    logits = model.sampler.logits.data
    keep = torch.rand(logits.shape[0]) < 0.6
    logits[:, 0], logits[:, 1] = 0.0, torch.where(keep, 1.0, -1.0)
    return model


def _ticket() -> Ticket:
    """A MesoNet ticket at 80% sparsity (MesoNet's adaptive 8x8 pool at 32 px is the export's hard case)."""
    torch.manual_seed(0)
    ticket = Ticket("mesonet")
    weights = {name: parameter.detach() for name, parameter in ticket.net.named_parameters() if name in ticket.names}
    ticket.set_masks(magnitude_masks(weights, ticket.masks(), 0.8))
    return ticket.eval()


def _pruned_lite0() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0")
    images, labels = torch.randn(4, 3, SIZE, SIZE), torch.tensor([0.0, 1.0, 1.0, 0.0])
    taylor_prune(model, [(images, labels)], lambda x, y: F.binary_cross_entropy_with_logits(model(x).reshape(-1), y), 0.4, True, 0.9)
    return model.eval()


def _write(folder: Path, name: str, model: nn.Module, spec: dict, **extra) -> Path:
    path = folder / f"{name}.safetensors"
    cost = profile_model(model, SIZE)  # the engine records both
    save_checkpoint(path, model, {**BASE_HEADER, "model": spec, "params": cost["params"], "macs": cost["macs"], **extra})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One small checkpoint of every kind a checkpoint can hold, at 32 px, untrained."""
    folder = tmp_path_factory.mktemp("deploy-checkpoints")
    torch.manual_seed(0)
    masked = _masked()
    compact = compact_from_masked(masked)
    pruning = {"active_filters": compact.active_filters, "compact_params": 1, "kept": [[0, 1]] * 8, "keep_probability": [[0.5]] * 8}
    lite0 = _pruned_lite0()
    return {
        "resnet": _write(folder, "teacher", build_model("resnet-tiny").eval(), {"type": "resnet", "arch": "resnet-tiny"}),
        "mesonet": _write(folder, "mesonet", build_model("mesonet").eval(), {"type": "resnet", "arch": "mesonet"}),
        "masked-resnet": _write(folder, "masked", masked, {"type": "masked-resnet", "arch": "resnet-tiny"}, method="kdfs",
                                pruning=pruning, mask_history=[[1, 2, 3]]),
        "compact-resnet": _write(folder, "compact", compact, {"type": "compact-resnet", "arch": "resnet-tiny",
                                                              "active_filters": compact.active_filters}),
        "ticket": _write(folder, "ticket", _ticket(), {"type": "ticket", "arch": "mesonet"}, method="lth"),
        "pruned-net": _write(folder, "lite0", lite0, {"type": "pruned-net", "arch": "efficientnet_lite0",
                                                      "shapes": layer_shapes(lite0)}),
    }


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, dict]:
    """Every checkpoint exported to fp32 ONNX."""
    folder = tmp_path_factory.mktemp("deploy-onnx")
    return {kind: export(path, "onnx", folder / f"{kind}.onnx") for kind, path in checkpoints.items()}


# --------------------------------------------------------------------------- fp32 parity


DEPLOYED_KIND = {"resnet": "resnet", "mesonet": "resnet", "masked-resnet": "compact-resnet", "compact-resnet": "compact-resnet",
                 "ticket": "resnet", "pruned-net": "pruned-net"}


@pytest.mark.parametrize("kind", list(DEPLOYED_KIND))
def test_onnx_export_matches_pytorch_for_every_kind(kind, checkpoints, exported):
    result = exported[kind]
    assert result["kind"] == DEPLOYED_KIND[kind] and result["max_abs_diff"] <= PARITY
    assert {"path", "max_abs_diff", "params", "macs"} <= set(result)
    source, onnx_model = core.load_model(checkpoints[kind]), core.load_model(result["path"])
    assert isinstance(onnx_model, OnnxModel)
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))  # another batch size: the axis is dynamic
    with torch.no_grad():
        expected, actual = source(images), onnx_model(images)
    assert actual.shape == (3, 1) and actual.dtype == torch.float32
    assert (actual - expected).abs().max() <= PARITY


def test_ticket_exports_its_zero_filled_network(checkpoints, exported):
    ticket = core.load_model(checkpoints["ticket"])
    header = read_header(exported["ticket"]["path"])
    assert header["model"] == {"type": "resnet", "arch": "mesonet"} and header["compacted_from"] == "ticket"
    initializers = onnx.load(exported["ticket"]["path"]).graph.initializer
    zeros = sum(int((onnx.numpy_helper.to_array(t) == 0).sum()) for t in initializers)
    assert zeros >= ticket.counts()["prunable"] - ticket.counts()["surviving_prunable"]


@pytest.mark.parametrize(("pool", "size"), [(nn.AdaptiveMaxPool2d(8), (4, 4)), (nn.AdaptiveMaxPool2d((3, 5)), (7, 11)),
                                            (nn.AdaptiveAvgPool2d(3), (5, 7)), (nn.AdaptiveAvgPool2d((None, 2)), (5, 5))])
def test_static_adaptive_pool_equals_adaptive_pooling(pool, size):
    features = torch.randn(2, 3, *size)
    torch.testing.assert_close(StaticAdaptivePool(pool, size)(features), pool(features), atol=1e-6, rtol=0)


def test_exportable_replaces_only_the_pools_onnx_cannot_express():
    mesonet = build_model("mesonet").eval()
    assert any(isinstance(m, StaticAdaptivePool) for m in exportable(mesonet, 32).modules())  # 4x4 -> 8x8
    assert not any(isinstance(m, StaticAdaptivePool) for m in exportable(mesonet, 64).modules())  # 8x8 -> 8x8
    assert isinstance(mesonet.features[-1], nn.AdaptiveMaxPool2d), "the source model is left as it was"


# --------------------------------------------------------------------------- ONNX files as checkpoints


def test_header_round_trips_through_the_onnx_metadata(checkpoints, exported):
    source = read_header(checkpoints["masked-resnet"])
    stored = read_header(exported["masked-resnet"]["path"])
    deploy = stored.pop("deploy")
    assert deploy["precision"] == "fp32" and deploy["format"] == "onnx" and deploy["source"] == str(checkpoints["masked-resnet"])
    expected = {**deployed_header(source), "params": exported["masked-resnet"]["params"], "macs": exported["masked-resnet"]["macs"],
                "compacted_from": "masked-resnet"}
    assert stored["params"] < source["params"], "the compact network's count, not the masked model's"
    expected["model"] = {"type": "compact-resnet", "arch": "resnet-tiny", "active_filters": source["pruning"]["active_filters"]}
    assert stored == json.loads(json.dumps(expected))
    assert stored["model"]["type"] == "compact-resnet" and stored["pruning"]["active_filters"]
    assert "kept" not in stored["pruning"] and "mask_history" not in stored, "per-filter analysis records stay in the source"
    onnx_model = core.load_model(exported["masked-resnet"]["path"])
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8))
    torch.testing.assert_close(onnx_model.preprocess(picture), core.load_model(checkpoints["masked-resnet"]).preprocess(picture))


def test_onnx_checkpoint_evaluates_profiles_and_reports(checkpoints, exported, tiny_benchmark, tmp_path):
    from core.evaluation.evaluate import evaluate
    from core.evaluation.report import build_report

    path = exported["resnet"]["path"]
    source = evaluate(checkpoints["resnet"], "synthetic:faceswap", progress=False)
    first = evaluate(path, "synthetic:faceswap", progress=False)
    again = evaluate(path, "synthetic:faceswap", progress=False)
    assert not first.cached and again.cached, "predictions cached under the ONNX file's own SHA-256"
    np.testing.assert_allclose(first.predictions.probabilities, source.predictions.probabilities, atol=1e-5)
    profile = _cli("profile", path)
    assert (profile["params"], profile["macs"]) == (exported["resnet"]["params"], exported["resnet"]["macs"])
    assert profile["counted_from"] == "export header" and profile["precision"] == "fp32"
    report = build_report([checkpoints["resnet"], path], tmp_path / "report", progress=False, figures_wanted=False)
    main = (tmp_path / "report" / "main.md").read_text()
    assert "| teacher |" in main and "| teacher (ONNX fp32) |" in main, "an export is its own row, not a second seed"
    deployment = Path(report["tables"]["deployment"]).read_text()
    assert "resnet (ONNX fp32)" in deployment


def test_foreign_and_damaged_onnx_files_are_refused(tmp_path, exported):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(CheckpointError, match="without this project's header"):
        core.load_model(tmp_path / "plain.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        read_header(tmp_path / "garbage.onnx")
    with pytest.raises(CheckpointError, match="ONNX export holds a graph"):
        load_checkpoint(exported["resnet"]["path"])
    with pytest.raises(ValueError, match="already an ONNX export"):
        export(exported["resnet"]["path"], "onnx", tmp_path / "again.onnx")


# --------------------------------------------------------------------------- int8


def test_calibration_images_are_spread_evenly_and_deterministic(tiny_benchmark):
    from core.data.datasets import resolve_dataset

    train = resolve_dataset("synthetic:faceswap").split("train")
    picked = calibration_samples("synthetic:faceswap", images=10)
    assert picked == calibration_samples("synthetic:faceswap", images=10) and len(picked) == 10
    assert picked[0] == train[0] and picked[-1] == train[-1] and {s.label for s in picked} == {0, 1}
    assert calibration_samples("synthetic:faceswap", images=10_000) == train
    with pytest.raises(ValueError, match="at least 1"):
        calibration_samples("synthetic:faceswap", images=0)


def test_int8_export_is_under_30_percent_loads_and_agrees(tiny_benchmark, tmp_path):
    torch.manual_seed(0)
    checkpoint = _write(tmp_path, "resnet18", build_model("resnet18").eval(), {"type": "resnet", "arch": "resnet18"})
    result = _cli("export", str(checkpoint), "--format", "onnx-int8", "--calibration-images", "16",
                  "--out", str(tmp_path / "resnet18-int8.onnx"))
    assert {"path", "max_abs_diff", "params", "macs", "bytes", "fp32_bytes", "size_ratio"} <= set(result)
    assert result["fp32_bytes"] > 40e6 and result["size_ratio"] <= 0.30
    assert result["bytes"] == Path(result["path"]).stat().st_size and result["fp32_max_abs_diff"] <= PARITY
    assert result["calibration"]["images"] == 16 and result["calibration"]["data"] == "synthetic:faceswap"
    assert np.isfinite(result["max_abs_diff"]) and result["probability_max_abs_diff"] <= 0.1
    int8 = core.load_model(result["path"])
    assert int8.header["deploy"]["precision"] == "int8" and int8.header["deploy"]["quantization"]["format"] == "QDQ"
    assert int8.header["params"] == result["params"] == sum(p.numel() for p in build_model("resnet18").parameters())
    ops = {node.op_type for node in onnx.load(result["path"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    images = torch.stack([int8.preprocess(load_image(s.path)) for s in calibration_samples("synthetic:faceswap", images=8)])
    with torch.no_grad():
        quantized, reference = torch.sigmoid(int8(images)), torch.sigmoid(core.load_model(checkpoint)(images))
    assert torch.isfinite(quantized).all() and (quantized - reference).abs().max() <= 0.1


def test_deployed_exports_once_into_the_cache(checkpoints, tiny_benchmark):
    from core.deploy.variants import deployed

    fp32 = deployed(checkpoints["compact-resnet"], "onnx", progress=False)
    int8 = deployed(checkpoints["compact-resnet"], "onnx-int8", calibration_images=8, progress=False)
    stamps = {path: Path(path).stat().st_mtime_ns for path in (fp32["path"], int8["path"])}
    assert deployed(checkpoints["compact-resnet"], "onnx", progress=False) == fp32
    assert deployed(checkpoints["compact-resnet"], "onnx-int8", calibration_images=8, progress=False)["path"] == int8["path"]
    assert {path: Path(path).stat().st_mtime_ns for path in stamps} == stamps, "nothing exported twice"
    assert Path(int8["path"]).parent == Path(fp32["path"]).parent and int8["fp32_bytes"] == fp32["bytes"]
    assert read_header(int8["path"])["deploy"]["source_sha256"] == fp32["source_sha256"]


def test_onnx_benchmark_smoke(tiny_benchmark, tmp_path):
    from bench import run_benchmark

    result, path = run_benchmark("onnx", smoke=True, out=tmp_path)
    assert path.is_file() and json.loads(path.read_text())["summary"] == result["summary"]
    runtimes = [(row["checkpoint"], row["runtime"]) for row in result["rows"]]
    assert runtimes == [("tiny", "PyTorch fp32"), ("tiny", "ONNX fp32"), ("tiny", "ONNX int8")]
    for row in result["rows"]:
        assert row["latency_b1_ms"] > 0 and row["latency_b32_ms"] > 0 and 0 <= row["accuracy"] <= 1 and row["n"] > 0
    assert result["targets"]["tiny: ONNX fp32 parity"]["met"] and "| tiny | ONNX int8 |" in result["table"]


# --------------------------------------------------------------------------- the live-inference page


def test_inference_page_runs_the_onnx_exports_next_to_pytorch(tiny_benchmark):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=300).run()
    app.switch_page("views/inference.py").run()
    (student,) = [name for name in app.multiselect(key="inference_pick").options if "student-pearson-resnet50" in name]
    app.toggle(key="inference_gradcam").set_value(False)
    app.multiselect(key="inference_pick").set_value([student]).run()
    assert not app.exception and not app.dataframe, "no export unless asked for"
    app.multiselect(key="inference_runtimes").set_value(["ONNX fp32", "ONNX int8"]).run()
    assert not app.exception
    assert [metric.value for metric in app.metric if metric.label == "Verdict"] and len(app.dataframe) == 1
    table = app.dataframe[0].value
    assert list(table["runtime"]) == ["PyTorch fp32", "ONNX fp32", "ONNX int8"]
    assert set(table["verdict"]) <= {"fake", "real"} and table["P(fake)"].between(0, 1).all()
    assert abs(table["P(fake)"][1] - table["P(fake)"][0]) <= 1e-4, "fp32 ONNX agrees with PyTorch"
    assert table["file (MB)"][2] <= 0.3 * table["file (MB)"][1]
