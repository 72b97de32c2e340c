"""The predict command's throughput: images per second by batch size, runtime and face cropping."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import REPO, SHIPPED_RESNET50, register_benchmark

BATCHES = (1, 8, 32, 128)


@register_benchmark("predict", "predict's throughput on 64 px benchmark images: batch 1-128, torch vs ONNX Runtime, with and "
                               "without the face crop")
def bench_predict(smoke: bool) -> dict:
    """``predict_files`` on held-out test images of the embedded benchmark (rendered, not read from data/), compact
    Pearson student as served, with its ood model: one warm-up pass, then one timed pass per configuration.

    Smoke: 16 images, batches 1 and 8, torch only."""
    import torch
    from PIL import Image

    import core
    from core.data.synthetic import SynthConfig, render_split_image
    from core.evaluation.ood import load_ood
    from core.evaluation.predict import predict_files

    images, batches = (16, (1, 8)) if smoke else (256, BATCHES)
    checkpoint = REPO / SHIPPED_RESNET50["pearson"]
    ood = load_ood(checkpoint)
    runtimes = {"torch": core.load_model(checkpoint, runtime="torch")}
    if not smoke:
        runtimes["onnx"] = core.load_model(checkpoint, runtime="onnx")
    rows = []
    with tempfile.TemporaryDirectory(prefix="core-bench-predict-") as scratch:
        folder = Path(scratch)
        for index in range(images):
            Image.fromarray(render_split_image(SynthConfig(), "faceswap", "test", index)[0]).save(folder / f"{index:04d}.png")
        for face_crop in (True, False):
            for runtime, model in runtimes.items():
                for batch in batches:
                    predict_files(model, [folder], ood, face_crop=face_crop, batch_size=batch, progress=False)  # warm-up
                    result = predict_files(model, [folder], ood, face_crop=face_crop, batch_size=batch, progress=False)
                    rows.append({"face_crop": face_crop, "runtime": runtime, "batch": batch,
                                 "images_per_s": result["images_per_s"], **result["timing"],
                                 "model_images_per_s": round(images / result["timing"]["model_s"], 1),
                                 "in_distribution": sum(bool(p["in_distribution"]) for p in result["predictions"]) / images})
    best = max((r for r in rows if r["runtime"] == "torch" and r["face_crop"]), key=lambda r: r["images_per_s"])
    single = next(r for r in rows if r["runtime"] == "torch" and r["face_crop"] and r["batch"] == 1)
    summary = (f"predict: {images} 64 px images, compact Pearson as served, {torch.get_num_threads()} threads: "
               f"{single['images_per_s']:.0f} images/s at batch 1, {best['images_per_s']:.0f} at batch {best['batch']} "
               f"(model alone {single['model_images_per_s']:.0f} -> {best['model_images_per_s']:.0f}); "
               f"{single['in_distribution']:.0%} of these held-out images in distribution")
    return {"config": {"images": images, "batches": list(batches), "runtimes": list(runtimes), "checkpoint": SHIPPED_RESNET50["pearson"],
                       "threads": torch.get_num_threads()},
            "rows": rows, "ratios": {"batch speed-up (model, torch, faces)": best["model_images_per_s"] / single["model_images_per_s"]},
            "targets": {}, "summary": summary}
