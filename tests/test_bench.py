"""Benchmarks: smoke runs of the CPU ones write JSON whose medians are the medians of its raw timings, whose ratios
divide the contenders they name, whose targets carry those ratios, and whose summary prints them; ``gpu`` skips
cleanly on a CPU."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from bench import BENCHMARKS, run_benchmark


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a loaded 2-core machine two threads wait on each other (10x slower smoke runs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _run(name: str, tmp_path) -> dict:
    result, path = run_benchmark(name, smoke=True, out=tmp_path)
    assert path == tmp_path / f"{name}.json"
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(result)), "the file holds what the run returned"
    assert written["benchmark"] == name and written["smoke"] is True
    assert {"machine", "config", "summary", "targets", "date", "seconds"} <= set(written)
    assert written["machine"]["versions"]["torch"] == torch.__version__ and written["machine"]["cpu_count"] >= 1
    assert written["summary"].startswith(f"{name}: ")
    return written


def _medians_of_raw(medians_ms: dict, raw_s: dict, repeats: int | None = None) -> None:
    """Each median (ms, rounded to 4 places) is the median of that contender's raw seconds (rounded to the microsecond)."""
    assert set(medians_ms) == set(raw_s)
    for name, values in raw_s.items():
        assert repeats is None or len(values) == repeats, name
        assert min(values) > 0, name
        assert medians_ms[name] == pytest.approx(1000 * statistics.median(values), abs=2e-3), name


def _is_target(check: dict, value: float, goal: float, higher_is_better: bool = True, abs: float = 0.0) -> None:
    """A target holds the figure it names (bench.target rounds it to 4 places; ``abs``: the JSON's copy of the figure is
    rounded more) and is met on the right side of its goal."""
    assert set(check) == {"value", "target", "met"} and check["target"] == goal
    assert check["value"] == pytest.approx(round(value, 4), abs=abs)
    assert check["met"] is (check["value"] >= goal if higher_is_better else check["value"] <= goal)


def test_every_issue_9_benchmark_is_registered():
    assert {"inference", "data", "dashboard", "gpu", "onnx", "sparse", "video", "train-step"} <= set(BENCHMARKS)


# ratio name -> (numerator, denominator) among the batch's median times: a speed-up is the slower time over the faster
INFERENCE_RATIOS = {
    "compact speed-up vs teacher": ("teacher", "{method} compact"),
    "compact speed-up vs teacher (channels_last)": ("teacher (channels_last)", "{method} compact"),
    "masked speed-up vs teacher": ("teacher", "{method} masked"),
    "BN-folded compact speed-up vs BN-folded channels_last teacher": ("teacher (channels_last, BN folded)",
                                                                      "{method} compact (BN folded)"),
    "BN folding gain (compact / folded compact)": ("{method} compact", "{method} compact (BN folded)"),
}
SERVING_RATIOS = {
    "served student vs served teacher": ("served teacher", "served student"),
    "served student vs eager teacher": ("eager teacher", "served student"),
    "served teacher vs eager teacher": ("eager teacher", "served teacher"),
    "round-to 8 vs served student": ("served student", "served student, round-to 8"),
}


def test_inference_smoke(tmp_path, monkeypatch):
    from bench.inference import COMPACT_SPEEDUP_TARGET, SERVED_SPEEDUP_TARGET
    from core.models import build_model
    from core.pruning.flops import profile_model

    monkeypatch.setenv("CORE_BENCH_SKIP_ONNX", "1")  # the ONNX export alone takes ~10 s; `bench inference --smoke` runs it
    result = _run("inference", tmp_path)
    size = result["config"]["image_size"]
    assert size == 32 and result["config"]["onnx"] is False
    contenders = {"teacher", "teacher (channels_last)", "teacher (channels_last, BN folded)"} | {
        f"{method} {form}" for method in ("kdfs", "pearson") for form in ("masked", "compact", "compact (BN folded)")}
    macs = result["macs"]
    assert macs["teacher"] == profile_model(build_model("resnet-tiny"), size)["macs"], "MACs at the timed input size"
    assert macs["teacher"] > macs["kdfs compact"] > macs["pearson compact"], "keep rates 0.5 and 0.3: fewer filters, fewer MACs"
    for batch in ("b1", "b32"):
        medians = result["median_ms"][batch]
        assert set(medians) == contenders
        _medians_of_raw(medians, result["raw_s"][batch], result["config"]["batches"][batch]["repeats"])
        for method in ("kdfs", "pearson"):
            ratios = result["ratios"][f"{batch}: {method}"]
            expected = {name: medians[top.format(method=method)] / medians[bottom.format(method=method)]
                        for name, (top, bottom) in INFERENCE_RATIOS.items()}
            expected["teacher / compact MACs"] = macs["teacher"] / macs[f"{method} compact"]
            expected["speed-up / MACs ratio"] = expected["compact speed-up vs teacher"] / expected["teacher / compact MACs"]
            assert ratios == pytest.approx(expected, rel=1e-9)
    assert all(difference < 1e-4 for difference in result["parity_max_abs_logit"].values()), "masked and compact agree"
    pearson = result["ratios"]["b1: pearson"]["compact speed-up vs teacher"]
    _is_target(result["targets"]["compact Pearson speed-up vs teacher, b1"], pearson, COMPACT_SPEEDUP_TARGET)
    assert f"compact Pearson {pearson:.2f}x faster than the teacher at b1" in result["summary"]

    serving = result["serving"]
    assert serving["threads"] == ["1 threads"] and serving["batch"] == 1 and serving["image_size"] == size
    for threads in serving["threads"]:
        medians = serving["median_ms"][threads]
        _medians_of_raw(medians, serving["raw_s"][threads], serving["repeats"])
        assert serving["ratios"][threads] == pytest.approx(
            {name: medians[top] / medians[bottom] for name, (top, bottom) in SERVING_RATIOS.items()}, rel=1e-9)
    _is_target(result["targets"]["served Pearson vs served teacher, b1, default threads"],
               serving["ratios"]["1 threads"]["served student vs served teacher"], SERVED_SPEEDUP_TARGET)
    padding = serving["round_to_8_filters"]
    assert padding["after"] % 8 == 0 and padding["before"] <= padding["after"]


def test_data_smoke(tmp_path):
    result = _run("data", tmp_path)
    config, rates = result["config"], result["images_per_s"]
    assert {"step: teacher", "step: pearson", "teacher trained from the loader, workers 1"} <= set(rates)
    for source in ("benchmark PNG", "256 px JPEG", "256 px JPEG pre-resized to 32 px PNG"):
        for workers in config["workers"]:
            assert f"loader: {source}, light, workers {workers}" in rates
    assert set(rates) == set(result["median_s"]) == set(result["raw_s"])
    for name, values in result["raw_s"].items():
        assert len(values) == config["repeats"] and result["median_s"][name] == pytest.approx(statistics.median(values), abs=1e-6)
        # a step trains on one batch; a loader pass (and the teacher fed by it) reads every image once
        per_pass = config["batch"] if name.startswith("step") else config["images_per_pass"]
        assert rates[name] == pytest.approx(per_pass / result["median_s"][name], rel=1e-3), name
    engine = rates["loader: benchmark PNG, light, workers 1"]  # the engine's loader on a CPU: 1 worker
    expected = {"engine loader / teacher step": engine / rates["step: teacher"],
                "engine loader / pearson step": engine / rates["step: pearson"],
                "slowest loader / teacher step": min(v for k, v in rates.items() if k.startswith("loader")) / rates["step: teacher"],
                "teacher from the loader / on a resident batch": rates["teacher trained from the loader, workers 1"]
                / rates["step: teacher"],
                "256 px JPEG / pre-resized, workers 0": rates["loader: 256 px JPEG, light, workers 0"]
                / rates["loader: 256 px JPEG pre-resized to 32 px PNG, light, workers 0"]}
    assert result["ratios"] == pytest.approx(expected, rel=1e-3)
    _is_target(result["targets"]["engine loader / teacher step (loader faster than training)"],
               result["ratios"]["engine loader / teacher step"], 1.0)
    _is_target(result["targets"]["teacher from the loader / on a resident batch"],
               result["ratios"]["teacher from the loader / on a resident batch"], 0.9)
    assert f"({result['ratios']['engine loader / teacher step']:.1f}x)" in result["summary"]


def test_dashboard_smoke(tiny_benchmark, tmp_path):
    from bench.dashboard import FACE_CROP_TARGET_MS, LIVE_INFERENCE_TARGET_MS, PAGE_TARGET_S

    result = _run("dashboard", tmp_path)
    assert result["errors"] == {}
    assert set(result["median_s"]["first"]) == set(result["config"]["pages"]) == {"overview"}
    assert result["median_s"]["first"] == result["raw_s"]["first"]
    again = result["median_s"]["again"]
    for page, values in result["raw_s"]["again"].items():
        assert len(values) == result["config"]["repeats"] and again[page] == pytest.approx(statistics.median(values), abs=1e-4)
    _is_target(result["targets"]["slowest cached page render (s)"], max(again.values()), PAGE_TARGET_S, higher_is_better=False)
    assert result["targets"]["pages without exceptions"] == {"value": 1, "target": 1, "met": True}
    for image in ("benchmark face 64 px PNG", "640x480 photo JPEG", "640x480 real photograph JPEG"):
        live = result["live_inference_ms"][image]
        assert set(live) == {"teacher", "kdfs compact", "pearson compact"}
        for parts in live.values():
            assert set(parts) == {"decode_ms", "face_crop_ms", "model_ms", "total_ms"}
            assert all(0 < part["median"] <= part["p90"] for part in parts.values())
            # every repeat's total holds its decode, face crop and model time
            assert all(parts["total_ms"]["median"] >= parts[part]["median"] for part in ("decode_ms", "face_crop_ms", "model_ms"))
    served = result["live_inference_ms"]["640x480 real photograph JPEG"]["pearson compact"]
    _is_target(result["targets"]["live inference, compact Pearson, 640x480 real photograph (ms)"], served["total_ms"]["median"],
               LIVE_INFERENCE_TARGET_MS, higher_is_better=False)
    _is_target(result["targets"]["face crop of that photograph (ms)"], served["face_crop_ms"]["median"], FACE_CROP_TARGET_MS,
               higher_is_better=False)
    assert f"compact Pearson as served {served['total_ms']['median']:.1f} ms" in result["summary"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip is what a CPU-only machine must get")
def test_gpu_skips_cleanly_without_cuda(tmp_path):
    result = _run("gpu", tmp_path)
    assert result["skipped"].startswith("no GPU") and result["summary"] == "gpu: skipped (no GPU)"


def test_train_step_smoke_measures_each_student_and_the_refreshed_pearson(tmp_path):
    from bench.training import KDFS_VS_TEACHER_TARGET, PEARSON_OVERHEAD_TARGET

    written = _run("train-step", tmp_path)
    ((key, result),) = written["results"].items()
    assert key == "cpu@32px-b8"
    every = result["score_every"]
    medians = result["median_ms"]
    assert set(medians) == {"teacher", "kdfs", "pearson", f"pearson@{every}"}
    plain = {name: values for name, values in result["raw_s"].items() if "@" not in name}
    _medians_of_raw({name: medians[name] for name in plain}, plain, repeats=2)
    raw = result["raw_s"][f"pearson@{every}"]
    assert len(raw) % every == 0  # whole refresh periods: the plain mean counts one scoring step in `every`
    for name, values in result["raw_s"].items():
        assert result["mean_ms"][name] == pytest.approx(1000 * sum(values) / len(values), abs=1e-3)
    # the robust estimate: the median of the steps that reuse the scores + 1/every of a refresh timed alone
    warmup = 1  # smoke: one warm-up round; the student rescored at steps (warmup + i) % every == 0
    reusing = [t for i, t in enumerate(raw) if (warmup + i) % every]
    assert len(reusing) == len(raw) - len(raw) // every
    refresh = statistics.median(result["refresh_ms"])
    assert refresh > 0
    assert medians[f"pearson@{every}"] == pytest.approx(1000 * statistics.median(reusing) + refresh / every, abs=2e-3)
    means = result["mean_ms"]
    expected = {"pearson overhead vs kdfs": medians["pearson"] / medians["kdfs"] - 1,
                f"pearson (score_every {every}) overhead vs kdfs": medians[f"pearson@{every}"] / medians["kdfs"] - 1,
                f"pearson (score_every {every}) overhead vs kdfs, plain means": means[f"pearson@{every}"] / means["kdfs"] - 1,
                "refresh / kdfs step": refresh / medians["kdfs"],
                "kdfs / teacher": medians["kdfs"] / medians["teacher"], "pearson / teacher": medians["pearson"] / medians["teacher"]}
    assert result["ratios"] == pytest.approx(expected, abs=2e-3)  # the JSON's medians are rounded to the microsecond
    ratios = result["ratios"]
    _is_target(written["targets"][f"{key}: Pearson overhead vs KDFS"], ratios["pearson overhead vs kdfs"],
               PEARSON_OVERHEAD_TARGET, higher_is_better=False)
    _is_target(written["targets"][f"{key}: Pearson (score_every {every}) overhead vs KDFS"],
               ratios[f"pearson (score_every {every}) overhead vs kdfs"], PEARSON_OVERHEAD_TARGET, higher_is_better=False)
    _is_target(written["targets"][f"{key}: KDFS / teacher"], ratios["kdfs / teacher"], KDFS_VS_TEACHER_TARGET,
               higher_is_better=False)
    assert f"({ratios['kdfs / teacher']:.2f}x teacher)" in written["summary"]


def test_sparse_smoke_times_dense_masked_and_zero_filled_networks(tmp_path):
    from core.models.ticket import Ticket

    written = _run("sparse", tmp_path)
    config = written["config"]
    assert config["archs"] == ["mesonet"] and config["image_sizes"] == [32] and config["sparsity"] == 0.8
    (key,) = written["median_ms"]
    assert key == "mesonet@32"
    medians = written["median_ms"][key]
    assert set(medians) == {"dense", "ticket (masked)", "ticket (zeros)"}
    _medians_of_raw(medians, written["raw_s"][key], config["repeats"])
    counts = Ticket("mesonet").counts()  # global magnitude pruning keeps round(20%) of the prunable weights, the rest all
    surviving = counts["dense_params"] - counts["prunable"] + round((1 - config["sparsity"]) * counts["prunable"])
    assert written["ratios"][key] == pytest.approx({"dense / zeros": medians["dense"] / medians["ticket (zeros)"],
                                                    "dense / masked": medians["dense"] / medians["ticket (masked)"],
                                                    "nonzero params": surviving, "dense params": counts["dense_params"]}, rel=1e-9)
    assert f"{key} {written['ratios'][key]['dense / zeros']:.2f}x the dense speed" in written["summary"]


def test_video_smoke_runs_the_cli_end_to_end_and_times_each_stage(tmp_path):
    from bench.video import PHOTO_FACE_TARGET, VIDEO_TARGET_S

    written = _run("video", tmp_path)
    frames, repeats = written["config"]["sampled_frames"], written["config"]["repeats"]
    medians, raw = written["median_s"], written["raw_s"]
    assert set(medians) == {"cli_wall", "decode_s", "detect_s", "classify_s", "encode_s", "total_s"}
    assert len(raw["cli_wall"]) == len(raw["stages"]) == repeats
    assert medians["cli_wall"] == pytest.approx(statistics.median(raw["cli_wall"]), abs=1e-3)
    for stage in ("decode_s", "detect_s", "classify_s", "encode_s", "total_s"):
        assert medians[stage] == statistics.median(timing[stage] for timing in raw["stages"]) > 0
    assert medians["total_s"] == pytest.approx(sum(medians[s] for s in ("decode_s", "detect_s", "classify_s", "encode_s")),
                                               abs=2e-3)
    assert medians["cli_wall"] > medians["total_s"], "the CLI also starts Python, imports torch and loads the model"
    _is_target(written["targets"]["cli end to end (s)"], medians["cli_wall"], VIDEO_TARGET_S, False, abs=6e-4)  # walls: ms
    assert 0 < written["faces_found"] <= frames
    assert f"over {written['faces_found']} faces in {frames} sampled frames" in written["verdict"]
    photo = written["real_photograph"]  # a real photograph moving in the clip: found in every frame, and flagged
    assert photo["frames_with_face"] == 1.0 and photo["in_distribution"] is False and "unreliable" in photo["verdict"]
    assert photo["ood_score"] > 1, "in_distribution is ood score <= 1"
    assert photo["median_cli_wall_s"] == pytest.approx(statistics.median(photo["cli_wall_s"]), abs=1e-3)
    _is_target(written["targets"]["real-photograph clip: sampled frames with the face"], photo["frames_with_face"],
               PHOTO_FACE_TARGET)


def test_faces_smoke_runs_yunet_and_haar_side_by_side(tmp_path):
    from bench.faces import CLIP_RECALL_TARGET, CROP_LATENCY_TARGET_MS

    written = _run("faces", tmp_path)
    assert written["config"]["threads"] == {"cv2": 2, "torch": 2}
    assert torch.get_num_threads() == 1, "the bench restores the thread count it changed"
    clips = [f"clip {kind}" for kind in ("moving", "scaled", "rotated", "darker")]
    for name in ["astronaut photo", "LFW faces 100 px", "LFW faces 50 px in 640x480", "embedded benchmark 64 px", *clips]:
        assert set(written["recall"][name]) == {"yunet", "haar"} and written["found"][name]["n"] >= 1
        found = written["found"][name]
        assert written["recall"][name] == {d: round(found[d] / found["n"], 4) for d in ("yunet", "haar")}, name
    for name, rates in written["false_positives"].items():
        found = written["found"][name]
        assert rates == {d: round(found[d] / found["n"], 4) for d in ("yunet", "haar")}, name
    assert {name: value["n"] for name, value in written["found"].items()} == written["config"]["images"]
    assert written["recall"]["astronaut photo"] == {"yunet": 1.0, "haar": 1.0}
    assert all(written["recall"][name]["yunet"] == 1.0 for name in clips)
    assert written["recall_astronaut_clips"] == {
        d: round(sum(written["found"][c][d] for c in clips) / sum(written["found"][c]["n"] for c in clips), 4) for d in ("yunet", "haar")}
    assert written["recall"]["embedded benchmark 64 px"]["yunet"] > written["recall"]["embedded benchmark 64 px"]["haar"]
    assert written["false_positives"]["photos (coffee, chelsea)"] == {"yunet": 0.0, "haar": 0.0}
    assert written["confidence"]["haar"] is None and 0.6 <= written["confidence"]["yunet"]["min"] <= 1
    assert set(written["median_ms"]) == set(written["raw_s"]) == {"face 640x480", "small face 640x480"}
    for label, timing in written["raw_s"].items():
        _medians_of_raw(written["median_ms"][label], timing, repeats=2 * 2)  # smoke: 2 frames, 2 repeats
    assert written["ratios"] == pytest.approx({f"{label}: yunet / haar": ms["yunet"] / ms["haar"]
                                               for label, ms in written["median_ms"].items()}, abs=1e-3)
    assert written["found"]["face 640x480"]["yunet"] == written["found"]["face 640x480"]["n"]
    assert set(written["targets"]) == {"yunet recall, astronaut clips", "yunet ms, 640x480 frame with a face"}
    _is_target(written["targets"]["yunet recall, astronaut clips"], written["recall_astronaut_clips"]["yunet"], CLIP_RECALL_TARGET)
    _is_target(written["targets"]["yunet ms, 640x480 frame with a face"], written["median_ms"]["face 640x480"]["yunet"],
               CROP_LATENCY_TARGET_MS, higher_is_better=False)
    # the published table repeats the recall, false positives and medians, row by row
    table = {(row["detector"], row["set"], row["measure"]): row["value"] for row in written["table"]}
    expected = {**{(d, s, "recall"): r[d] for s, r in written["recall"].items() for d in ("yunet", "haar")},
                **{(d, s, "false positives"): r[d] for s, r in written["false_positives"].items() for d in ("yunet", "haar")},
                **{(d, s, "median ms"): r[d] for s, r in written["median_ms"].items() for d in ("yunet", "haar")}}
    assert table == expected and len(written["table"]) == len(expected)


def test_predict_smoke_reports_throughput_per_batch(tmp_path):
    written = _run("predict", tmp_path)
    images = written["config"]["images"]
    rows = written["rows"]
    assert [(r["face_crop"], r["runtime"], r["batch"]) for r in rows] == [
        (True, "torch", 1), (True, "torch", 8), (False, "torch", 1), (False, "torch", 8)]
    for row in rows:
        assert row["model_images_per_s"] == round(images / row["model_s"], 1)
        assert images / row["images_per_s"] == pytest.approx(row["total_s"], abs=6e-4)  # total_s is rounded to the ms
        assert row["decode_s"] + row["face_s"] + row["model_s"] <= row["total_s"] + 2e-3
        assert (row["face_s"] > 0) is row["face_crop"], "the face detector runs only with face_crop"
    assert all(r["in_distribution"] >= 0.8 for r in rows), "held-out benchmark images are in distribution"
    faces = [r for r in rows if r["face_crop"]]
    best = max(faces, key=lambda r: r["images_per_s"])
    assert written["ratios"] == {"batch speed-up (model, torch, faces)": best["model_images_per_s"] / faces[0]["model_images_per_s"]}


def test_int8_smoke_scores_each_int8_form_beside_fp32(tmp_path):
    """Each int8 runtime scored on the same test images as the fp32 model; its drops are fp32 minus int8."""
    written = _run("int8", tmp_path)
    rows = written["metrics"]["pearson"]
    assert set(rows) == {"torch", "onnx-int8", "openvino-int8"} - set(k.split(" · ")[1] for k in written["refused"])
    assert rows["torch"]["precision"] == "fp32" and rows["torch"]["n"] == written["config"]["images"]
    for runtime in set(rows) - {"torch"}:
        assert rows[runtime]["precision"] == "int8" and rows[runtime]["n"] == rows["torch"]["n"]
        assert rows[runtime]["accuracy_drop"] == pytest.approx(rows["torch"]["accuracy"] - rows[runtime]["accuracy"],
                                                               abs=1e-4)


@pytest.mark.slow
def test_residual_mask_smoke_trains_exports_and_times_both_masks(tmp_path, monkeypatch):
    """Block and stage students trained and fine-tuned, their compact networks' costs, and each timed beside the
    teacher: a rerun reuses the finished runs."""
    import bench.residual_mask as residual_mask

    monkeypatch.setattr(residual_mask, "KEEP", tmp_path / "runs" / "bench-residual-mask")
    written = _run("residual-mask", tmp_path / "out")
    block, stage = written["runs"]["kdfs-block"], written["runs"]["kdfs-stage"]
    assert stage["residual_mask"] == "stage" and block["residual_mask"] == "block"
    assert stage["finetuned"]["macs_256"] < block["finetuned"]["macs_256"]  # the narrow stream costs less
    for name in ("kdfs-block", "kdfs-stage"):
        latency = written["latency"]
        _medians_of_raw(latency["median_ms"], latency["raw_s"], repeats=3)
        for runtime, speedup in latency["speedup_vs_same_runtime_teacher"][name].items():
            assert speedup == pytest.approx(latency["median_ms"][f"teacher · {runtime}"]
                                            / latency["median_ms"][f"{name} · {runtime}"], rel=1e-3)
    runs = sorted(p.name for p in (tmp_path / "runs" / "bench-residual-mask-smoke" / "kdfs-stage").iterdir())
    again = _run("residual-mask", tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "runs" / "bench-residual-mask-smoke" / "kdfs-stage").iterdir()) == runs
    assert again["runs"]["kdfs-stage"]["finetuned"]["run"] == stage["finetuned"]["run"]


@pytest.mark.slow  # ~20 s; tests/test_split_stream.py checks the split graph's operators and logits, test_runtimes its runtimes
def test_split_stream_smoke(tmp_path):
    """bench split-stream: the scattering graph has a ScatterND per scattering block, the split one none and a Concat
    per stage; both agree with the trained model; the speed-up is the ratio of the two medians."""
    result = _run("split-stream", tmp_path)
    operators = result["operators"]
    assert operators["pearson · scatter"].get("ScatterND", 0) > 0 and "ScatterND" not in operators["pearson · split"]
    assert operators["pearson · split"]["Concat"] == 4
    assert all(difference <= 1e-3 for difference in result["parity_max_abs_logit"].values())
    medians = result["median_ms"]["32px b1"]
    for runtime in ("onnx", "openvino"):
        row = result["results"]["32px b1"][f"pearson · {runtime}"]
        assert (row["scatter_ms"], row["split_ms"]) == (medians[f"pearson · scatter · {runtime}"],
                                                        medians[f"pearson · split · {runtime}"])
        assert row["split speed-up over scatter"] == pytest.approx(row["scatter_ms"] / row["split_ms"], abs=1e-3)
        assert row["split vs PyTorch teacher"] == pytest.approx(medians["teacher · torch"] / row["split_ms"], abs=1e-3)


def test_residual_mask_mini_runs_the_mini_protocol_s_searches_with_each_mask(tmp_path):
    """bench residual-mask-mini trains what `reproduce pearson-paper --scale mini` trains for KDFS and Pearson, plus
    --residual-mask: the published 140k preset, the mini epochs and size, the shipped teacher."""
    from bench.residual_mask import mini_search
    from core.training.protocols import plan

    for method in ("kdfs", "pearson"):
        planned = plan("pearson-paper", "synthetic:faceswap", seeds=[0], methods=[method], scale="mini")
        search = next(stage for stage in planned.stages if stage.stage == "search")
        teacher = next(stage.given for stage in planned.stages if stage.stage == "teacher")
        for mask in ("block", "stage"):
            args = mini_search(method, mask, tmp_path / method)
            expected = [teacher if a == "{teacher}" else str(tmp_path / method) if a == str(planned.runs_dir) else a
                        for a in search.command]
            assert args == [*expected, "--residual-mask", mask]
            assert args[args.index("--preset") + 1] == "140k" and args[args.index("--epochs") + 1] == "4"
