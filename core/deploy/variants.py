"""A checkpoint's deployed versions (ONNX fp32, ONNX int8), exported once into the cache, and how they compare.

Exports live in ``<cache>/deploy/v<N>-<SHA-256 of the checkpoint>/`` with their export
record (sizes, parity, calibration) next to them as JSON, so the dashboard and the
``onnx`` benchmark export a checkpoint once, and a replaced checkpoint file gets new
exports. :func:`compare_runtimes` lays PyTorch fp32, ONNX fp32 and ONNX int8 side by side:
file size, CPU latency (every model round-robin in one process) and test metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save

from core.checkpoint import resolve_checkpoint
from core.deploy.export import export
from core.deploy.quantize import CALIBRATION_IMAGES, training_data
from core.evaluation.evaluate import evaluate, file_digest
from core.evaluation.latency import measure_latency
from core.io import DiskCache, load_json, save_json
from core.models.loading import load_model
from core.pruning.surgery import compact_of

# compare_runtimes' exports, each with its export record (.json); version 4: split residual streams
# (core.models.split_stream)
DEPLOY_CACHE = DiskCache("deploy", 4, ".onnx")
# runtime label -> export format (None: the checkpoint itself, run by PyTorch)
RUNTIMES: dict[str, str | None] = {"PyTorch fp32": None, "ONNX fp32": "onnx", "ONNX int8": "onnx-int8"}
DEPLOYED_RUNTIMES = [label for label, fmt in RUNTIMES.items() if fmt]


def deployed(checkpoint: str | os.PathLike, fmt: str, calibration_images: int = CALIBRATION_IMAGES,
             progress: bool = True) -> dict:
    """The export record of ``checkpoint`` as ``fmt`` (``onnx`` or ``onnx-int8``), exporting it on first use.

    The record is :func:`core.deploy.export.export`'s result (``path``, ``bytes``,
    ``max_abs_diff``, ...) plus the source checkpoint and its SHA-256.
    """

    if fmt not in ("onnx", "onnx-int8"):
        raise ValueError(f"deployed versions are onnx or onnx-int8, not {fmt!r}")
    source = resolve_checkpoint(checkpoint)
    digest = file_digest(source)
    name = "fp32" if fmt == "onnx" else f"int8-calibrated-{calibration_images}"
    out = DEPLOY_CACHE.path({"checkpoint": digest, "format": fmt, "calibration_images": calibration_images}, prefix=name)
    record = out.with_suffix(".json")
    cached = DEPLOY_CACHE.read(record, load_json) if out.is_file() else None
    if isinstance(cached, dict):
        return {**cached, "path": str(out)}
    if fmt == "onnx":
        result = export(source, fmt, out, progress=progress)
    else:  # quantise the cached fp32 export
        fp32 = deployed(source, "onnx", progress=progress)["path"]
        result = export(source, fmt, out, calibration_images=calibration_images, progress=progress, fp32_onnx=fp32)
    result = {**result, "source": str(source), "source_sha256": digest}
    DEPLOY_CACHE.write(record, lambda tmp: save_json(tmp, result))
    return result


def compare_runtimes(checkpoints: dict[str, str | os.PathLike], data: str | None = None, split: str = "test",
                     calibration_images: int = CALIBRATION_IMAGES, repeats: int = 30, batches: tuple[int, ...] = (1, 32),
                     progress: bool = True) -> dict:
    """PyTorch fp32, ONNX fp32 and ONNX int8 of each checkpoint, side by side.

    Returns ``{"rows", "timings"}``: one row per (checkpoint, runtime) with the file size
    (PyTorch: the fp32 safetensors of its deployable network), median CPU latency per batch
    size, the speed-up over the same checkpoint in PyTorch, and accuracy / AUC / EER on
    ``split`` of ``data`` (default: each checkpoint's own dataset); ``timings`` holds the raw
    seconds. All models of one image size are timed round-robin in one process
    (:func:`core.evaluation.latency.measure_latency`), so their ratios survive a busy machine.
    """


    rows, models = {}, {}
    for name, checkpoint in checkpoints.items():
        source = resolve_checkpoint(checkpoint)
        network, header = compact_of(load_model(source))
        own_data, data_root = training_data(header)
        state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
                 for k, v in network.state_dict().items()}
        files = {"PyTorch fp32": (source, len(save(state)), 0.0)}
        for label in DEPLOYED_RUNTIMES:
            record = deployed(source, RUNTIMES[label], calibration_images, progress)
            files[label] = (Path(record["path"]), record["bytes"], record["max_abs_diff"])
        for label, (path, size, difference) in files.items():
            key = f"{name} · {label}"
            models[key] = network if label == "PyTorch fp32" else load_model(path)
            metrics = evaluate(path, data or own_data, split, data_root if data is None else None, progress=progress).metrics()
            rows[key] = {"checkpoint": name, "runtime": label, "image_size": header["image_size"], "bytes": size,
                         "size_mb": size / 2**20, "max_abs_diff": difference, "accuracy": metrics["accuracy"],
                         "auc": metrics["auc"], "eer": metrics["eer"], "n": metrics["n"]}
    timings: dict[str, dict] = {}
    for size in sorted({row["image_size"] for row in rows.values()}):
        group = {key: models[key] for key, row in rows.items() if row["image_size"] == size}
        for batch in batches:
            measured = measure_latency(group, size, batch=batch, repeats=repeats if batch == 1 else max(5, repeats // 3))
            for key, timing in measured.items():
                rows[key][f"latency_b{batch}_ms"] = 1000 * timing["median_s"]
                timings.setdefault(f"b{batch}", {})[key] = [round(s, 6) for s in timing["raw_s"]]
    for row in rows.values():
        torch_row = rows[f"{row['checkpoint']} · PyTorch fp32"]
        row["size_ratio"] = row["bytes"] / torch_row["bytes"]
        for batch in batches:
            row[f"speedup_b{batch}"] = torch_row[f"latency_b{batch}_ms"] / row[f"latency_b{batch}_ms"]
    return {"rows": list(rows.values()), "timings": timings}


def markdown_table(rows: list[dict], batches: tuple[int, ...] = (1, 32)) -> str:
    """The comparison as a Markdown table (size, latency and speed-up per batch size, accuracy, AUC)."""
    columns = (["checkpoint", "runtime", "size (MB)", "size vs fp32"] + [f"latency b{b} (ms)" for b in batches]
               + [f"speed-up b{b}" for b in batches] + ["accuracy", "AUC", "max |Δlogit|"])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        difference = "–" if row["runtime"] == "PyTorch fp32" else f"{row['max_abs_diff']:.2e}"
        cells = ([row["checkpoint"], row["runtime"], f"{row['size_mb']:.2f}", f"{row['size_ratio']:.1%}"]
                 + [f"{row[f'latency_b{b}_ms']:.2f}" for b in batches] + [f"{row[f'speedup_b{b}']:.2f}×" for b in batches]
                 + [f"{row['accuracy']:.4f}", f"{row['auc']:.4f}", difference])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
