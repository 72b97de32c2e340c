"""``export``, ``profile`` and ``bench``: deployable files, their cost, and the benchmarks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.common import emit


def cmd_export(args: argparse.Namespace) -> None:
    from core.deploy.export import export

    fmt = args.format
    suffix = {"onnx-int8": "-int8.onnx", "openvino": ".xml"}.get(fmt, f".{fmt}")
    out = args.out or str(Path(args.checkpoint).with_suffix("")) + f"-compact{suffix}"
    result = export(args.checkpoint, fmt, out, data=args.data, data_root=args.data_root,
                    calibration_images=args.calibration_images, progress=not args.quiet, round_to=args.round_to)
    int8 = (f"; {result['bytes'] / 2**20:.2f} MB = {result['size_ratio']:.1%} of the fp32 ONNX "
            f"({result['fp32_bytes'] / 2**20:.2f} MB), calibrated on {result['calibration']['images']} images of "
            f"{result['calibration']['data']}; on {result['check_images']} of them, max |P(fake) difference| "
            f"{result['probability_max_abs_diff']:.3f}" if fmt == "onnx-int8" else "")
    speed = result.get("speedup_vs_torch")
    speed = (f"; {speed['speedup']:.2f}x PyTorch eager at batch 1 ({speed['export_ms']:.2f} vs {speed['torch_ms']:.2f} ms, "
             f"{speed['threads']} threads)" if speed else "")
    precision = f"; OpenVINO inference precision {result['inference_precision']}" if fmt == "openvino" else ""
    emit(args, result, f"wrote {result['path']} ({result['kind']}, {result['params'] / 1e6:.2f} M params, "
                        f"{result['macs'] / 1e6:,.1f} M MACs at {result['image_size']} px); "
                        f"max |logit difference| vs the source: {result['max_abs_diff']:.2e}{int8}{precision}{speed}")


def cmd_runtimes(args: argparse.Namespace) -> None:
    from core.deploy.runtimes import LABELS, auto_selection, available_runtimes

    available = available_runtimes()
    result: dict = {"available": available}
    lines = [f"{name}: {'available' if reason is None else 'unavailable: ' + reason}" for name, reason in available.items()]
    if args.checkpoint:
        record = auto_selection(args.checkpoint, progress=not args.quiet, remeasure=args.remeasure)
        result["selection"] = record
        chosen = record["chosen"]
        lines.append(f"auto for {args.checkpoint} ({'cached' if record['reused'] else 'measured now'}, {record['path']}): "
                     f"{LABELS[chosen['runtime']]} fp32, round-to {chosen['round_to']}, {chosen['median_ms']:.2f} ms at "
                     f"batch 1, {record['threads']} threads")
        lines += [f"  {c['runtime']:<9} round-to {c['round_to']:<3} {c['median_ms']:8.2f} ms (p10 {c['p10_ms']:.2f}, "
                  f"p90 {c['p90_ms']:.2f}), max |logit difference| {c['max_abs_diff']:.1e}" for c in record["candidates"]]
    emit(args, result, "\n".join(lines))


def cmd_profile(args: argparse.Namespace) -> None:
    from core.models import build_model
    from core.pruning.flops import profile_model

    if (args.arch is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --arch NAME or a checkpoint path")
    extra, human = {}, ""
    if args.arch:
        model, image_size, what = build_model(args.arch), args.image_size or 256, args.arch
    else:
        import core
        from core.deploy.onnx import OnnxModel
        from core.models.masked import masked_layers
        from core.pruning.surgery import compact_of

        loaded = core.load_model(args.checkpoint, serve=False)  # profiled as trained: BatchNorms counted
        image_size, what = args.image_size or loaded.header["image_size"], str(args.checkpoint)
        if isinstance(loaded, OnnxModel):  # a graph, not a module to profile
            _emit_exported_profile(args, loaded.header, image_size, what)
            return
        model, header = compact_of(loaded)  # a masked student counts as the network it prunes to
        if header["model"]["type"] == "compact-resnet":
            full = build_model(header["model"]["arch"])
            teacher = profile_model(full, image_size)
            active = model.active_filters
            channels = [layer.channels for layer in masked_layers(full)]
            extra = {"kind": "compact-resnet", "teacher_params": teacher["params"], "teacher_macs": teacher["macs"],
                     "active_filters": active, "active_percent": [round(100 * a / c, 2) for a, c in zip(active, channels, strict=True)]}
        elif header["model"]["type"] == "pruned-net":  # a taylor run: reductions against the dense architecture
            dense = profile_model(build_model(header["model"]["arch"]), image_size)
            extra = {"kind": "pruned-net", "dense_params": dense["params"], "dense_macs": dense["macs"]}
    cost = profile_model(model, image_size)
    if extra.get("kind") == "pruned-net":
        extra["params_reduction"] = 1 - cost["params"] / extra["dense_params"]
        extra["macs_reduction"] = 1 - cost["macs"] / extra["dense_macs"]
        human = (f" (pruned: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs "
                 f"than the dense {header['model']['arch']})")
    elif extra:
        extra["params_reduction"] = 1 - cost["params"] / extra["teacher_params"]
        extra["macs_reduction"] = 1 - cost["macs"] / extra["teacher_macs"]
        human = (f" (compact student: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs "
                 f"than its {header['model']['arch']} teacher; {sum(extra['active_filters'])} of {sum(channels)} block filters kept)")
    emit(args, {"model": what, **cost, "params_m": cost["params"] / 1e6, "macs_m": cost["macs"] / 1e6, **extra},
          f"{what} at {image_size}x{image_size}: {cost['params'] / 1e6:.2f} M params, {cost['macs'] / 1e6:,.1f} M MACs{human}")


def _emit_exported_profile(args: argparse.Namespace, header: dict, image_size: int, what: str) -> None:
    """An ONNX export's params and MACs are those its export recorded: the PyTorch network it was exported from."""
    if image_size != header["image_size"]:
        raise ValueError(f"{what} is an ONNX export: its counts are recorded at its own {header['image_size']} px; "
                         "profile the source checkpoint for another --image-size")
    deploy = header["deploy"]
    result = {"model": what, "params": header["params"], "macs": header["macs"], "image_size": image_size,
              "params_m": header["params"] / 1e6, "macs_m": header["macs"] / 1e6, "kind": header["model"]["type"],
              "precision": deploy["precision"], "counted_from": "export header", "source": deploy.get("source")}
    emit(args, result, f"{what} at {image_size}x{image_size}: {result['params_m']:.2f} M params, {result['macs_m']:,.1f} M MACs "
                        f"(ONNX {deploy['precision']}: the counts of the network it was exported from, {deploy.get('source')})")


def _benchmarks():
    """The ``bench`` package: beside the library in the repository, not part of it."""
    from core.checkpoint import REPO

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import bench

    return bench


def cmd_bench(args: argparse.Namespace) -> None:
    run_benchmark = _benchmarks().run_benchmark

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result, path = run_benchmark(args.name, smoke=args.smoke, out=args.out)
    emit(args, {**result, "path": str(path)}, f"{result['summary']} [{path}, {result['seconds']} s]")


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""

    export = command(commands, "export", cmd_export,
                     "write a checkpoint's compact model (pt, onnx, onnx-int8, safetensors) and check it")
    export.add_argument("checkpoint", help="checkpoint file or run directory")
    export.add_argument("--format", choices=["pt", "onnx", "onnx-int8", "openvino", "safetensors"], default="pt",
                        help="onnx-int8: int8 static quantisation (ONNX Runtime, QDQ, per-channel weights); openvino: the "
                             "OpenVINO IR (.xml + .bin), fp32")
    export.add_argument("--out", help="output path (default: next to the checkpoint, <name>-compact.<format>, "
                                      "<name>-compact-int8.onnx, <name>-compact.xml)")
    export.add_argument("--data", help="onnx-int8: dataset of the calibration images (default: the checkpoint's own)")
    export.add_argument("--data-root", help="onnx-int8: root folder of a registered --data")
    export.add_argument("--calibration-images", type=int,
                        help="onnx-int8: training images that set the int8 ranges, evenly spread (default 300)")
    export.add_argument("--round-to", type=int, default=1, metavar="N",
                        help="kept filters per layer rounded up to a multiple of N: a masked student keeps its most "
                             "probable dropped filters, a compact one is padded with zero filters (default 1: as pruned)")

    runtimes = command(commands, "runtimes", cmd_runtimes,
                       "the runtimes that can serve checkpoints here and, for a checkpoint, what auto measured and picked")
    runtimes.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory")
    runtimes.add_argument("--remeasure", action="store_true", help="measure again even when the cached record matches")

    BENCHMARKS = _benchmarks().BENCHMARKS  # noqa: N806

    bench = command(commands, "bench", cmd_bench, "run a benchmark (side-by-side ratios) and write its JSON to bench/results/")
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="; ".join(f"{b.name}: {b.description}" for b in BENCHMARKS.values()))
    bench.add_argument("--smoke", action="store_true", help="a tiny configuration that runs in seconds (CI), in bench/results/smoke/")
    bench.add_argument("--out", help="folder for the JSON (default bench/results/)")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")

    profile = command(commands, "profile", cmd_profile, "parameters and MACs (thop convention)")
    profile.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory")
    profile.add_argument("--arch", help="an architecture name instead of a checkpoint")
    profile.add_argument("--image-size", type=int, help="input side (default: the checkpoint's, or 256)")
