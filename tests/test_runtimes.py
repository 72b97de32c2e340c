"""The runtimes a checkpoint is served by (core.deploy.runtimes): every available one agrees with PyTorch at each
rounding, precision is what it says (OpenVINO fp32 really fp32), ``auto`` measures once, caches, re-measures on a
changed key and falls back to PyTorch, ``predict --json`` names what answered, ``export --format openvino`` round-trips.

One tiny compact student (resnet-tiny at 32 px, odd kept-filter counts) with an out-of-distribution model serves
every test; its exports are made once into the session's cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import core
from core.checkpoint import read_header, save_checkpoint
from core.cli import main
from core.deploy import runtimes
from core.deploy.runtimes import (
    FP32_TOLERANCE,
    INT8_PROBABILITY_TOLERANCE,
    RUNTIME_NAMES,
    ParityError,
    RuntimeUnavailable,
    auto_selection,
    available_runtimes,
    load_runtime,
)
from core.evaluation.ood import FeatureTap, Scorer, load_ood
from core.models.masked import MaskedResNet

DATA = "synthetic:faceswap"
AVAILABLE = available_runtimes()
FP32 = [r for r in ("torch", "onnx", "openvino") if AVAILABLE[r] is None]
INT8 = [r for r in ("onnx-int8", "openvino-int8") if AVAILABLE[r] is None]
IMAGES = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(autouse=True)
def _auto_is_the_default(monkeypatch):
    monkeypatch.delenv("CORE_RUNTIME", raising=False)  # conftest pins the rest of the suite to torch
    monkeypatch.setattr(runtimes, "MEASURE_SECONDS", 0.3)


@pytest.fixture(scope="module")
def student(tiny_benchmark, tmp_path_factory) -> Path:
    """A compact resnet-tiny student whose layers keep odd filter counts, with an out-of-distribution sidecar."""
    from core.evaluation.ood import fit_checkpoint
    from core.pruning.surgery import compact_from_masked

    torch.manual_seed(0)
    masked = MaskedResNet("resnet-tiny").eval()
    keep = torch.rand(masked.sampler.logits.shape[0]) < 0.6
    masked.sampler.logits.data[:, 0], masked.sampler.logits.data[:, 1] = 0.0, torch.where(keep, 1.0, -1.0)
    compact = compact_from_masked(masked).eval()
    path = tmp_path_factory.mktemp("runtimes") / "student.safetensors"
    save_checkpoint(path, compact, {"method": "pearson", "image_size": 32, "dataset": DATA, "config": {"data": DATA},
                                    "model": {"type": "compact-resnet", "arch": "resnet-tiny",
                                              "active_filters": compact.active_filters},
                                    "normalization": {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]}})
    fit_checkpoint(path, DATA, progress=False)
    return path


def _trained(path: Path):
    return core.load_model(path, serve=False)


def test_every_runtime_is_listed_as_available_or_with_its_reason():
    assert list(AVAILABLE) == list(RUNTIME_NAMES) and AVAILABLE["torch"] is None
    assert all(reason is None or isinstance(reason, str) and reason for reason in AVAILABLE.values())
    assert AVAILABLE["onnx"] is None, "onnxruntime is in requirements.txt"


@pytest.mark.parametrize("round_to", [1, 8, 16])
@pytest.mark.parametrize("runtime", FP32)
def test_every_fp32_runtime_gives_the_trained_logits_and_statistics(student, runtime, round_to):
    form = load_runtime(student, runtime, round_to=round_to)
    assert (form.runtime, form.round_to, form.precision, form.exact) == (runtime, round_to, "fp32", True)
    assert form.parity["max_abs_diff"] <= FP32_TOLERANCE <= form.parity["tolerance"]
    trained = _trained(student)
    with torch.no_grad():
        assert (form(IMAGES) - trained(IMAGES)).abs().max() <= 1e-4
    if round_to > 1:  # every pruned layer padded to a multiple (or its full width): zero filters, exact
        counts = form.header["model"]["active_filters"]
        trained_counts = trained.header["model"]["active_filters"]
        assert counts != trained_counts and all(c >= t for c, t in zip(counts, trained_counts, strict=True))
        assert all(c % round_to == 0 or c == width for c, width in zip(counts, _widths(), strict=True))
    # the out-of-distribution scores predict needs, from one forward (graphs: extra outputs; PyTorch: hooks)
    ood = load_ood(student)
    torch.testing.assert_close(Scorer(form, ood)(IMAGES)[1], Scorer(trained, ood)(IMAGES)[1], rtol=1e-3, atol=1e-3)


def test_round_to_pads_to_multiples_of_8_and_16_and_skips_roundings_that_change_nothing(student):
    from core.deploy.serving import deployable

    trained = _trained(student)
    counts = trained.header["model"]["active_filters"]
    for multiple in (8, 16):
        padded, header = deployable(trained, multiple)
        assert header["round_to"] == multiple and padded.active_filters == header["model"]["active_filters"]
        assert all(n % multiple == 0 or n == width for n, width in zip(padded.active_filters, _widths(), strict=True))
        assert all(n >= c for n, c in zip(padded.active_filters, counts, strict=True))
        with torch.no_grad():
            assert (padded(IMAGES) - trained(IMAGES)).abs().max() <= 1e-5
    assert runtimes.distinct_roundings(student) == {}  # resnet-tiny's odd counts: 8 and 16 both change them
    teacher = student.with_name("plain.safetensors")
    save_checkpoint(teacher, _plain(), {**read_header(student), "model": {"type": "resnet", "arch": "resnet-tiny"}})
    assert runtimes.distinct_roundings(teacher) == {8: 1, 16: 1}
    with pytest.raises(ValueError, match="pruned ResNet students"):
        load_runtime(teacher, "torch", round_to=8)


def _widths() -> list[int]:
    from core.models import build_model
    from core.models.masked import masked_layers

    return [layer.channels for layer in masked_layers(build_model("resnet-tiny"))]


def _plain():
    from core.models import build_model

    torch.manual_seed(0)
    return build_model("resnet-tiny").eval()


@pytest.mark.parametrize("runtime", INT8)
def test_int8_forms_are_labelled_int8_and_checked_on_training_images(student, runtime):
    form = load_runtime(student, runtime)
    assert form.precision == "int8" and form.exact is False and form.runtime == runtime
    check = form.header["deploy"]["check"]
    assert check["check_images"] > 0 and check["probability_max_abs_diff"] <= INT8_PROBABILITY_TOLERANCE
    assert form.parity["probability_max_abs_diff"] == check["probability_max_abs_diff"]
    assert form.header["deploy"]["quantization"]["format"] == "QDQ"
    assert form.statistics == ["layer1", "layer2", "layer3", "layer4"], "int8 still answers the ood statistics"


@pytest.mark.skipif(AVAILABLE["openvino"] is not None, reason=f"OpenVINO: {AVAILABLE['openvino']}")
def test_openvino_runs_in_fp32_not_its_bf16_default(student):
    from core.deploy.openvino import openvino_core
    from core.deploy.serving import serving_export

    form = load_runtime(student, "openvino")
    assert form.inference_precision == "f32"
    assert form.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert form.compiled.get_property("INFERENCE_NUM_THREADS") == form.threads
    default = openvino_core().compile_model(str(serving_export(student)), "CPU")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512_bf16" in flags or " amx_bf16" in flags:  # this CPU: OpenVINO's default would silently be bf16
        assert default.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"


@pytest.mark.skipif(AVAILABLE["openvino"] is not None, reason=f"OpenVINO: {AVAILABLE['openvino']}")
def test_openvino_telemetry_sends_nothing_and_writes_nothing(tmp_path):
    """`import openvino` alone would send an event and write ~/intel/openvino_ga_cid (opt-out telemetry): this
    project's import takes OpenVINO's no-op stub instead, in a fresh process with an empty home folder."""
    import os
    import subprocess
    import sys

    script = ("from core.deploy.openvino import openvino_core, telemetry_state\n"
              "openvino_core().read_model  # the Core, as every OpenVINO form starts it\n"
              "print(telemetry_state())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "stub"
    assert not (tmp_path / "intel").exists(), "no client id, no usage counts"


def test_torch_compile_is_unavailable_with_its_reason_never_a_crash(student, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(runtimes, "_compile_missing", lambda: "no C++ compiler (test)")
        assert available_runtimes()["torch-compile"] == "no C++ compiler (test)"
        with pytest.raises(RuntimeUnavailable, match="no C.. compiler"):
            load_runtime(student, "torch-compile")

    def broken(*args, **kwargs):
        raise RuntimeError("inductor exploded")

    with monkeypatch.context() as patch:
        patch.setattr(runtimes, "_compile_missing", lambda: None)  # whatever this machine has: the compile itself fails
        patch.setattr(torch, "compile", lambda network, **kw: broken)
        with pytest.raises(RuntimeUnavailable, match="torch.compile failed here: RuntimeError: inductor exploded"):
            load_runtime(student, "torch-compile")


@pytest.mark.slow  # inductor compiles C++ kernels: ~20 s cold even for resnet-tiny (seconds once its disk cache is warm)
@pytest.mark.skipif(AVAILABLE["torch-compile"] is not None, reason=f"torch.compile: {AVAILABLE['torch-compile']}")
def test_torch_compile_gives_the_trained_logits_and_statistics(student):
    form = load_runtime(student, "torch-compile")
    assert (form.runtime, form.precision, form.exact) == ("torch-compile", "fp32", True)
    trained = _trained(student)
    logits, statistics = form.forward_with_statistics(IMAGES)
    with torch.no_grad(), FeatureTap(trained, form.statistics) as tap:
        expected = trained(IMAGES)
        expected_statistics = tap.take()
    assert (logits - expected).abs().max() <= FP32_TOLERANCE
    for stage, values in statistics.items():
        torch.testing.assert_close(values, expected_statistics[stage], rtol=1e-4, atol=1e-4)


def test_a_form_that_disagrees_is_refused(student, monkeypatch):
    monkeypatch.setattr(runtimes, "FP32_TOLERANCE", -1.0)  # nothing agrees closer than that
    with pytest.raises(ParityError, match="above the fp32 tolerance"):
        load_runtime(student, "torch")


# --------------------------------------------------------------------------- auto


def test_auto_measures_once_caches_beside_the_checkpoint_and_serves_the_fastest(student):
    record_file = student.with_name("student.serving.json")
    record_file.unlink(missing_ok=True)
    first = auto_selection(student, progress=False)
    assert not first["reused"] and Path(first["path"]) == record_file and record_file.is_file()
    stored = json.loads(record_file.read_text())
    assert stored["key"]["checkpoint_sha256"] == hashlib.sha256(student.read_bytes()).hexdigest()
    assert set(stored["key"]["machine"]) >= {"cpu", "simd", "cores", "threads", "libraries"}
    assert set(stored["key"]["machine"]["libraries"]) == {"torch", "onnxruntime", "openvino"}
    candidates = stored["candidates"]
    assert {(c["runtime"], c["round_to"]) for c in candidates} == {(r, n) for r in FP32 for n in (1, 8, 16)}
    assert all(c["precision"] == "fp32" and c["max_abs_diff"] <= FP32_TOLERANCE and c["statistics"] for c in candidates)
    fastest = min(candidates, key=lambda c: c["median_ms"])
    assert (stored["chosen"]["runtime"], stored["chosen"]["round_to"]) == (fastest["runtime"], fastest["round_to"])
    stamp = record_file.stat().st_mtime_ns
    again = auto_selection(student, progress=False)
    assert again["reused"] and again["chosen"] == first["chosen"] and record_file.stat().st_mtime_ns == stamp
    served = core.load_model(student)  # auto is the default
    assert (served.runtime, served.round_to) == (fastest["runtime"], fastest["round_to"]) and served.exact
    assert served.selection["reused"] and served.preprocess is not None
    with torch.no_grad():
        assert (served(IMAGES) - _trained(student)(IMAGES)).abs().max() <= FP32_TOLERANCE


def test_bench_times_auto_s_pick_beside_the_pytorch_teacher(student, monkeypatch):
    """bench runtimes' acceptance row: the student as auto serves it (measured afresh), then timed beside the PyTorch
    teacher alone in separate round-robin timings; the speed-up is the median of their ratios of medians."""
    from bench import runtimes as bench_runtimes
    from core.evaluation import latency

    teacher = student.with_name("teacher.safetensors")
    save_checkpoint(teacher, _plain(), {**read_header(student), "model": {"type": "resnet", "arch": "resnet-tiny"}})
    calls = []
    original = latency.measure_latency  # the bench imports it on use: the spy sees only the bench's own timings

    def spy(models, *args, **kwargs):
        calls.append(sorted(models))
        return original(models, *args, **kwargs)

    monkeypatch.setattr(latency, "measure_latency", spy)
    result = bench_runtimes.auto_vs_teacher({"teacher": teacher, "pearson": student}, 32, segments=3, repeats=3)
    record = auto_selection(student, progress=False)
    assert record["reused"] and result["chosen"] == record["chosen"]
    assert calls == [["pearson · auto", "teacher · torch"]] * 3, "auto's pick and the teacher alone, three times"
    assert result["answered_by"].endswith("(auto: fastest measured here)")
    ratios = [segment["teacher · torch"] / segment["pearson · auto"] for segment in result["segments"]]
    assert [segment["speedup"] for segment in result["segments"]] == pytest.approx(ratios, abs=1e-3)
    assert result["speedup"] == sorted(segment["speedup"] for segment in result["segments"])[1]
    assert result["range"] == [min(s["speedup"] for s in result["segments"]), max(s["speedup"] for s in result["segments"])]


def test_a_changed_key_measures_again(student, monkeypatch):
    auto_selection(student, progress=False)
    key = runtimes.machine_key()
    with monkeypatch.context() as patch:
        patch.setattr(runtimes, "machine_key", lambda: {**key, "threads": key["threads"] + 7})
        record = auto_selection(student, progress=False)
        assert not record["reused"] and record["key"]["machine"]["threads"] == key["threads"] + 7
        assert auto_selection(student, progress=False)["reused"]
    assert not auto_selection(student, progress=False)["reused"], "back on the real machine: its key again"


def test_auto_falls_back_to_pytorch_without_the_other_runtimes(student, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails, as where it is not installed
    monkeypatch.setattr(runtimes, "_missing", lambda *modules: "onnxruntime not installed (test)")
    record = auto_selection(student, progress=False)
    assert not record["reused"], "the key names OpenVINO's version: None now"
    assert record["key"]["machine"]["libraries"]["openvino"] is None
    assert {c["runtime"] for c in record["candidates"]} == {"torch"} and record["chosen"]["runtime"] == "torch"
    assert "openvino is not importable" in record["unavailable"]["openvino"]
    assert record["unavailable"]["onnx"] == "onnxruntime not installed (test)"
    assert core.load_model(student).runtime == "torch"


@pytest.mark.skipif(not {"onnx", "openvino"} & set(FP32), reason="no runtime besides PyTorch here")
def test_a_chosen_runtime_that_cannot_load_falls_back_to_pytorch_and_says_so(student, monkeypatch, capsys):
    record = auto_selection(student, progress=False)
    other = next(r for r in ("openvino", "onnx") if r in FP32)
    forced = {**{k: v for k, v in record.items() if k not in ("reused", "path")},
              "chosen": {"runtime": other, "round_to": 1, "median_ms": 0.1, "speedup_vs_torch": None}}
    Path(record["path"]).write_text(json.dumps(forced))
    monkeypatch.setattr(runtimes, "unavailable_reason", lambda runtime: None if runtime == "torch" else "gone (test)")
    served = core.load_model(student)
    assert served.runtime == "torch" and served.selection["chosen"]["runtime"] == other
    assert f"auto: {other} (round_to 1) cannot be loaded" in capsys.readouterr().err


def test_a_read_only_folder_keeps_the_record_in_the_cache(student, monkeypatch):
    import dataclasses

    from core.io import DiskCache, WriteError, cache_dir

    class RefuseBeside(DiskCache):
        def write(self, path, save):
            if Path(path).parent == student.parent:
                raise WriteError(30, f"cannot write {path}: read-only file system")
            return super().write(path, save)

    monkeypatch.setattr(runtimes, "RECORD_CACHE", RefuseBeside(**dataclasses.asdict(runtimes.RECORD_CACHE)))
    record = auto_selection(student, progress=False, remeasure=True)
    assert Path(record["path"]).parent == cache_dir() / "serving" and Path(record["path"]).is_file()
    student.with_name("student.serving.json").unlink(missing_ok=True)
    assert auto_selection(student, progress=False)["path"] == record["path"], "found there next time"


# --------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    from PIL import Image

    from core.data.synthetic import SynthConfig, render_split_image

    folder = tmp_path_factory.mktemp("pictures")
    for index in range(3):
        Image.fromarray(render_split_image(SynthConfig(image_size=32), "faceswap", "test", index)[0]).save(folder / f"{index}.png")
    return folder


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_predict_json_names_the_runtime_that_answered(student, pictures, capsys):
    assert main(["predict", str(pictures), "--checkpoint", str(student), "--no-crop", "--json", "--quiet"]) == 0
    auto = _json(capsys)
    chosen = auto["runtime_selection"]["chosen"]
    assert auto["runtime_requested"] == "auto" and (auto["runtime"], auto["round_to"]) == (chosen["runtime"], chosen["round_to"])
    assert auto["precision"] == "fp32" and auto["runtime_description"]
    assert len(auto["predictions"]) == 3 and all(p["in_distribution"] is not None for p in auto["predictions"])
    for runtime in FP32:
        assert main(["predict", str(pictures), "--checkpoint", str(student), "--no-crop", "--runtime", runtime,
                     "--json", "--quiet"]) == 0
        named = _json(capsys)
        assert (named["runtime"], named["runtime_requested"], named["round_to"]) == (runtime, runtime, 1)
        assert "runtime_selection" not in named
        for a, b in zip(named["predictions"], auto["predictions"], strict=True):
            assert a["p_fake"] == pytest.approx(b["p_fake"], abs=1e-4) and a["ood_score"] == pytest.approx(b["ood_score"], rel=1e-3)


@pytest.mark.skipif(AVAILABLE["openvino"] is not None, reason=f"OpenVINO: {AVAILABLE['openvino']}")
def test_export_openvino_writes_an_fp32_ir_that_round_trips(student, pictures, tmp_path, capsys):
    out = tmp_path / "student.xml"
    assert main(["export", str(student), "--format", "openvino", "--round-to", "8", "--out", str(out), "--json", "--quiet"]) == 0
    result = _json(capsys)
    assert result["path"] == str(out) and out.is_file() and out.with_suffix(".bin").is_file()
    assert result["max_abs_diff"] <= 1e-4 and result["inference_precision"] == "f32"
    assert result["bytes"] == out.stat().st_size + out.with_suffix(".bin").stat().st_size
    speed = result["speedup_vs_torch"]
    assert speed["speedup"] == pytest.approx(speed["torch_ms"] / speed["export_ms"], rel=1e-2) and speed["batch"] == 1
    header = read_header(out)
    assert header["deploy"]["format"] == "openvino" and header["deploy"]["precision"] == "fp32"
    assert header["deploy"]["inference_precision_hint"] == "f32" and header["deploy"]["speed"] == speed
    assert header["round_to"] == 8 and all(n % 8 == 0 for n in header["model"]["active_filters"])
    loaded = core.load_model(out)
    assert (loaded.runtime, loaded.precision, loaded.round_to, loaded.inference_precision) == ("openvino", "fp32", 8, "f32")
    with torch.no_grad():
        assert (loaded(IMAGES) - _trained(student)(IMAGES)).abs().max() <= 1e-4
    assert main(["predict", str(pictures), "--checkpoint", str(out), "--no-crop", "--json", "--quiet"]) == 0
    predicted = _json(capsys)
    assert predicted["runtime"] == "openvino" and len(predicted["predictions"]) == 3
    # an export's graph has the logits only (as `export --format onnx`): no ood score rather than a wrong one
    assert all(p["in_distribution"] is None for p in predicted["predictions"])


def test_export_onnx_records_its_speed_against_pytorch(student, tmp_path, capsys):
    out = tmp_path / "student.onnx"
    assert main(["export", str(student), "--format", "onnx", "--out", str(out), "--json", "--quiet"]) == 0
    result = _json(capsys)
    assert {"path", "max_abs_diff", "params", "macs"} <= set(result), "export's keys stay"
    assert read_header(out)["deploy"]["speed"] == result["speedup_vs_torch"] and result["speedup_vs_torch"]["torch_ms"] > 0


def test_runtimes_command_lists_the_runtimes_and_auto_s_choice(student, capsys):
    assert main(["runtimes", str(student), "--json", "--quiet"]) == 0
    result = _json(capsys)
    assert result["available"] == {k: v for k, v in available_runtimes().items()}
    assert result["selection"]["chosen"]["runtime"] in FP32

