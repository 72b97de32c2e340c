"""Deployed runtimes (PyTorch fp32, ONNX fp32, ONNX int8) and lottery tickets on a dense CPU kernel."""

from __future__ import annotations

from pathlib import Path

import torch

from bench import SHIPPED_RESNET50, register_benchmark, target, timings


@register_benchmark("sparse", "unstructured (lottery-ticket) sparsity: dense network vs masked ticket vs zero-filled export, CPU")
def bench_sparse(smoke: bool) -> dict:
    """Global magnitude masks at the target sparsity on each architecture, timed against the dense network.

    The timing of a dense kernel does not depend on the weights' values, so the masks come
    from the initial weights (the same global magnitude rule IMP uses) and no trained
    ticket is needed.
    """
    from core.evaluation.latency import measure_latency
    from core.models.ticket import Ticket
    from core.pruning.magnitude import magnitude_masks

    archs = ["mesonet"] if smoke else ["mesonet", "cnn5", "resnet18"]
    sizes = [32] if smoke else [64, 256]
    sparsity, repeats = 0.8, 5 if smoke else 30
    config = {"archs": archs, "image_sizes": sizes, "sparsity": sparsity, "batch": 1, "repeats": repeats}
    raw, medians, ratios = {}, {}, {}
    torch.manual_seed(0)
    for arch in archs:
        ticket = Ticket(arch)
        weights = dict(ticket.net.named_parameters())
        ticket.set_masks(magnitude_masks({n: weights[n].detach() for n in ticket.names}, ticket.masks(), sparsity))
        dense = Ticket(arch).net.eval()
        contenders = {"dense": dense, "ticket (masked)": ticket.eval(), "ticket (zeros)": ticket.sparse_network()}
        for size in sizes:
            key = f"{arch}@{size}"
            raw[key], medians[key] = timings(measure_latency(contenders, size, batch=1, repeats=repeats))
            ratios[key] = {"dense / zeros": medians[key]["dense"] / medians[key]["ticket (zeros)"],
                           "dense / masked": medians[key]["dense"] / medians[key]["ticket (masked)"],
                           "nonzero params": ticket.counts()["surviving_params"], "dense params": ticket.counts()["dense_params"]}
    worst = max(abs(1 - r["dense / zeros"]) for r in ratios.values())
    summary = (f"sparse: at {sparsity:.0%} sparsity the zero-filled ticket runs at "
               + ", ".join(f"{k} {r['dense / zeros']:.2f}x" for k, r in ratios.items())
               + f" the dense speed (largest deviation from 1x: {worst:.0%}); the masked ticket at "
               + ", ".join(f"{r['dense / masked']:.2f}x" for r in ratios.values()))
    return {"config": config, "raw_s": raw, "median_ms": medians, "ratios": ratios, "targets": {}, "summary": summary}


INT8_SIZE_TARGET = 0.30  # int8 file size as a fraction of the fp32 ONNX
ONNX_PARITY_TARGET = 1e-4  # max |logit difference| of the fp32 ONNX from PyTorch


def smoke_checkpoint(folder: Path) -> Path:
    """An untrained ``resnet-tiny`` at 32 px that names ``synthetic:faceswap`` as its data (seeded: same bytes each time)."""
    from core.checkpoint import save_checkpoint
    from core.models import build_model

    torch.manual_seed(0)
    path = folder / "smoke-resnet-tiny.safetensors"
    header = {"model": {"type": "resnet", "arch": "resnet-tiny"}, "method": "teacher", "image_size": 32,
              "dataset": "synthetic:faceswap", "config": {"data": "synthetic:faceswap"},
              "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_checkpoint(path, build_model("resnet-tiny").eval(), header)
    return path


@register_benchmark("onnx", "deployment: PyTorch fp32 vs ONNX fp32 vs ONNX int8 (size, CPU latency b1/b32, test accuracy)")
def bench_onnx(smoke: bool) -> dict:
    """The shipped ResNet-50 teacher and its KDFS / Pearson students in the three runtimes.

    Exports go to the cache (once per checkpoint); the int8 versions are calibrated on 300
    training images of ``synthetic:faceswap`` (smoke: an untrained tiny network, 16 images).
    """
    import tempfile

    from core.deploy.variants import compare_runtimes, markdown_table

    calibration, repeats = (16, 5) if smoke else (300, 30)
    with tempfile.TemporaryDirectory(prefix="core-bench-onnx-") as scratch:
        checkpoints = {"tiny": smoke_checkpoint(Path(scratch))} if smoke else SHIPPED_RESNET50
        compared = compare_runtimes(checkpoints, calibration_images=calibration, repeats=repeats, progress=not smoke)
    rows = compared["rows"]
    by = {(row["checkpoint"], row["runtime"]): row for row in rows}
    ratios, targets = {}, {}
    for name in checkpoints:
        fp32, int8, eager = by[name, "ONNX fp32"], by[name, "ONNX int8"], by[name, "PyTorch fp32"]
        ratios[name] = {"int8 size / fp32 ONNX size": int8["bytes"] / fp32["bytes"],
                        "ONNX fp32 speed-up b1": fp32["speedup_b1"], "ONNX int8 speed-up b1": int8["speedup_b1"],
                        "ONNX fp32 speed-up b32": fp32["speedup_b32"], "ONNX int8 speed-up b32": int8["speedup_b32"],
                        "int8 accuracy change": int8["accuracy"] - eager["accuracy"], "int8 AUC change": int8["auc"] - eager["auc"]}
        targets[f"{name}: int8 size ratio"] = target(ratios[name]["int8 size / fp32 ONNX size"], INT8_SIZE_TARGET, False)
        parity = fp32["max_abs_diff"]  # not target(): its 4-digit rounding would print 0
        targets[f"{name}: ONNX fp32 parity"] = {"value": parity, "target": ONNX_PARITY_TARGET, "met": parity <= ONNX_PARITY_TARGET}
    summary = "onnx: " + "; ".join(
        f"{name} int8 {r['int8 size / fp32 ONNX size']:.1%} of fp32 size, b1 speed-up vs PyTorch ONNX fp32 "
        f"{r['ONNX fp32 speed-up b1']:.2f}x / int8 {r['ONNX int8 speed-up b1']:.2f}x, int8 accuracy "
        f"{100 * r['int8 accuracy change']:+.1f} pt" for name, r in ratios.items())
    config = {"checkpoints": {name: str(path) for name, path in checkpoints.items()}, "calibration_images": calibration,
              "repeats_b1": repeats, "batches": [1, 32], "split": "test"}
    medians = {f"b{batch}": {f"{row['checkpoint']} · {row['runtime']}": round(row[f"latency_b{batch}_ms"], 4) for row in rows}
               for batch in (1, 32)}
    return {"config": config, "raw_s": compared["timings"], "median_ms": medians, "ratios": ratios, "targets": targets,
            "rows": rows, "table": markdown_table(rows), "summary": summary}
