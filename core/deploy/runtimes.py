"""Every runtime a checkpoint can be served by on the CPU, behind one interface, and ``auto``: the fastest measured here.

A *served form* is a checkpoint made ready to answer by one runtime (:data:`RUNTIME_NAMES`):

- ``torch``: PyTorch eager, BatchNorm folded, channels_last (:func:`core.models.loading.served`); fp32
- ``torch-compile``: the same network through ``torch.compile`` (inductor, CPU: needs a C++ compiler); fp32
- ``onnx``: ONNX Runtime, ``ORT_ENABLE_ALL``, on the cached serving export (:mod:`core.deploy.serving`); fp32
- ``onnx-int8``: ONNX Runtime on that export quantised (static, QDQ, per-channel weights); int8
- ``openvino``: OpenVINO on the same fp32 export, ``INFERENCE_PRECISION_HINT: f32``; fp32
- ``openvino-int8``: OpenVINO on the QDQ int8 export; int8

Each can be built with the student's widths as trained (``round_to=1``) or every pruned layer's kept filters padded
with zero filters up to a multiple of 8 or 16 (:func:`core.deploy.serving.deployable`: exact). A form is accepted only
when it agrees with the checkpoint as trained: an fp32 form's logits within :data:`FP32_TOLERANCE` (times the
logits' scale, at least 1) of the trained PyTorch model's on a fixed batch, checked when it is built; an int8 form's
P(fake) within :data:`INT8_PROBABILITY_TOLERANCE` on real training images, checked when it is quantised. int8 is
labelled int8, never exact. Every form answers the out-of-distribution statistics ``predict`` needs (PyTorch through
forward hooks, the graphs as extra outputs).

``auto`` (:func:`auto_selection`) serves the exact fp32 form measured fastest for that checkpoint on this machine at
batch 1 and the default threads, among :data:`AUTO_CANDIDATES` at each distinct rounding. The measurement (every
candidate round-robin in one process, the median of each) is cached beside the checkpoint as
``<stem>.serving.json`` (or in the cache folder when that folder is read-only), keyed by the checkpoint's content, the
machine (CPU model, its SIMD flags, cores, threads) and the runtimes' versions: any change measures again.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from core.checkpoint import is_graph, is_onnx, read_header, resolve_checkpoint
from core.deploy.onnx import WithStatistics, load_onnx
from core.deploy.openvino import OpenVinoModel, OpenVinoUnavailable, load_openvino, openvino_core, openvino_version
from core.deploy.serving import deployable, load_serving, serving_export
from core.evaluation.evaluate import file_digest
from core.evaluation.latency import measure_latency
from core.evaluation.ood import FeatureTap, load_ood
from core.io import DiskCache, WriteError, load_json, save_json
from core.models import build_model
from core.models.compact import CompactResNet
from core.models.loading import load_model, served
from core.models.masked import masked_layers
from core.pruning.surgery import compact_of, rounded_counts

RUNTIME_NAMES = ("torch", "torch-compile", "onnx", "onnx-int8", "openvino", "openvino-int8")
AUTO = "auto"
RUNTIME_CHOICES = (AUTO, *RUNTIME_NAMES)
PRECISION = {"torch": "fp32", "torch-compile": "fp32", "onnx": "fp32", "onnx-int8": "int8", "openvino": "fp32",
             "openvino-int8": "int8"}
LABELS = {"torch": "PyTorch", "torch-compile": "PyTorch torch.compile", "onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime",
          "openvino": "OpenVINO", "openvino-int8": "OpenVINO"}
# what auto chooses among: the exact fp32 forms whose cost is paid once per machine. torch.compile is left out: it
# compiles again in every process that loads it (inductor's disk cache shortens, never removes, the wait), a cost a
# `predict` call would pay on every run
AUTO_CANDIDATES = ("torch", "onnx", "openvino")
ROUNDINGS = (1, 8, 16)
# fp32 forms differ from the trained model only by float reassociation (BatchNorm folded, other kernels): measured
# <= 1e-5 on every shipped checkpoint (logits up to 14 on the parity batch); bf16 is ~1e-1 (OpenVINO's default here,
# 0.07 on the Pearson student). 1e-3 lies two orders of magnitude from each, so it accepts every fp32 form and refuses
# a silent reduced precision. Per unit of logit scale: the bound is 1e-3 * max(1, max |trained logit|)
FP32_TOLERANCE = 1e-3
INT8_PROBABILITY_TOLERANCE = 0.1  # max |P(fake) difference| of an int8 form on real training images (tests/test_deploy.py)
PARITY_IMAGES = 4  # the fixed batch (seeded normal noise) on which an fp32 form is compared with the trained model
RUNTIME_ENV = "CORE_RUNTIME"  # the default runtime of core.load_model, predict, video and the dashboard (default: auto)
MEASURE_SECONDS = 2.0  # auto's timing budget per checkpoint (after building and warming the candidates)
MIN_REPEATS, MAX_REPEATS = 5, 200  # timed rounds, whatever the budget says
SETTLE = 1  # untimed passes before each timed one: another runtime's thread pool ran just before (measure_latency)
RECORD_VERSION = 4  # 4: the graph forms of block-masked students changed (split residual streams): measure again
RECORD_SUFFIX = ".serving.json"
RECORD_CACHE = DiskCache("serving", RECORD_VERSION, RECORD_SUFFIX)  # auto's records when beside the checkpoint is read-only
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


class RuntimeUnavailable(RuntimeError):
    """A runtime cannot run here (not installed, no compiler, failed to compile); the message says why."""


class ParityError(RuntimeError):
    """A served form does not agree with the checkpoint as trained within its tolerance: refused."""


# --------------------------------------------------------------------------- what can run here


def available_runtimes() -> dict[str, str | None]:
    """``{runtime: None}`` for each runtime that can run here, ``{runtime: reason}`` for each that cannot.

    Cheap: imports and the C++ compiler's presence. A runtime listed as available can still fail to build a form
    (torch.compile on an unusual network): :func:`load_runtime` then raises :class:`RuntimeUnavailable`."""
    return {runtime: unavailable_reason(runtime) for runtime in RUNTIME_NAMES}


def unavailable_reason(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here, or None when it can."""
    if runtime == "torch":
        return None
    if runtime == "torch-compile":
        return _compile_missing()
    onnx = _missing("onnxruntime", "onnxscript", "onnx")
    if runtime in ("onnx", "onnx-int8"):
        return onnx
    return (onnx if runtime == "openvino-int8" else None) or _openvino_missing()


def _missing(*modules: str) -> str | None:

    absent = [name for name in modules if importlib.util.find_spec(name) is None]
    return f"{', '.join(absent)} not installed (requirements.txt)" if absent else None


def _openvino_missing() -> str | None:

    try:
        openvino_core()
    except OpenVinoUnavailable as error:
        return str(error)
    return None


def _compile_missing() -> str | None:
    """Why torch.compile's inductor cannot build CPU kernels here: it needs a C++ compiler and Python's headers."""

    compiler = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    if compiler is None or shutil.which(compiler) is None:
        return "no C++ compiler (g++, c++ or clang++; or $CXX) for torch.compile's inductor"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return f"Python's C headers are missing ({sysconfig.get_paths()['include']}/Python.h): inductor cannot build"
    return None


def default_runtime() -> str:
    """The runtime used when none is named: ``$CORE_RUNTIME``, else ``auto``."""
    runtime = os.environ.get(RUNTIME_ENV) or AUTO
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"${RUNTIME_ENV}={runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    return runtime


# --------------------------------------------------------------------------- building a served form


def load_runtime(checkpoint: str | os.PathLike, runtime: str, round_to: int = 1, threads: int | None = None,
                 check: bool = True) -> nn.Module:
    """``checkpoint`` served by ``runtime`` (one of :data:`RUNTIME_NAMES`), eval mode, ready to call.

    ``round_to``: pruned layers padded to a multiple of it (1: as trained; > 1 only for pruned ResNet students).
    ``threads``: the runtime's intra-op threads (default: torch's count now). ``check``: compare an fp32 form with the
    trained model on a fixed batch (:class:`ParityError` beyond :data:`FP32_TOLERANCE` times ``max(1, max |logit|)``);
    an int8 form's recorded agreement is checked always. An ``.onnx`` or IR ``.xml`` checkpoint is run as it is
    (``round_to`` 1).

    The returned callable takes ``[N, 3, S, S]`` preprocessed images and returns ``[N, 1]`` logits (> 0: fake), and
    carries ``runtime``, ``precision`` (fp32 | int8), ``round_to``, ``threads``, ``exact`` (an fp32 form that passed),
    ``parity`` (``{max_abs_diff, tolerance, on}``), ``preprocess`` and ``header``; an OpenVINO form also
    ``inference_precision`` (the compiled model's ``INFERENCE_PRECISION_HINT``, always f32). Raises
    :class:`RuntimeUnavailable` when the runtime cannot run here (with the reason).
    """

    if runtime not in RUNTIME_NAMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIME_NAMES)}, got {runtime!r}")
    path = resolve_checkpoint(checkpoint)
    reason = unavailable_reason(runtime)
    if reason is not None:
        raise RuntimeUnavailable(f"{runtime} is unavailable here: {reason}")
    if is_graph(path):
        return _graph_form(path, runtime, round_to, threads)
    torch_runtime = runtime in ("torch", "torch-compile")
    trained = load_model(path) if check or torch_runtime else None  # a graph loaded unchecked needs no PyTorch network
    size = int(read_header(path)["image_size"])
    images = torch.randn(PARITY_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(images).reshape(PARITY_IMAGES, -1) if check else None  # before anything is folded
    if torch_runtime:  # compiled, the graph returns the ood statistics itself (hooks: eager)
        stages = _ood_stages(path) if runtime == "torch-compile" else None
        form = _torch_form(trained, round_to, runtime == "torch-compile", stages, threads, images)
    elif runtime in ("onnx", "onnx-int8"):

        form = load_serving(path, threads, round_to, PRECISION[runtime])
    else:

        export = serving_export(path, round_to, PRECISION[runtime])
        form = OpenVinoModel(export, read_header(export), threads).eval()
    _label(form, runtime, round_to, threads)
    if PRECISION[runtime] == "int8":
        _accept_int8(form)
    elif expected is not None:
        with torch.no_grad():
            difference = float((form(images).reshape(PARITY_IMAGES, -1) - expected).abs().max())
        bound = FP32_TOLERANCE * max(1.0, float(expected.abs().max()))  # float error grows with the logits' size
        if not difference <= bound:
            raise ParityError(f"{runtime} (round_to {round_to}) of {path.name}: max |logit difference| {difference:.2e} from "
                              f"the trained model, above the fp32 tolerance {bound:.2g}: refused")
        form.parity = {"max_abs_diff": difference, "tolerance": bound, "on": f"{PARITY_IMAGES} seeded noise images"}
        form.exact = True
    return form


def _label(form: nn.Module, runtime: str, round_to: int, threads: int | None) -> None:
    form.runtime, form.round_to = runtime, round_to
    form.threads = threads or torch.get_num_threads()
    if "precision" not in type(form).__dict__:  # the graph models read theirs from the graph's header
        form.precision = PRECISION[runtime]
    form.exact, form.parity, form.selection = False, None, None


def _accept_int8(form: nn.Module) -> None:
    check = form.header.get("deploy", {}).get("check")
    if check is None:  # an int8 file quantised by `export`, without the serving export's recorded check
        return
    if not check["probability_max_abs_diff"] <= INT8_PROBABILITY_TOLERANCE:
        raise ParityError(f"{form.runtime}: max |P(fake) difference| {check['probability_max_abs_diff']:.3f} from the trained "
                          f"model on {check['check_images']} training images, above {INT8_PROBABILITY_TOLERANCE}: refused")
    form.parity = {"max_abs_diff": check["max_abs_diff"], "probability_max_abs_diff": check["probability_max_abs_diff"],
                   "tolerance": INT8_PROBABILITY_TOLERANCE, "on": f"{check['check_images']} training images"}


def _graph_form(path: Path, runtime: str, round_to: int, threads: int | None) -> nn.Module:
    """An exported ``.onnx`` / ``.xml`` file as it is: OpenVINO runs either, ONNX Runtime the ``.onnx``."""

    if round_to != 1:
        raise ValueError(f"{path.name} is an export: its widths are fixed (export the source checkpoint with --round-to)")
    header = read_header(path)
    wants_openvino = runtime.startswith("openvino") or not is_onnx(path)
    form = load_openvino(path, threads) if wants_openvino else load_onnx(path, threads)
    precision = header.get("deploy", {}).get("precision", "fp32")
    _label(form, ("openvino" if wants_openvino else "onnx") + ("-int8" if precision == "int8" else ""),
           header.get("round_to", 1), threads)
    return form


def _ood_stages(path: Path) -> list[str] | None:

    ood = load_ood(path)
    return list(ood.stages) if ood is not None else None


def _torch_form(trained: nn.Module, round_to: int, compiled: bool, stages: list[str] | None, threads: int | None,
                images: torch.Tensor) -> nn.Module:
    """PyTorch eager as :func:`core.models.loading.served` serves it (round_to 1: the checkpoint's network as it is;
    > 1: its padded deployable network), or that network through torch.compile."""

    network = served(deployable(trained, round_to)[0] if round_to > 1 else trained)
    if compiled:
        network = CompiledForm(network, stages or [])
        try:
            with torch.no_grad():
                network(images)  # inductor compiles on the first call: a failure is "unavailable", not a crash
        except Exception as error:  # noqa: BLE001 - dynamo/inductor raise many kinds; the reason is what matters
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RuntimeUnavailable(f"torch.compile failed here: {type(error).__name__}: {first_line[:300]}") from None
    if threads:
        _pin_threads(network, threads)
    return network


class CompiledForm(nn.Module):
    """A served network through ``torch.compile`` (inductor). With ``stages``, the compiled graph also returns their
    out-of-distribution statistics (``statistics``, ``forward_with_statistics``, as the ONNX graphs do): hooks added
    after compilation would not run inside it."""

    def __init__(self, network: nn.Module, stages: list[str]) -> None:


        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found" on a CPU box
        super().__init__()
        self.statistics = list(stages)
        self.network = WithStatistics(network, self.statistics, FeatureTap).eval() if stages else network
        self.compiled = torch.compile(self.network)
        self.header, self.preprocess = network.header, network.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.compiled(images)
        return output[0] if self.statistics else output

    def forward_with_statistics(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, *statistics = self.compiled(images)
        return logits, dict(zip(self.statistics, statistics, strict=True))


def _pin_threads(network: nn.Module, threads: int) -> None:
    """torch's thread count is the process's: set to ``threads`` for each call of ``network``, restored after."""
    previous: list[int] = []

    def before(module, args):
        previous.append(torch.get_num_threads())
        torch.set_num_threads(threads)

    def after(module, args, output):
        torch.set_num_threads(previous.pop())

    network.register_forward_pre_hook(before)
    network.register_forward_hook(after)


def describe(form: nn.Module) -> str:
    """What answers, in words: ``ONNX Runtime fp32, widths rounded to 8 (auto: fastest measured here)``."""
    runtime = getattr(form, "runtime", "torch")
    words = f"{LABELS.get(runtime, runtime)} {getattr(form, 'precision', 'fp32')}"
    if getattr(form, "round_to", 1) > 1:
        words += f", widths rounded to {form.round_to}"
    if getattr(form, "selection", None):
        words += " (auto: fastest measured here)"
    return words


# --------------------------------------------------------------------------- auto


def serve(checkpoint: str | os.PathLike, runtime: str | None = None, threads: int | None = None,
          progress: bool = True) -> nn.Module:
    """``checkpoint`` served by ``runtime`` (default :func:`default_runtime`); ``auto`` loads the form
    :func:`auto_selection` measured fastest (``selection`` holds that record) and falls back to PyTorch, saying so
    on stderr, when that form cannot be loaded here."""
    runtime = runtime or default_runtime()
    if runtime != AUTO:
        return load_runtime(checkpoint, runtime, threads=threads)
    path = resolve_checkpoint(checkpoint)
    if is_graph(path):  # an export is run as it is
        return _graph_form(path, "openvino" if not is_onnx(path) else "onnx", 1, threads)
    record = auto_selection(path, progress=progress)
    chosen = record["chosen"]
    try:  # the record's forms passed their parity check when measured (same file, machine and libraries)
        form = load_runtime(path, chosen["runtime"], chosen["round_to"], threads, check=False)
    except (RuntimeUnavailable, ParityError, OSError, ImportError) as error:
        print(f"auto: {chosen['runtime']} (round_to {chosen['round_to']}) cannot be loaded ({error}); serving with PyTorch",
              file=sys.stderr)
        form = load_runtime(path, "torch", threads=threads)
    else:
        form.exact = True
    form.selection = record
    return form


def machine_key() -> dict:
    """What a measurement depends on besides the checkpoint: the CPU (model, SIMD flags, cores), torch's threads, and
    the runtimes' versions (None: not installed; OpenVINO's: None when it does not import)."""

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:

        model = platform.processor() or platform.machine()

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": model, "simd": [flag for flag in SIMD_FLAGS if flag in flags], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "libraries": {"torch": torch.__version__, "onnxruntime": version("onnxruntime"), "openvino": openvino_version()}}


def record_key(path: Path) -> dict:

    return {"version": RECORD_VERSION, "checkpoint_sha256": file_digest(path), "machine": machine_key(),
            "candidates": list(AUTO_CANDIDATES), "roundings": list(ROUNDINGS)}


def record_paths(checkpoint: str | os.PathLike) -> list[Path]:
    """Where auto's measurement of ``checkpoint`` is kept: beside it (``<stem>.serving.json``), else in the cache."""

    path = resolve_checkpoint(checkpoint)
    stem = path.name.removesuffix(path.suffix)
    return [path.with_name(stem + RECORD_SUFFIX), RECORD_CACHE.path({"checkpoint": file_digest(path)}, prefix=stem)]


def auto_selection(checkpoint: str | os.PathLike, progress: bool = True, remeasure: bool = False) -> dict:
    """auto's record for ``checkpoint``: the cached one when its key matches this checkpoint, machine and libraries,
    else a new measurement (:func:`measure_runtimes`), written beside the checkpoint (or into the cache folder when
    that one is read-only). ``record["chosen"]`` is ``{runtime, round_to, median_ms}``; ``record["reused"]`` says
    whether it was read from disk."""
    path = resolve_checkpoint(checkpoint)
    key = record_key(path)
    places = record_paths(path)
    if not remeasure:
        for place in places:
            record = RECORD_CACHE.read(place, load_json)
            if isinstance(record, dict) and record.get("key") == key and record.get("chosen"):
                return {**record, "reused": True, "path": str(place)}
    record = {"key": key, **measure_runtimes(path, progress=progress)}
    for place in places:
        try:
            RECORD_CACHE.write(place, lambda tmp: save_json(tmp, record))  # noqa: B023 - called at once
        except WriteError:
            continue
        return {**record, "reused": False, "path": str(place)}
    return {**record, "reused": False, "path": None}


def distinct_roundings(checkpoint: str | os.PathLike) -> dict[int, int]:
    """``{round_to: the smaller round_to it equals}`` for the roundings of :data:`ROUNDINGS` that change nothing
    (every kept count already a multiple), and for all but 1 when the network has no kept-filter counts."""

    network, _ = compact_of(load_model(resolve_checkpoint(checkpoint)))
    if not isinstance(network, CompactResNet):
        return {r: 1 for r in ROUNDINGS if r > 1}

    widths = [layer.channels for layer in masked_layers(build_model(network.arch))]
    seen: dict[tuple, int] = {}
    same: dict[int, int] = {}
    for r in ROUNDINGS:
        counts = tuple(rounded_counts(network.active_filters, widths, r))
        if counts in seen:
            same[r] = seen[counts]
        else:
            seen[counts] = r
    return same


def measure_runtimes(checkpoint: str | os.PathLike, runtimes: tuple[str, ...] = AUTO_CANDIDATES,
                     roundings: tuple[int, ...] = ROUNDINGS, seconds: float | None = None, progress: bool = True) -> dict:
    """Build every form of ``runtimes`` x ``roundings`` (each checked against the trained model), time them round-robin
    at batch 1 and the default threads for about ``seconds`` (default :data:`MEASURE_SECONDS`), and
    choose the fastest median among those that answer the checkpoint's out-of-distribution statistics.

    Returns ``{candidates: [{runtime, round_to, precision, median_ms, p10_ms, p90_ms, max_abs_diff, statistics,
    build_s}], unavailable: {runtime: reason}, refused: [{runtime, round_to, reason}], same_widths, chosen,
    batch, image_size, threads, repeats, seconds, measured_at}``."""

    path = resolve_checkpoint(checkpoint)
    header = read_header(path)
    size, threads = int(header["image_size"]), torch.get_num_threads()
    stages = _ood_stages(path)
    available = available_runtimes()
    unavailable = {r: available[r] for r in runtimes if available[r] is not None}
    same = {r: s for r, s in distinct_roundings(path).items() if r in roundings}
    plan = [(r, n) for r in runtimes if r not in unavailable for n in roundings if n not in same]
    forms, built, refused = {}, {}, []
    for runtime, round_to in tqdm(plan, desc=f"auto: building {path.name}'s runtimes (once per machine)", unit="form",
                                  disable=not progress, leave=False, file=sys.stderr):
        started = time.perf_counter()
        try:
            form = load_runtime(path, runtime, round_to)
        except Exception as error:  # noqa: BLE001 - one form that cannot be built (refused, unavailable, an export that
            # fails on this network) is left out with its reason: auto must still serve with the others
            refused.append({"runtime": runtime, "round_to": round_to, "reason": f"{type(error).__name__}: {error}"})
            continue
        forms[f"{runtime}@{round_to}"], built[f"{runtime}@{round_to}"] = form, time.perf_counter() - started
    if not forms:
        raise RuntimeError(f"no runtime could serve {path}: {refused}")
    started = time.perf_counter()
    timing = time_round_robin(forms, size, MEASURE_SECONDS if seconds is None else seconds)
    candidates = []
    for name, form in forms.items():
        candidates.append({"runtime": form.runtime, "round_to": form.round_to, "precision": form.precision,
                           "median_ms": round(timing["median_ms"][name], 4), "p10_ms": round(timing["p10_ms"][name], 4),
                           "p90_ms": round(timing["p90_ms"][name], 4), "max_abs_diff": form.parity["max_abs_diff"],
                           "statistics": stages is None or getattr(form, "statistics", None) is None
                           or not set(stages) - set(form.statistics), "build_s": round(built[name], 3)})
    eligible = [c for c in candidates if c["statistics"] and c["precision"] == "fp32"]
    chosen = min(eligible or [c for c in candidates if c["runtime"] == "torch"], key=lambda c: c["median_ms"])
    torch_ms = min((c["median_ms"] for c in candidates if c["runtime"] == "torch" and c["round_to"] == 1), default=None)
    return {"candidates": sorted(candidates, key=lambda c: c["median_ms"]), "unavailable": unavailable, "refused": refused,
            "same_widths": {str(r): s for r, s in same.items()},
            "chosen": {"runtime": chosen["runtime"], "round_to": chosen["round_to"], "median_ms": chosen["median_ms"],
                       "speedup_vs_torch": round(torch_ms / chosen["median_ms"], 3) if torch_ms else None},
            "batch": 1, "image_size": size, "threads": threads, "repeats": timing["repeats"],
            "seconds": round(time.perf_counter() - started, 3), "needs_statistics": stages is not None,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def time_round_robin(forms: dict[str, nn.Module], image_size: int, seconds: float = MEASURE_SECONDS) -> dict:
    """Every form timed at batch 1, round-robin in this process (:func:`core.evaluation.latency.measure_latency`, one
    settling pass before each timed one), for about ``seconds`` (at least :data:`MIN_REPEATS` rounds, at most
    :data:`MAX_REPEATS`): ``{median_ms, p10_ms, p90_ms: {name: ms}, repeats}``."""

    timings = measure_latency(forms, image_size, batch=1, repeats=MIN_REPEATS, warmup=2, settle=SETTLE, seconds=seconds,
                              max_repeats=MAX_REPEATS)
    return {**{f"{q}_ms": {name: 1000 * t[f"{q}_s"] for name, t in timings.items()} for q in ("median", "p10", "p90")},
            "repeats": len(next(iter(timings.values()))["raw_s"])}
