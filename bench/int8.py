"""``int8``: what int8 serving costs in accuracy: each shipped ResNet-50 checkpoint's test accuracy and AUC on the
embedded benchmark, fp32 (PyTorch, as trained) beside each int8 runtime (ONNX Runtime and OpenVINO on the static,
per-channel, QDQ export calibrated on training images, :mod:`core.deploy.serving`).

Target (issue 31): int8 within 1 point of fp32 test accuracy. Every prediction is measured here, on the same test
images, at the checkpoints' own 64 px.
"""

from __future__ import annotations

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target

INT8_RUNTIMES = ("onnx-int8", "openvino-int8")
ACCURACY_POINTS = 0.01  # issue 31: int8 within 1 point of fp32 test accuracy


@register_benchmark("int8", "test accuracy and AUC of the shipped checkpoints served int8 (ONNX Runtime, OpenVINO) "
                            "beside fp32, on the embedded benchmark")
def bench_int8(smoke: bool) -> dict:
    from core.data.datasets import resolve_dataset
    from core.deploy.runtimes import ParityError, RuntimeUnavailable, load_runtime
    from core.evaluation.metrics import classification_metrics, predict

    samples = resolve_dataset("synthetic:faceswap").split("test")
    if smoke:
        samples = samples[::20]  # both classes
    names = ("pearson",) if smoke else tuple(SHIPPED_RESNET50)
    metrics, refused, targets = {}, {}, {}
    for name in names:
        path = REPO / SHIPPED_RESNET50[name]
        metrics[name] = {}
        for runtime in ("torch", *INT8_RUNTIMES):
            try:
                form = load_runtime(path, runtime)
            except (RuntimeUnavailable, ParityError) as error:
                refused[f"{name} · {runtime}"] = f"{type(error).__name__}: {error}"[:300]
                continue
            predictions = predict(form, samples, form.preprocess, batch_size=32, progress=False,
                                  desc=f"{name} {runtime}")
            scored = classification_metrics(predictions.labels, predictions.probabilities)
            metrics[name][runtime] = {"precision": form.precision, "accuracy": scored["accuracy"], "auc": scored["auc"],
                                      "n": scored["n"]}
        fp32 = metrics[name].get("torch")
        for runtime in INT8_RUNTIMES:
            if fp32 and runtime in metrics[name]:
                row = metrics[name][runtime]
                row["accuracy_drop"] = round(fp32["accuracy"] - row["accuracy"], 4)
                row["auc_drop"] = round(fp32["auc"] - row["auc"], 4)
                if not smoke:
                    targets[f"{name} · {runtime}: accuracy drop vs fp32"] = target(row["accuracy_drop"], ACCURACY_POINTS,
                                                                                   higher_is_better=False)
    summary = "int8: " + "; ".join(
        f"{name}: fp32 {rows['torch']['accuracy']:.3f}/{rows['torch']['auc']:.3f}, "
        + ", ".join(f"{runtime} {row['accuracy']:.3f}/{row['auc']:.3f}" for runtime, row in rows.items() if runtime != "torch")
        for name, rows in metrics.items() if "torch" in rows) + " (test accuracy/AUC)"
    return {"config": {"data": "synthetic:faceswap test split" + (" (every 20th, smoke)" if smoke else ""),
                       "images": len(samples), "checkpoints": {n: SHIPPED_RESNET50[n] for n in names},
                       "calibration": "the serving export's: training images (core.deploy.serving)"},
            "metrics": metrics, "refused": refused, "targets": targets, "summary": summary}
