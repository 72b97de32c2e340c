"""``residual-mask``: the papers' per-block masks beside the stage-shared residual mask, trained, measured and served.

Each contender is the command a user runs: ``train --method M --residual-mask R`` (the search) then ``finetune`` of its
last checkpoint, on the embedded benchmark at the ``full`` preset with the epochs cut (the config says how far). Each
fine-tuned student is exported as its compact network, profiled (MACs at 64 and 256 px), and timed at 256 px, batch
1, default threads, round-robin beside the shipped teacher in every exact fp32 runtime (PyTorch served, ONNX Runtime,
OpenVINO fp32): the speed-up over the same runtime's teacher, and as a share of the MACs ratio.

Targets (issue 31, the stage-shared mask): within 2 points of the teacher's test accuracy, >= 8x fewer MACs, and
served >= 8x faster than the same runtime's teacher, all by one student.

``residual-mask-mini`` is the same comparison at the papers' published settings on the mini budget, the commands
``reproduce pearson-paper --scale mini`` runs for KDFS and Pearson (``--preset 140k --follow code``, 4 of the 80
epochs, 64 px, the shipped teacher, no fine-tune: the paper fine-tunes neither on 140k), each with ``--residual-mask
block`` and ``stage``; the searched students are measured and served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target, timings
from bench.runtimes import at_size

RUNS = {  # name -> (method, residual mask, extra flags of the search)
    "kdfs-block": ("kdfs", "block", ()),
    "kdfs-stage": ("kdfs", "stage", ()),
    "kdfs-stage-0.9": ("kdfs", "stage", ("--target-rate", "0.9")),
    "pearson-block": ("pearson", "block", ()),
    "pearson-stage": ("pearson", "stage", ()),
}
MINI_RUNS = {name: RUNS[name] for name in ("kdfs-block", "kdfs-stage", "pearson-block", "pearson-stage")}
SEARCH_EPOCHS, FINETUNE_EPOCHS = 4, 3
FP32_RUNTIMES = ("torch", "onnx", "openvino")
ACCURACY_POINTS, MACS_RATIO, SPEEDUP = 0.02, 8.0, 8.0  # the stage mask's targets (issue 31)
KEEP = REPO / "runs" / "bench-residual-mask"  # the trained runs and compact students, kept for a look (git-ignored)
KEEP_MINI = REPO / "runs" / "bench-residual-mask-mini"


def _cli(*args: str) -> dict:
    """``python -m core ARGS --json --quiet`` in a child process (as a user runs it); its JSON line."""
    done = subprocess.run([sys.executable, "-m", "core", *args, "--json", "--quiet"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python -m core {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _finished(folder: Path, finetune: bool) -> dict | None:
    """A finished run in ``folder`` (the fine-tune, or the search), as the CLI's JSON gives it; a rerun of the bench
    reuses it instead of training again."""
    from core.runs import Run

    for run_dir in sorted(folder.glob("*/status.json"), reverse=True):
        run = Run.open(run_dir.parent)
        status = run.status()
        if status.get("status") != "finished" or (run.config().get("method") == "finetune") != finetune:
            continue
        test = status.get("test", {})
        return {"run_dir": str(run.dir), "checkpoint": str(run.best_checkpoint), "test_accuracy": test.get("accuracy"),
                "test_auc": test.get("auc")}
    return None


def _train(name: str, smoke: bool, runs: Path, mini: bool = False) -> tuple[dict, list[str]]:
    """The search and its fine-tune (each reused when a finished one is in ``runs/<name>``); ``mini``: the search at
    the published settings on the mini budget alone, served as it is."""
    method, mask, extra = RUNS[name]
    if mini and not smoke:
        args = mini_search(method, mask, runs / name)
        search = _finished(runs / name, False) or _cli(*args)
        return {"search": search}, ["python -m core " + " ".join(args)]
    if smoke:
        common = ["--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32", "--batch-size", "8",
                  "--num-workers", "0", "--max-train-samples", "32", "--max-eval-samples", "24", "--epochs", "1"]
        teacher = _finished(runs / "teacher", False) or _cli("train", "--method", "teacher", *common, "--runs-dir",
                                                              str(runs / "teacher"))
        search_args = ["train", "--method", method, "--teacher", teacher["checkpoint"], *common, "--residual-mask", mask,
                       *extra]
        finetune_args = ["finetune", "<search>", "--epochs", "1", "--lr", "0.01", "--max-train-samples", "32",
                         "--max-eval-samples", "24", "--batch-size", "8", "--num-workers", "0"]
    else:
        search_args = ["train", "--method", method, "--data", "synthetic:faceswap", "--preset", "full",
                       "--epochs", str(SEARCH_EPOCHS), "--residual-mask", mask, *extra]
        finetune_args = ["finetune", "<search>", "--preset", "full", "--epochs", str(FINETUNE_EPOCHS)]
    search = _finished(runs / name, False) or _cli(*search_args, "--runs-dir", str(runs / name))
    last = str(Path(search["run_dir"]) / "last.safetensors")
    finetuned = _finished(runs / name, True) or _cli(*[last if arg == "<search>" else arg for arg in finetune_args],
                                                     "--runs-dir", str(runs / name))
    commands = ["python -m core " + " ".join(search_args), "python -m core " + " ".join(finetune_args)]
    return {"search": search, "finetuned": finetuned}, commands


def mini_search(method: str, mask: str, runs_dir: Path) -> list[str]:
    """The arguments of ``python -m core`` for ``reproduce pearson-paper --scale mini``'s search of ``method`` on the
    embedded benchmark (seed 0, its teacher), with ``--residual-mask mask``: read from the protocol's plan, so the
    two cannot drift apart."""
    from core.training.protocols import plan
    from core.training.requests import command_line

    planned = plan("pearson-paper", "synthetic:faceswap", seeds=[0], methods=[method], scale="mini", runs_dir=runs_dir,
                   extra={"train": {"residual_mask": mask}})
    if any(stage.stage == "finetune" for stage in planned.stages):
        raise RuntimeError("the mini protocol fine-tunes this method now: residual-mask-mini must serve the fine-tune")
    teacher = next(stage.given for stage in planned.stages if stage.stage == "teacher")
    search = next(stage for stage in planned.stages if stage.stage == "search")
    return command_line("train", {**search.values, "teacher": teacher})


def _record(result: dict, compact: Path, teacher_macs: dict) -> dict:
    """A run's test numbers and its compact network's cost (64 px, as trained, and 256 px, the published size)."""
    from core import load_model
    from core.evaluation.layer_profile import layer_profile
    from core.pruning.flops import profile_model

    model = load_model(compact, serve=False)
    cost = profile_model(model, 64)
    macs_256 = profile_model(model, 256)["macs"]
    by_category = layer_profile(load_model(compact, runtime="torch"), 256, repeats=1, warmup=0)["by_category"]
    return {"run": Path(result["run_dir"]).name, "test_accuracy": result["test_accuracy"], "test_auc": result["test_auc"],
            "params": cost["params"], "macs": cost["macs"], "macs_reduction": 1 - cost["macs"] / teacher_macs["64"],
            "macs_256": macs_256, "macs_reduction_256": 1 - macs_256 / teacher_macs["256"],
            "stem_and_downsample_share_256": (by_category["stem"]["macs"] + by_category["downsample"]["macs"]) / macs_256}


def _latency(students: dict[str, Path], teacher: Path, size: int, repeats: int, scratch: Path) -> dict:
    """Every student and the teacher in each exact fp32 runtime, round-robin at ``size`` px, batch 1."""
    from core.deploy.runtimes import ParityError, RuntimeUnavailable, available_runtimes, load_runtime
    from core.evaluation.latency import measure_latency

    checkpoints = {"teacher": at_size(teacher, size, scratch)}
    checkpoints.update({name: at_size(path, size, scratch) for name, path in students.items()})
    available = available_runtimes()
    forms, refused = {}, {}
    for runtime in (r for r in FP32_RUNTIMES if available[r] is None):
        for name, path in checkpoints.items():
            try:
                forms[f"{name} · {runtime}"] = load_runtime(path, runtime)
            except (RuntimeUnavailable, ParityError, ValueError, RuntimeError) as error:
                refused[f"{name} · {runtime}"] = f"{type(error).__name__}: {error}"[:300]
    raw, medians = timings(measure_latency(forms, size, batch=1, repeats=repeats, warmup=2, settle=1))
    speedups = {}
    for label, ms in medians.items():
        name, runtime = label.split(" · ")
        teacher_ms = medians.get(f"teacher · {runtime}")
        if name != "teacher" and teacher_ms:
            speedups.setdefault(name, {})[runtime] = round(teacher_ms / ms, 3)
    return {"raw_s": raw, "median_ms": medians, "speedup_vs_same_runtime_teacher": speedups, "refused": refused}


@register_benchmark("residual-mask", "per-block masks vs the stage-shared residual mask (KDFS, Pearson): accuracy, "
                                     "MACs and the served speed-up in every exact fp32 runtime, CPU")
def bench_residual_mask(smoke: bool) -> dict:
    return _compare(smoke, mini=False)


@register_benchmark("residual-mask-mini", "per-block masks vs the stage-shared residual mask at the published settings "
                                          "(140k, mini budget: reproduce --scale mini's searches), CPU")
def bench_residual_mask_mini(smoke: bool) -> dict:
    return _compare(smoke, mini=True)


def _compare(smoke: bool, mini: bool) -> dict:
    from core import load_model
    from core.checkpoint import read_header
    from core.pruning.flops import profile_model

    bench = "residual-mask-mini" if mini else "residual-mask"
    names = ("kdfs-block", "kdfs-stage") if smoke else tuple(MINI_RUNS if mini else RUNS)
    keep = KEEP_MINI if mini else KEEP
    runs = keep.with_name(keep.name + "-smoke") if smoke else keep
    runs.mkdir(parents=True, exist_ok=True)
    records, commands = {}, {}
    for name in names:
        print(f"{bench}: {name}", flush=True)
        result, commands[name] = _train(name, smoke, runs, mini)
        if not records:  # the teacher they distil: the shipped one (the default), the smoke's own tiny one
            teacher = Path(read_header(result["search"]["checkpoint"])["config"]["teacher"]) if smoke \
                else REPO / SHIPPED_RESNET50["teacher"]
            teacher_net = load_model(teacher, serve=False)
            teacher_macs = {str(size): profile_model(teacher_net, size)["macs"] for size in (64, 256)}
        records[name] = {"method": RUNS[name][0], "residual_mask": RUNS[name][1], "commands": commands[name]}
        for part in result:
            compact = runs / f"{name}-{part}.safetensors"
            _cli("export", result[part]["checkpoint"], "--format", "safetensors", "--out", str(compact))
            records[name][part] = _record(result[part], compact, teacher_macs)
        records[name]["served"] = served = "finetuned" if "finetuned" in result else "search"
        records[name]["compact"] = _shown(runs / f"{name}-{served}.safetensors")
    header = read_header(teacher)
    size = 32 if smoke else 256
    scratch = runs / "sized"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    served = {name: runs / f"{name}-{record['served']}.safetensors" for name, record in records.items()}
    latency = _latency(served, teacher, size, 3 if smoke else 15, scratch)
    teacher_macs_timed = profile_model(teacher_net, size)["macs"]
    teacher_accuracy = header.get("metrics", {}).get("test_accuracy")
    targets, rows = {}, {}
    for name, record in records.items():
        student = record[record["served"]]
        macs_ratio = teacher_macs_timed / student["macs_256"] if not smoke else None
        speedups = latency["speedup_vs_same_runtime_teacher"].get(name, {})
        rows[name] = {"test_accuracy": student["test_accuracy"], "test_auc": student["test_auc"], "macs_ratio_256":
                      round(macs_ratio, 3) if macs_ratio else None, "served_speedup_same_runtime": speedups,
                      "share_of_macs_ratio": {r: round(s / macs_ratio, 3) for r, s in speedups.items()} if macs_ratio else {}}
        if not smoke and record["residual_mask"] == "stage" and teacher_accuracy is not None:
            best = max(speedups.values(), default=0.0)
            targets[f"{name}: within {ACCURACY_POINTS * 100:.0f} points of the teacher"] = target(
                teacher_accuracy - student["test_accuracy"], ACCURACY_POINTS, higher_is_better=False)
            targets[f"{name}: MACs ratio at 256 px"] = target(macs_ratio, MACS_RATIO)
            targets[f"{name}: served vs the same runtime's teacher (best fp32 runtime), 256 px b1"] = target(best, SPEEDUP)
    all_three = [name for name in records if records[name]["residual_mask"] == "stage" and all(
        targets[key]["met"] for key in targets if key.startswith(f"{name}:"))]
    summary = f"{bench}: " + "; ".join(
        f"{name}: test acc {row['test_accuracy']:.3f}"
        + (f", {row['macs_ratio_256']:.2f}x fewer MACs" if row["macs_ratio_256"] else "")
        + (", served " + "/".join(f"{s:.2f}x ({r})" for r, s in row["served_speedup_same_runtime"].items())
           if row["served_speedup_same_runtime"] else "")
        for name, row in rows.items())
    if not smoke:
        summary += (f"; teacher test acc {teacher_accuracy:.3f}; all three stage targets met by: "
                    f"{', '.join(all_three) or 'none'}")
    return {"config": {"data": "synthetic:faceswap (embedded benchmark, 64 px; 1,680 train / 240 val / 480 test)"
                       if not smoke else "synthetic, resnet-tiny, 32 px, 32 training images (smoke)",
                       "teacher": _shown(teacher),
                       "reuse": f"a rerun reuses the finished runs in {_shown(runs)}/ (git-ignored)",
                       "preset": ("140k (published, --follow code) on the mini budget: reproduce pearson-paper --scale "
                                  "mini's searches (see commands), the shipped teacher, no fine-tune") if mini else
                                 f"full, search cut to {SEARCH_EPOCHS} epochs, fine-tune to {FINETUNE_EPOCHS}",
                       "seed": 0, "timed": f"{size} px, batch 1, {torch.get_num_threads()} threads, fp32, round-robin",
                       "note": "one seed each, 480 test images: about 1.5 points of accuracy is noise"},
            "teacher": {"test_accuracy": teacher_accuracy, "test_auc": header.get("metrics", {}).get("test_auc"),
                        "params": sum(p.numel() for p in teacher_net.parameters()), "macs": teacher_macs["64"],
                        "macs_256": teacher_macs["256"]},
            "runs": records, "ratios": rows, "latency": latency, "targets": targets,
            "stage_targets_all_met_by": all_three, "summary": summary}
