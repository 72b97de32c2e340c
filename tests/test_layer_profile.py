"""Where the served time goes (core.evaluation.layer_profile): per-layer MACs equal the MAC counter's, bytes by hand,
every conv in the right group, the groups add up to the pass, time lands on the layer that spends it; the
serving-profile benchmark's smoke run and the Pruning page's Latency view."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.evaluation.layer_profile import CATEGORIES, layer_profile, served_deployable
from core.models import build_model
from core.pruning.flops import profile_layers

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "checkpoints" / "teacher-resnet50-synthetic-faceswap.safetensors"
PEARSON = REPO / "checkpoints" / "student-pearson-resnet50-synthetic-faceswap.safetensors"


@pytest.fixture(scope="module")
def networks() -> dict:
    return {"teacher": served_deployable(TEACHER), "pearson": served_deployable(PEARSON)}


@pytest.fixture(scope="module")
def profiles(networks) -> dict:
    return {name: layer_profile(model, 32, repeats=3, warmup=1, threads=1) for name, model in networks.items()}


def test_each_layers_macs_equal_the_mac_counters(networks, profiles):
    for name, model in networks.items():
        counted = {layer.name: layer.macs for layer in profile_layers(model, 32) if layer.kind in ("Conv2d", "Linear")}
        measured = {layer["name"]: layer["macs"] for layer in profiles[name]["layers"] if layer["macs"]}
        assert measured == {key: macs for key, macs in counted.items() if macs}, name


def test_bytes_moved_by_hand(profiles):
    stem = next(layer for layer in profiles["teacher"]["layers"] if layer["name"] == "conv1")
    activations = 3 * 32 * 32 + 64 * 16 * 16  # the image in, the stem's map out (stride 2)
    weights = 64 * 3 * 7 * 7 + 64  # BN folded into the conv: a bias too
    assert stem["bytes"] == 4 * (activations + weights) and stem["in"] == [1, 3, 32, 32] and stem["out"] == [1, 64, 16, 16]
    assert stem["macs_per_byte"] == pytest.approx(stem["macs"] / stem["bytes"], abs=1e-3)


def test_convs_are_grouped_by_whether_pruning_narrowed_them(networks, profiles):
    reference = {name: module.weight.shape[:2] for name, module in build_model("resnet50").named_modules()
                 if isinstance(module, torch.nn.Conv2d)}
    for name, model in networks.items():
        layers = profiles[name]["layers"]
        for layer in layers:
            if layer["stage"].startswith("layer") and layer["name"].endswith(("conv1", "conv2", "conv3")):
                narrowed = model.get_submodule(layer["name"]).weight.shape[:2] != reference[layer["name"]]
                assert layer["category"] == ("pruned convs" if narrowed else "full-width convs"), layer["name"]
        assert sum(layer["category"] == "downsample" for layer in layers) == 4
        assert sum(layer["category"] == "add + relu" for layer in layers) == 16, "one per bottleneck block"
    assert profiles["teacher"]["by_category"]["pruned convs"]["layers"] == 0
    assert profiles["pearson"]["by_category"]["full-width convs"]["layers"] < 48 / 2, "most inner convs were pruned"


def test_the_groups_add_up_to_the_pass(profiles):
    for profile in profiles.values():
        assert set(profile["by_category"]) == set(CATEGORIES)
        assert sum(group["ms"] for group in profile["by_category"].values()) == pytest.approx(profile["total_ms"], abs=0.01)
        assert sum(group["ms"] for group in profile["by_stage"].values()) == pytest.approx(profile["total_ms"], abs=0.01)
        assert sum(group["time_share"] for group in profile["by_category"].values()) == pytest.approx(1.0, abs=0.01)


def test_time_lands_on_the_layer_that_spends_it(networks):
    """A conv made 40 ms slower (a hook that sleeps, run inside its call) shows 40 ms more on that conv, its stage
    and its group, and nowhere else."""
    model = networks["pearson"]
    slow = model.get_submodule("layer3.0.conv2")
    handle = slow.register_forward_hook(lambda module, args, output: time.sleep(0.04))
    try:
        profile = layer_profile(model, 32, repeats=3, warmup=1, threads=1)
    finally:
        handle.remove()
    layer = next(layer for layer in profile["layers"] if layer["name"] == "layer3.0.conv2")
    assert 40 <= layer["ms"] < 60
    assert profile["by_stage"]["layer3"]["ms"] >= 40 and profile["by_stage"]["layer2"]["ms"] < 20
    assert profile["by_category"][layer["category"]]["ms"] >= 40 and profile["by_category"]["overhead"]["ms"] < 20
    assert profile["total_ms"] >= 40 and profile["unhooked_ms"] >= 40


def test_serving_profile_smoke_writes_the_profiles_and_the_bounds(tmp_path):
    from bench import run_benchmark

    result, path = run_benchmark("serving-profile", smoke=True, out=tmp_path)
    written = json.loads(path.read_text())
    assert written["summary"].startswith("serving-profile at 32px: ")
    ratio = written["ratios"]["32px"]["pearson"]
    medians = written["median_ms"]["32px"]
    assert ratio["speedup"] == pytest.approx(medians["teacher"] / medians["pearson"], abs=1e-3)
    assert ratio["share_of_macs_ratio"] == pytest.approx(ratio["speedup"] / ratio["macs_ratio"], abs=2e-3)
    teacher_macs = sum(layer["macs"] for layer in written["profiles"]["32px"]["teacher"]["layers"])
    assert teacher_macs == sum(layer.macs for layer in profile_layers(build_model("resnet50"), 32)
                               if layer.kind in ("Conv2d", "Linear"))
    shares = written["analysis"]["32px"]["pearson"]["student_ms_share"]
    assert set(shares) == set(CATEGORIES) and sum(shares.values()) == pytest.approx(1.0, abs=0.01)


def test_pruning_page_latency_view_profiles_the_students_and_their_teacher(tiny_benchmark):
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180).run()
    app.switch_page("views/pruning.py").run()
    charts = len(app.get("plotly_chart"))
    app.toggle(key="pruning_latency_on").set_value(True).run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == charts + 2, "time per stage beside MACs per stage, and the groups"
    table = next(frame.value for frame in app.dataframe if "ms (layers summed)" in frame.value.columns)
    assert list(table["network"])[0] == "teacher" and len(table) == 1 + len(app.multiselect(key="pruning_pick").value)
    assert (table["ms (layers summed)"] > 0).all() and table["MACs (M)"].iloc[0] > table["MACs (M)"].iloc[1:].max()


def test_runtime_ratios_divide_the_contenders_they_name():
    from bench.runtimes import runtime_ratios

    medians = {"teacher · torch": 100.0, "teacher · onnx": 60.0, "pearson · torch": 25.0, "pearson · onnx": 20.0,
               "pearson · onnx · round-to 8": 16.0}
    ratios = runtime_ratios(medians, {"teacher": 700, "pearson": 100}, ("torch", "onnx"))
    assert set(ratios) == {"torch", "onnx", "onnx · round-to 8"}
    assert ratios["onnx"]["vs same-runtime teacher"] == 3.0 and ratios["onnx"]["vs PyTorch served teacher"] == 5.0
    assert ratios["onnx · round-to 8"]["vs same-runtime teacher"] == 3.75 and ratios["onnx · round-to 8"]["round_to"] == 8
    assert ratios["torch"]["share of the MACs ratio (same runtime)"] == round(4.0 / 7.0, 3)
    assert ratios["onnx"]["share of the MACs ratio (vs PyTorch teacher)"] == round(5.0 / 7.0, 3)
