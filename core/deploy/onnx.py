"""ONNX checkpoints: a deployable network as an ONNX graph that carries its checkpoint header.

The graph has a dynamic batch axis, input ``images`` ``[N, 3, S, S]`` (normalised as the
checkpoint's ``preprocess`` does) and output ``logits`` ``[N, 1]``. The checkpoint's JSON
header (architecture, image size, normalisation, dataset, metrics, params, MACs, plus a
``deploy`` record of how the file was made) is stored in the model's ``metadata_props``
under the key ``core``, so ``core.load_model("x.onnx")`` knows how to preprocess for it
and every evaluation, report and dashboard page reads it like any other checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import FORMAT_VERSION, HEADER_KEY, read_header, register_runner
from core.data.images import Normalization, eval_transform
from core.evaluation.ood import FeatureTap
from core.io import atomic_write
from core.models.split_stream import graph_form

INPUT, OUTPUT = "images", "logits"
STATISTICS_PREFIX = "stats."  # extra outputs of a serving export: a stage's out-of-distribution statistics
MAX_BATCH = 4096  # the dynamic batch axis' upper bound (torch.export needs one)
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "onnxruntime.quantization")  # they log every pass at INFO


def quiet_exporter_logs() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _pair(output_size) -> tuple[int | None, int | None]:
    return tuple(output_size) if isinstance(output_size, tuple | list) else (output_size, output_size)


def _windows(length: int, cells: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling windows: cell ``i`` of ``n`` over ``L`` inputs is ``[floor(i L / n), ceil((i + 1) L / n))``."""
    return [(math.floor(i * length / cells), math.ceil((i + 1) * length / cells)) for i in range(cells)]


class StaticAdaptivePool(nn.Module):
    """Adaptive max/avg pooling at a known input size, written as its explicit windows (exact).

    ONNX has adaptive pooling only where the input is a multiple of the output: MesoNet's
    ``AdaptiveMaxPool2d(8)`` exports at 64 px but not at 32 px, where it spreads 4x4 over 8x8.
    """

    def __init__(self, pool: nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.reduce_max = isinstance(pool, nn.AdaptiveMaxPool2d)
        (height, width), (rows, columns) = input_size, _pair(pool.output_size)
        self.rows, self.columns = _windows(height, rows or height), _windows(width, columns or width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        def pool(window: torch.Tensor) -> torch.Tensor:
            return window.amax(dim=(-2, -1)) if self.reduce_max else window.mean(dim=(-2, -1))

        return torch.stack([torch.stack([pool(features[..., top:bottom, left:right]) for left, right in self.columns], -1)
                            for top, bottom in self.rows], -2)


def exportable(model: nn.Module, image_size: int) -> nn.Module:
    """A copy of ``model`` in which adaptive pools that ONNX cannot express at ``image_size`` are made static."""
    input_sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        return lambda module, args, output: input_sizes.__setitem__(name, tuple(args[0].shape[-2:]))

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    copied = copy.deepcopy(model).eval()
    modules = dict(copied.named_modules())
    for name, size in input_sizes.items():
        if all(cells is None or length % cells == 0 for length, cells in zip(size, _pair(modules[name].output_size), strict=True)):
            continue
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else copied, child, StaticAdaptivePool(modules[name], size))
    return copied


# Per-filter analysis records (search-time keep probabilities, kept-filter indices, redundancy scores, the
# mask history) stay in the source checkpoint: a deployed header keeps their summaries, not hundreds of KB of lists.
ANALYSIS_RECORDS = {"pruning": ("keep_probability", "kept", "redundancy"), "mask_history": None}


def deployed_header(header: dict) -> dict:
    """``header`` without the bulky per-filter analysis records (see ``ANALYSIS_RECORDS``)."""
    header = dict(header)
    for key, fields in ANALYSIS_RECORDS.items():
        if key in header and fields is None:
            del header[key]
        elif isinstance(header.get(key), dict):
            header[key] = {name: value for name, value in header[key].items() if name not in fields}
    return header


def write_onnx(model: nn.Module, header: dict, image_size: int, out: str | os.PathLike,
               statistics: list[str] | None = None, rewrite: bool = True) -> None:
    """Export ``model`` (eval mode) with torch.onnx's dynamo exporter and ``header`` in its metadata, atomically.

    The graph is ``model``'s :func:`core.models.split_stream.graph_form`: a per-block-masked compact student is
    written with its residual streams split (the same logits, without a full-width scatter per block).
    ``rewrite=False`` writes ``model`` as it is (``bench split-stream`` times the two).

    ``statistics``: stage names whose out-of-distribution statistics (:mod:`core.evaluation.ood`) the graph also
    outputs, as ``stats.<stage>``, so that a served ONNX model scores its inputs in the same run."""


    quiet_exporter_logs()
    network = exportable(graph_form(model.eval()) if rewrite else model.eval(), image_size)
    if statistics:
        network = WithStatistics(network, statistics, FeatureTap).eval()
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    outputs = [OUTPUT, *(STATISTICS_PREFIX + name for name in statistics or [])]

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The tensor attributes")  # the tap's captures, read back at once
            program = torch.onnx.export(network, (example,), dynamo=True, input_names=[INPUT], output_names=outputs,
                                        dynamic_shapes=({0: batch},), verbose=False)
        program.model.metadata_props[HEADER_KEY] = header_json(header)
        program.save(tmp)

    atomic_write(out, write)


class WithStatistics(nn.Module):
    """``network``'s logits and its stages' statistics in one forward, for export and torch.compile (the tap stays registered)."""

    def __init__(self, network: nn.Module, stages: list[str], tap_class) -> None:
        super().__init__()
        self.network, self.stages = network, list(stages)
        self.tap = tap_class(network, stages).__enter__()

    def forward(self, images: torch.Tensor):
        logits = self.network(images)
        captured = self.tap.take()
        return (logits, *(captured[name] for name in self.stages))


def header_json(header: dict) -> str:
    return json.dumps({**header, "format_version": FORMAT_VERSION}, sort_keys=True, default=str)


def set_header(path: str | os.PathLike, header: dict) -> None:
    """Replace the ``core`` header of an ONNX file (other metadata kept), atomically."""
    import onnx  # optional runtime, imported on use


    model = onnx.load(str(path))
    for entry in [p for p in model.metadata_props if p.key == HEADER_KEY]:
        model.metadata_props.remove(entry)
    model.metadata_props.add(key=HEADER_KEY, value=header_json(header))
    atomic_write(path, lambda tmp: onnx.save(model, tmp))


class OnnxModel(nn.Module):
    """An ONNX checkpoint run by onnxruntime on CPU, with the interface of ``core.load_model``'s modules.

    ``forward`` takes and returns torch tensors (``[N, 3, S, S]`` -> ``[N, 1]`` logits, on the
    input's device); ``preprocess`` and ``header`` come from the stored header. The session uses
    ``threads`` intra-op threads (default: torch's count at load time, so side-by-side timings
    with PyTorch models run on the same number of cores), which do not spin between runs. It has no parameters: gradients
    (Grad-CAM) and ``state_dict`` are PyTorch-only; ``header["params"]`` is the network's count.
    """

    def __init__(self, path: str | os.PathLike, header: dict, threads: int | None = None) -> None:
        import onnxruntime  # optional runtime, imported on use


        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL  # its default, said once here
        # onnxruntime's workers spin-wait after each run by default, which starves whatever runs next on the
        # same cores (the PyTorch model of a side-by-side timing, the page's own work): they sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # stages whose out-of-distribution statistics the graph outputs (a serving export's; else none)
        self.statistics = [o.name.removeprefix(STATISTICS_PREFIX) for o in self.session.get_outputs()
                           if o.name.startswith(STATISTICS_PREFIX)]
        self.header = header
        norm = header["normalization"]
        self.preprocess = eval_transform(header["image_size"], Normalization(tuple(norm["mean"]), tuple(norm["std"])))

    @property
    def precision(self) -> str:
        return self.header.get("deploy", {}).get("precision", "fp32")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run([OUTPUT], {INPUT: images.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(logits).to(images.device)


    def forward_with_statistics(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(logits, {stage: statistics})`` in one run of the graph."""
        names = [OUTPUT, *(STATISTICS_PREFIX + s for s in self.statistics)]
        outputs = self.session.run(names, {INPUT: images.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(outputs[0]), {n.removeprefix(STATISTICS_PREFIX): torch.from_numpy(o)
                                              for n, o in zip(names[1:], outputs[1:], strict=True)}

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, precision={self.precision}"


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """An ONNX checkpoint written by ``export --format onnx|onnx-int8``, ready to call (eval mode)."""
    return OnnxModel(path, read_header(path), threads).eval()


register_runner(".onnx", load_onnx)
