"""The speed benchmarks of issue 9: ``inference``, ``data``, ``dashboard`` and ``gpu`` (registered in :mod:`core.evaluation.bench`).

Every figure is a ratio of contenders timed round-robin in one process (a slow spell of a
shared machine hits them all alike), or an absolute time against an absolute target
(the dashboard's). Smoke runs use tiny untrained networks at 32 px and run in seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target, timings
from bench.runtimes import runtime_matrix
from core.models.resnet import fold_batch_norms

SKIP_ONNX_ENV = "CORE_BENCH_SKIP_ONNX"  # set to 1: the inference bench leaves out ONNX Runtime (its export and int8 calibration)

INFERENCE_SIZE = 256  # px: the published input size, not the shipped checkpoints' 64 (timing does not depend on the weights)
COMPACT_SPEEDUP_TARGET = 4.0  # compact Pearson vs the ResNet-50 teacher, batch 1, fp32, CPU, PyTorch eager
ONNX_CALIBRATION_IMAGES = 64  # int8 scales for a latency figure: accuracy is the onnx bench's business


def _masked_student(compact: nn.Module, kept: list[list[int]]) -> nn.Module:
    """The masked network a compact student was cut from, with the same logits.

    The kept filters' weights go back to their teacher positions (zeros elsewhere) and the
    sampler's logits keep exactly ``kept``: the masked form that the search trained, which
    computes every filter and zeroes the dropped ones. Shipped students are compact only.
    """
    from core.models.masked import DROP, KEEP, MaskedResNet, block_convs, residual_blocks

    masked = MaskedResNet(compact.arch)
    masked.load_state_dict({k: v for k, v in compact.state_dict().items() if not k.startswith("layer")}, strict=False)
    keep_mask, layers = [], iter(kept)
    with torch.no_grad():
        for (_, full), (_, small) in zip(residual_blocks(masked), residual_blocks(compact), strict=True):
            previous = None
            for position, (conv, bn) in enumerate(block_convs(full)):
                keep = torch.tensor(next(layers), dtype=torch.long)
                source_conv, source_bn = getattr(small, f"conv{position + 1}"), getattr(small, f"bn{position + 1}")
                conv.weight.zero_()
                if previous is None:
                    conv.weight[keep] = source_conv.weight
                else:
                    conv.weight[keep[:, None], previous[None, :]] = source_conv.weight
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name)[keep] = getattr(source_bn, name)
                mask = torch.zeros(conv.out_channels, dtype=torch.bool)
                mask[keep] = True
                keep_mask.append(mask)
                previous = keep
            if full.downsample is not None:
                full.downsample.load_state_dict(small.downsample.state_dict())
        keep_mask = torch.cat(keep_mask)
        masked.sampler.logits[:, DROP] = 0.0
        masked.sampler.logits[:, KEEP] = torch.where(keep_mask, 1.0, -1.0)
    return masked.eval()


def shipped_students(smoke: bool) -> tuple[nn.Module, dict[str, tuple[nn.Module, nn.Module, dict]]]:
    """``(teacher, {method: (masked, compact, header)})``: the shipped ResNet-50s, or tiny untrained ones (smoke)."""
    import core
    from core.models import build_model
    from core.models.masked import KEEP, MaskedResNet
    from core.pruning.surgery import compact_from_masked

    if not smoke:
        teacher = core.load_model(REPO / SHIPPED_RESNET50["teacher"], serve=False)  # as trained: eager, BatchNorm
        students = {}
        for method in ("kdfs", "pearson"):
            compact = core.load_model(REPO / SHIPPED_RESNET50[method], serve=False)
            students[method] = (_masked_student(compact, compact.header["pruning"]["kept"]), compact, compact.header)
        return teacher, students
    torch.manual_seed(0)
    teacher = build_model("resnet-tiny").eval()
    header = {"model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32, "dataset": "synthetic:faceswap",
              "config": {"data": "synthetic:faceswap"}, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    students = {}
    for method, keep_rate in (("kdfs", 0.5), ("pearson", 0.3)):  # random masks at two widths
        masked = MaskedResNet("resnet-tiny")
        masked.load_state_dict(teacher.state_dict(), strict=False)
        with torch.no_grad():
            keep = torch.rand(masked.sampler.logits.shape[0], generator=torch.Generator().manual_seed(len(method))) < keep_rate
            masked.sampler.logits[:, KEEP] = torch.where(keep, 1.0, -1.0)
        compact = compact_from_masked(masked.eval())
        students[method] = (masked.eval(), compact, {**header, "model": {"type": "compact-resnet", "arch": "resnet-tiny",
                                                                         "active_filters": compact.active_filters}})
    return teacher, students


def _onnx_runtimes(compact: nn.Module, header: dict, image_size: int, folder: Path, progress: bool) -> dict[str, nn.Module]:
    """ONNX Runtime fp32 and int8 sessions of ``compact`` exported at ``image_size`` (the checkpoint's own size may differ)."""
    from core.deploy.onnx import deployed_header, load_onnx, write_onnx
    from core.deploy.quantize import quantize_int8, training_data

    header = {**deployed_header(header), "image_size": image_size, "deploy": {"format": "onnx", "precision": "fp32"}}
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    write_onnx(compact, header, image_size, fp32)
    data, data_root = training_data(header)
    quantize_int8(fp32, int8, data, data_root, ONNX_CALIBRATION_IMAGES, progress=progress)
    return {"ONNX fp32": load_onnx(fp32), "ONNX int8": load_onnx(int8)}


@register_benchmark("inference", "CPU latency at 256 px, batch 1 and 32: ResNet-50 teacher vs masked vs compact KDFS/Pearson "
                                 "students (PyTorch eager), and the compact students in ONNX Runtime fp32/int8")
def bench_inference(smoke: bool) -> dict:
    """Side-by-side forward passes (``torch.inference_mode``) of every contender on one random batch.

    ``teacher (channels_last)`` is the teacher given channels_last input, as the compact network
    does for itself in eval: the speed-up of the compact network over it is the part that is
    not just the memory layout. MACs are thop's, at the same input size.
    """
    from core.evaluation.latency import measure_latency
    from core.pruning.flops import profile_model

    size = 32 if smoke else INFERENCE_SIZE
    batches = {1: (3, 1) if smoke else (30, 3), 32: (2, 0) if smoke else (5, 1)}  # batch -> (repeats, warm-up rounds)
    with_onnx = os.environ.get(SKIP_ONNX_ENV, "0") in ("", "0")
    teacher, students = shipped_students(smoke)
    models: dict[str, nn.Module] = {"teacher": teacher, "teacher (channels_last)": _ChannelsLast(teacher),
                                    "teacher (channels_last, BN folded)": _ChannelsLast(fold_batch_norms(teacher))}
    macs = {"teacher": profile_model(teacher, size)["macs"]}
    parity = {}
    check = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory(prefix="core-bench-inference-") as scratch:
        for method, (masked, compact, header) in students.items():
            models[f"{method} masked"], models[f"{method} compact"] = masked, compact
            models[f"{method} compact (BN folded)"] = fold_batch_norms(compact)
            macs[f"{method} compact"] = profile_model(compact, size)["macs"]
            with torch.inference_mode():
                reference = masked(check)
                for name in (f"{method} compact", f"{method} compact (BN folded)"):
                    parity[f"{name} vs masked"] = float((models[name](check) - reference).abs().max())
            if with_onnx:
                folder = Path(scratch) / method
                for runtime, session in _onnx_runtimes(compact, header, size, folder, progress=not smoke).items():
                    models[f"{method} compact · {runtime}"] = session
        raw, medians = {}, {}
        for batch, (repeats, warmup) in batches.items():
            measured = measure_latency(models, size, batch=batch, repeats=repeats, warmup=warmup)
            raw[f"b{batch}"], medians[f"b{batch}"] = timings(measured)
        # the ONNX Runtime student of the serving comparison is the fp32 export made above (one export, not two)
        serving = _serving(teacher, students["pearson"][1], students["pearson"][2], size,
                           Path(scratch) / "pearson" / "fp32.onnx" if with_onnx else None, smoke)
    ratios, targets = {}, {}
    for batch in batches:
        b = medians[f"b{batch}"]
        for method in students:
            speedup = b["teacher"] / b[f"{method} compact"]
            mac_ratio = macs["teacher"] / macs[f"{method} compact"]
            ratios[f"b{batch}: {method}"] = {
                "compact speed-up vs teacher": speedup,
                "compact speed-up vs teacher (channels_last)": b["teacher (channels_last)"] / b[f"{method} compact"],
                "masked speed-up vs teacher": b["teacher"] / b[f"{method} masked"],
                "BN-folded compact speed-up vs BN-folded channels_last teacher":
                    b["teacher (channels_last, BN folded)"] / b[f"{method} compact (BN folded)"],
                "BN folding gain (compact / folded compact)": b[f"{method} compact"] / b[f"{method} compact (BN folded)"],
                "teacher / compact MACs": mac_ratio, "speed-up / MACs ratio": speedup / mac_ratio,
                **{f"ONNX {p} speed-up vs teacher": b["teacher"] / b[f"{method} compact · ONNX {p}"]
                   for p in ("fp32", "int8") if f"{method} compact · ONNX {p}" in b}}
    targets["compact Pearson speed-up vs teacher, b1"] = target(ratios["b1: pearson"]["compact speed-up vs teacher"],
                                                                COMPACT_SPEEDUP_TARGET)
    default = serving["ratios"][serving["threads"][0]]
    targets["served Pearson vs served teacher, b1, default threads"] = target(
        default["served student vs served teacher"], SERVED_SPEEDUP_TARGET)
    if "ONNX Runtime student vs served teacher" in default:
        targets["ONNX Runtime Pearson vs served teacher, b1, default threads"] = target(
            default["ONNX Runtime student vs served teacher"], ONNX_SPEEDUP_TARGET)
    b1 = ratios["b1: pearson"]
    summary = (f"inference: {size} px CPU fp32, compact Pearson {b1['compact speed-up vs teacher']:.2f}x faster than the "
               f"teacher at b1 (target {COMPACT_SPEEDUP_TARGET:g}x; {b1['compact speed-up vs teacher (channels_last)']:.2f}x vs "
               f"a channels_last teacher; {b1['teacher / compact MACs']:.1f}x fewer MACs), "
               f"{ratios['b32: pearson']['compact speed-up vs teacher']:.2f}x at b32; KDFS "
               f"{ratios['b1: kdfs']['compact speed-up vs teacher']:.2f}x / {ratios['b32: kdfs']['compact speed-up vs teacher']:.2f}x"
               + (f"; ONNX int8 Pearson {b1['ONNX int8 speed-up vs teacher']:.1f}x at b1" if with_onnx else "; ONNX skipped")
               + "; as served (core.load_model) at b1: " + "; ".join(
                   f"{threads}: student {r['served student vs served teacher']:.2f}x the served teacher, "
                   f"{r['served student vs eager teacher']:.2f}x the eager one"
                   + (f", ONNX Runtime {r['ONNX Runtime student vs served teacher']:.2f}x" if "ONNX Runtime student vs served teacher" in r
                      else "") + f", round-to 8 {r['round-to 8 vs served student']:.2f}x the served student"
                   for threads, r in serving["ratios"].items()))
    config = {"image_size": size, "batches": {f"b{b}": {"repeats": r, "warmup_rounds": w} for b, (r, w) in batches.items()},
              "precision": "fp32", "device": "cpu", "mode": "torch.inference_mode, eval", "onnx": with_onnx,
              "onnx_int8_calibration_images": ONNX_CALIBRATION_IMAGES if with_onnx else None,
              "models": "tiny untrained resnet-tiny, random masks" if smoke else SHIPPED_RESNET50,
              "masked": "rebuilt from the compact student and its header's pruning.kept (same logits: see parity)"}
    # every serving runtime side by side (bench/runtimes.py): the smoke run, or one without ONNX, times PyTorch alone
    matrix = runtime_matrix(smoke, runtimes=None if with_onnx and not smoke else ("torch",), progress=not smoke)
    targets.update(matrix.pop("targets"))
    if matrix["best_at_256px_b1"] is not None and not smoke:
        best = matrix["best_at_256px_b1"]
        summary += (f"; best runtime ({best['runtime']}, round-to {best['round_to']}): Pearson "
                    f"{best['vs PyTorch served teacher']:.2f}x the PyTorch served teacher")
        pick = matrix["auto"]["256px"]
        summary += (f"; as auto serves it ({pick['chosen']['runtime']}, round-to {pick['chosen']['round_to']}): "
                    f"{pick['speedup']:.2f}x ({pick['range'][0]:.2f}-{pick['range'][1]:.2f}x)")
    return {"config": config, "raw_s": raw, "median_ms": medians, "macs": macs, "parity_max_abs_logit": parity,
            "ratios": ratios, "serving": serving, "runtimes": matrix, "targets": targets, "summary": summary}


SERVED_SPEEDUP_TARGET = 5.0  # issue 21: the compact Pearson student as core.load_model serves it vs the teacher, b1
ONNX_SPEEDUP_TARGET = 8.0  # the same student in ONNX Runtime


def _serving(teacher: nn.Module, compact: nn.Module, header: dict, size: int, onnx_path: Path | None,
             smoke: bool) -> dict:
    """Batch 1 as a user gets it from ``core.load_model``: the served student (BatchNorm folded, channels_last) against
    the served teacher and the plain eager one (NCHW, BatchNorm), at torch's default thread count and at 1 thread;
    with the student padded to multiples of 8 filters (``export --round-to 8``) and in ONNX Runtime (fp32)."""
    from core.deploy.onnx import load_onnx
    from core.evaluation.latency import measure_latency
    from core.models.loading import served
    from core.pruning.surgery import pad_compact

    if not hasattr(teacher, "header"):  # the smoke run's untrained networks
        teacher.header = {**header, "model": {"type": "resnet", "arch": compact.arch}}
    compact.header = header
    padded = pad_compact(compact, 8)
    padded.header = {**header, "model": {**header["model"], "active_filters": padded.active_filters}}
    default_threads = torch.get_num_threads()
    repeats, warmup = (3, 1) if smoke else (30, 3)
    medians, raw, ratios, thread_counts = {}, {}, {}, []
    for threads in dict.fromkeys((default_threads, 1)):
        key = f"{threads} threads"
        thread_counts.append(key)
        contenders = {"eager teacher": teacher, "served teacher": served(teacher), "served student": served(compact),
                      "served student, round-to 8": served(padded)}
        if onnx_path is not None:
            contenders["ONNX Runtime student"] = load_onnx(onnx_path, threads=threads)
        with torch.inference_mode():
            measured = measure_latency(contenders, size, batch=1, repeats=repeats, warmup=warmup, threads=threads)
        raw[key], medians[key] = timings(measured)
        m = medians[key]
        ratios[key] = {"served student vs served teacher": m["served teacher"] / m["served student"],
                       "served student vs eager teacher": m["eager teacher"] / m["served student"],
                       "served teacher vs eager teacher": m["eager teacher"] / m["served teacher"],
                       "round-to 8 vs served student": m["served student"] / m["served student, round-to 8"]}
        if onnx_path is not None:
            ratios[key]["ONNX Runtime student vs served teacher"] = m["served teacher"] / m["ONNX Runtime student"]
            ratios[key]["ONNX Runtime student vs eager teacher"] = m["eager teacher"] / m["ONNX Runtime student"]
    return {"threads": thread_counts, "default_threads": default_threads, "batch": 1, "image_size": size,
            "repeats": repeats, "round_to_8_filters": {"before": sum(compact.active_filters), "after": sum(padded.active_filters)},
            "median_ms": medians, "raw_s": raw, "ratios": ratios}


class _ChannelsLast(nn.Module):
    """``model`` fed channels_last input (its weights stay as they are)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=torch.channels_last))
