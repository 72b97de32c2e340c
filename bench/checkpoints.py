"""The shipped checkpoints' recorded quality and cost, and how much of their test split their ood model accepts."""

from __future__ import annotations

import re

from bench import register_benchmark

OOD_BATCH = 64


def _trained_on(run_id: str | None) -> str | None:
    """``2026-11-21 08:41`` from a run id ``20261121-084149-...``: when the shipped run was started."""
    found = re.match(r"(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})", run_id or "")
    return f"{found[1]}-{found[2]}-{found[3]} {found[4]}:{found[5]}" if found else None


def _kept_filters(pruning: dict) -> dict:
    """A pruned student's kept filters: in all, and as the share of each stage's ``conv1``/``conv2``/``conv3`` filters
    (``layer3.conv1``: the conv1 of every block of stage 3)."""
    kept, width = {}, {}
    for layer, active, channels in zip(pruning["layers"], pruning["active_filters"], pruning["channels"], strict=True):
        stage, _, conv = layer.split(".")
        kept[f"{stage}.{conv}"] = kept.get(f"{stage}.{conv}", 0) + active
        width[f"{stage}.{conv}"] = width.get(f"{stage}.{conv}", 0) + channels
    return {"kept_filters": sum(pruning["active_filters"]), "maskable_filters": sum(pruning["channels"]),
            "kept_share": {group: kept[group] / width[group] for group in kept}}


def _test_in_distribution(path, ood, test_images: int) -> dict:
    """The share of the first ``test_images`` test images of the checkpoint's ``synthetic:<source>`` data that its ood
    model scores in distribution (rendered as the benchmark holds them, without generating it)."""
    import torch
    from PIL import Image

    import core
    from core.data.synthetic import SynthConfig, render_split_image
    from core.evaluation.ood import Scorer

    model = core.load_model(path, serve=False)
    dataset = model.header.get("dataset") or ""
    if not dataset.startswith("synthetic:"):
        return {}
    source = dataset.split(":", 1)[1]
    scorer, scores = Scorer(model, ood), []
    for start in range(0, test_images, OOD_BATCH):
        batch = torch.stack([model.preprocess(Image.fromarray(render_split_image(SynthConfig(), source, "test", index)[0]))
                             for index in range(start, min(start + OOD_BATCH, test_images))])
        scores.append(scorer(batch)[1])
    scores = torch.cat(scores)
    return {"n_test": len(scores), "test_in_distribution": round(float((scores <= 1).float().mean()), 4),
            "median_test_score": round(float(scores.median()), 4)}


@register_benchmark("checkpoints", "the shipped checkpoints: their headers' test accuracy, AUC, params, MACs and reductions, "
                                   "and the share of their test split their ood model accepts")
def bench_checkpoints(smoke: bool) -> dict:
    """Each shipped checkpoint's header (the metrics its training run measured on the test split, its params and MACs,
    a student's reductions against its teacher) and its ood sidecar's record, plus one measurement: the ood model's
    verdicts on the test split of its benchmark source (480 images; smoke: 16 images, for the first checkpoint only).
    Checkpoints are named by their file name without ``-synthetic-faceswap.safetensors``."""
    import torch

    from core.checkpoint import SHIPPED_DIR, compact_cost, is_sidecar, read_header, sidecar_path
    from core.data.synthetic import SynthConfig
    from core.evaluation.ood import load_ood

    paths = [path for path in sorted(SHIPPED_DIR.glob("*.safetensors")) if not is_sidecar(path)]
    test_images = 16 if smoke else SynthConfig().split_sizes()["test"]
    checkpoints = {}
    for index, path in enumerate(paths):
        header = read_header(path)
        cost = compact_cost(header)
        metrics = header.get("metrics", {})
        record = {
            "file": str(path.relative_to(SHIPPED_DIR.parent)), "megabytes": round(path.stat().st_size / 2**20, 2),
            "method": header.get("student_method") or header.get("method"), "arch": header.get("model", {}).get("arch"),
            "dataset": header.get("dataset"), "image_size": header.get("image_size"),
            "trained": _trained_on(header.get("shipped_from")), "epoch": metrics.get("epoch"),
            **{key: metrics[key] for key in ("test_accuracy", "test_auc", "test_eer", "val_accuracy", "val_auc") if key in metrics},
            "params": cost["params"], "macs": cost["macs"],
        }
        if cost["pruned"]:
            record.update(full_params=cost["full_params"], full_macs=cost["full_macs"],
                          params_reduction=cost["params_reduction"], macs_reduction=cost["macs_reduction"])
            if "active_filters" in header.get("pruning", {}):
                record.update(_kept_filters(header["pruning"]))
        ood = load_ood(path)
        if ood is not None:
            info = ood.record()
            sidecar = sidecar_path(path)
            record["ood"] = {"stages": len(info["stages"]), "n_fit": info.get("n_fit"), "n_calibration": info.get("n_calibration"),
                             "sidecar_kb": round(sidecar.stat().st_size / 1e3, 1) if sidecar.is_file() else None,
                             **(_test_in_distribution(path, ood, test_images) if index == 0 or not smoke else {})}
        checkpoints[path.name.removesuffix(".safetensors").removesuffix("-synthetic-faceswap")] = record
    shares = [c["ood"]["test_in_distribution"] for c in checkpoints.values() if "test_in_distribution" in c.get("ood", {})]
    summary = (f"checkpoints: {len(checkpoints)} shipped; test accuracy "
               + ", ".join(f"{name} {c.get('test_accuracy', float('nan')):.3f}" for name, c in checkpoints.items())
               + (f"; {min(shares):.1%}-{max(shares):.1%} of {test_images} test images in distribution" if shares else ""))
    return {"config": {"folder": str(SHIPPED_DIR.relative_to(SHIPPED_DIR.parent)), "test_images": test_images,
                       "metrics": "recorded by each checkpoint's training run (header 'metrics'), not re-measured",
                       "threads": torch.get_num_threads()},
            "checkpoints": checkpoints, "targets": {}, "summary": summary}
