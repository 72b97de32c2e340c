"""``split-stream``: the graph of a per-block-masked student with a scatter per block, beside the split residual stream.

The shipped KDFS and Pearson students (per-block masks) exported twice at each size: the compact network as it is
(each block's last conv scattered into the full-width stream: ``ScatterND`` between transposes) and as
:func:`core.models.split_stream.graph_form` writes it (what every graph export now holds). Both graphs are checked
against the trained model (fp32 tolerance of :mod:`core.deploy.runtimes`), their operators counted, and timed in
ONNX Runtime and OpenVINO fp32 (``INFERENCE_PRECISION_HINT f32``) round-robin with the PyTorch served teacher, at
batch 1 and the default threads; the speed-up of the split graph over the scattering one is the result.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import torch

from bench import REPO, SHIPPED_RESNET50, register_benchmark, timings
from bench.runtimes import at_size

SIZES = (256, 64)
REPEATS, WARMUP = 25, 3


def _graphs(checkpoint: Path, size: int, folder: Path) -> dict[str, Path]:
    """The student's compact network written as a scattering graph and as a split one."""
    from core.deploy.onnx import write_onnx
    from core.deploy.serving import deployable
    from core.models.loading import load_model

    network, header = deployable(load_model(checkpoint), 1)
    out = {}
    for name, rewrite in (("scatter", False), ("split", True)):
        out[name] = folder / f"{checkpoint.stem}-{size}-{name}.onnx"
        write_onnx(network, {**header, "image_size": size}, size, out[name], rewrite=rewrite)
    return out


def _operators(path: Path) -> dict[str, int]:
    import onnx  # optional runtime, imported on use

    return dict(collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node))


@register_benchmark("split-stream", "per-block-masked students' graphs: a scatter per block vs the split residual "
                                    "stream, ONNX Runtime and OpenVINO fp32, CPU")
def bench_split_stream(smoke: bool) -> dict:
    from core.deploy.onnx import load_onnx
    from core.deploy.openvino import load_openvino
    from core.deploy.runtimes import FP32_TOLERANCE, load_runtime
    from core.evaluation.latency import measure_latency
    from core.models.loading import load_model

    sizes = (32,) if smoke else SIZES
    students = ("pearson",) if smoke else ("pearson", "kdfs")
    repeats, warmup = (2, 1) if smoke else (REPEATS, WARMUP)
    results, raw, medians, operators, parity = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="core-bench-split-") as scratch:
        for size in sizes:
            teacher = at_size(REPO / SHIPPED_RESNET50["teacher"], size, Path(scratch))
            forms = {"teacher · torch": load_runtime(teacher, "torch")}
            images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
            for student in students:
                checkpoint = REPO / SHIPPED_RESNET50[student]
                with torch.no_grad():
                    expected = load_model(checkpoint)(images)
                for graph, path in _graphs(checkpoint, size, Path(scratch)).items():
                    operators[f"{student} · {graph}"] = _operators(path)
                    for runtime, loader in (("onnx", load_onnx), ("openvino", load_openvino)):
                        form = loader(path)
                        with torch.no_grad():
                            difference = float((form(images) - expected).abs().max())
                        bound = FP32_TOLERANCE * max(1.0, float(expected.abs().max()))
                        if not difference <= bound:
                            raise RuntimeError(f"{student} {graph} in {runtime}: {difference:.2e} from the trained logits")
                        parity[f"{size}px · {student} · {graph} · {runtime}"] = difference
                        forms[f"{student} · {graph} · {runtime}"] = form
            key = f"{size}px b1"
            raw[key], medians[key] = timings(measure_latency(forms, size, batch=1, repeats=repeats, warmup=warmup,
                                                             settle=1))
            m = medians[key]
            results[key] = {f"{student} · {runtime}": {
                "scatter_ms": m[f"{student} · scatter · {runtime}"], "split_ms": m[f"{student} · split · {runtime}"],
                "split speed-up over scatter": round(m[f"{student} · scatter · {runtime}"] / m[f"{student} · split · {runtime}"], 3),
                "scatter vs PyTorch teacher": round(m["teacher · torch"] / m[f"{student} · scatter · {runtime}"], 3),
                "split vs PyTorch teacher": round(m["teacher · torch"] / m[f"{student} · split · {runtime}"], 3)}
                for student in students for runtime in ("onnx", "openvino")}
    head = results[f"{sizes[0]}px b1"]
    summary = f"split-stream: at {sizes[0]} px b1, {torch.get_num_threads()} threads: " + "; ".join(
        f"{name} {r['split speed-up over scatter']:.2f}x faster split ({r['scatter vs PyTorch teacher']:.2f}x -> "
        f"{r['split vs PyTorch teacher']:.2f}x the PyTorch teacher)" for name, r in head.items())
    return {"config": {"sizes": list(sizes), "students": list(students), "repeats": repeats, "warmup_rounds": warmup,
                       "batch": 1, "threads": torch.get_num_threads(), "precision": "fp32",
                       "openvino_inference_precision": "f32"},
            "operators": operators, "parity_max_abs_logit": parity, "raw_s": raw, "median_ms": medians,
            "results": results, "targets": {}, "summary": summary}
