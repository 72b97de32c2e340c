"""OpenVINO on the CPU: an ONNX export (fp32 or QDQ int8) or an OpenVINO IR run behind the interface of a loaded checkpoint.

OpenVINO compiles the ONNX graphs this project writes directly (its ONNX frontend), so the fp32 and int8 forms are the
same cached files ONNX Runtime runs (:mod:`core.deploy.serving`). ``export --format openvino`` writes the IR
(``.xml`` + ``.bin``, weights kept fp32: ``save_model(compress_to_fp16=False)``) with the checkpoint's header in the
model's ``rt_info`` under ``core``; ``core.load_model("x.xml")`` runs it.

**Precision.** On a CPU with bf16 (AVX-512 BF16, AMX) the CPU plugin's default ``INFERENCE_PRECISION_HINT`` is bf16:
an fp32 model silently runs in bf16 (measured on the Pearson student: max |Δlogit| 0.07 against fp32's 3e-6). Every
model here is compiled with ``INFERENCE_PRECISION_HINT: f32``; the compiled model's own value is read back, recorded
(``inference_precision``) and refused unless it is f32. An int8 (QDQ) graph runs its quantised convolutions in int8
and the rest in f32.

**Telemetry.** ``import openvino`` itself sends a Google Analytics event (``ov``/``import``, from
``openvino/tools/ovc/__init__.py``) and writes a client id and usage counts under ``~/intel/``; the model-conversion
API (``convert_model``, ``ovc``) sends more. It is opt-out: it sends unless ``~/intel/openvino_telemetry`` holds ``0``
(or ``$CI`` is ``true``). :func:`import_openvino`, the one way this project imports OpenVINO, blocks the
``openvino_telemetry`` package for the process before the first import: OpenVINO then takes its own no-op stub
(``openvino.tools.ovc.telemetry_stub``, meant for installs without that package), so nothing is sent and nothing is
written, whatever the home folder holds. This project never calls the conversion API either.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import FORMAT_VERSION, HEADER_KEY, IR_SUFFIX, is_ir, read_header, register_runner
from core.data.images import Normalization, eval_transform
from core.deploy.onnx import OUTPUT, STATISTICS_PREFIX

OPENVINO_PIN = "openvino==2026.4.1"  # requirements.txt
DEVICE = "CPU"
FP32_HINT = "f32"  # INFERENCE_PRECISION_HINT of every compiled model here (the CPU plugin's default is bf16 on AVX-512 BF16)
_CORE = None


class OpenVinoUnavailable(RuntimeError):
    """OpenVINO cannot run here (not installed, or no CPU device); the message says why and what to do."""


def import_openvino():
    """``openvino``, imported with its telemetry off (see the module's docstring): ``openvino_telemetry`` is made
    unimportable for this process first, so OpenVINO falls back to its no-op stub. ImportError when OpenVINO is
    missing. (Where OpenVINO or its telemetry package was imported before, by other code, it is left as it is.)"""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # `import openvino_telemetry` now raises ImportError: OpenVINO's stub
    import openvino  # optional runtime, imported on use (core.deploy.openvino blocks its telemetry first)

    return openvino


def telemetry_state() -> str:
    """What OpenVINO's telemetry does in this process: ``stub`` (nothing sent), ``active`` or ``not imported``."""
    utils = sys.modules.get("openvino.tools.ovc.telemetry_utils")
    if utils is None:
        return "not imported"
    return "stub" if utils.tm.__name__.endswith("telemetry_stub") else "active"


def openvino_core():
    """The process's ``openvino.Core`` (telemetry off first); OpenVinoUnavailable when OpenVINO cannot run here."""
    global _CORE
    try:
        openvino = import_openvino()
    except ImportError as error:  # checked on every call: the cached Core below must not hide a broken install
        raise OpenVinoUnavailable(f"openvino is not importable ({error}); install it with `pip install {OPENVINO_PIN}` "
                                  "(requirements.txt)") from None
    if _CORE is None:
        _absl_to_process_stderr()
        core = openvino.Core()
        if DEVICE not in core.available_devices:
            raise OpenVinoUnavailable(f"OpenVINO {openvino.__version__} sees no CPU device here ({core.available_devices})")
        _CORE = core
    return _CORE


def _absl_to_process_stderr() -> None:
    """``import openvino`` imports ``absl.logging`` (its model-conversion logger), whose handler keeps the ``sys.stderr``
    of that moment. A later ``logging.config.dictConfig`` (submitit runs one on import) closes every handler's stream
    that is not the current ``sys.stderr``: a replaced stream then (a test's captured stderr) would be closed under its
    owner. The handler writes to the process's own stderr instead, which nobody closes."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        handler = absl_logging.get_absl_handler().python_handler
        if handler.stream is not sys.__stderr__ and sys.__stderr__ is not None:
            handler.setStream(sys.__stderr__)


def openvino_version() -> str | None:
    """OpenVINO's version, None when it does not import here."""
    try:
        openvino = import_openvino()
    except ImportError:
        return None
    return openvino.__version__


class OpenVinoModel(nn.Module):
    """A graph (``.onnx`` or IR ``.xml``) compiled by OpenVINO for the CPU in fp32 (``INFERENCE_PRECISION_HINT: f32``).

    ``forward`` takes and returns torch tensors; ``statistics`` and ``forward_with_statistics`` as
    :class:`core.deploy.onnx.OnnxModel`'s (a serving export's out-of-distribution statistics). ``threads``: the
    plugin's inference threads (default: torch's count at load time). One infer request, used under a lock.
    """

    def __init__(self, path: str | os.PathLike, header: dict, threads: int | None = None) -> None:

        super().__init__()
        core = openvino_core()
        self.path, self.header = Path(path), header
        self.threads = threads or torch.get_num_threads()
        config = {"INFERENCE_PRECISION_HINT": FP32_HINT, "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(path)), DEVICE, config)
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self.inference_precision != FP32_HINT:
            raise RuntimeError(f"OpenVINO compiled {path} with inference precision {self.inference_precision}, not f32")
        names = [output.get_any_name() for output in self.compiled.outputs]
        self._outputs = [OUTPUT, *(n for n in names if n.startswith(STATISTICS_PREFIX))]
        self.statistics = [n.removeprefix(STATISTICS_PREFIX) for n in self._outputs[1:]]
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        norm = header["normalization"]
        self.preprocess = eval_transform(header["image_size"], Normalization(tuple(norm["mean"]), tuple(norm["std"])))

    @property
    def precision(self) -> str:
        return self.header.get("deploy", {}).get("precision", "fp32")

    def _run(self, images: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        with self._lock:  # an infer request serves one call at a time; its output buffers are reused: copied out
            results = self._request.infer({0: array})
            return [torch.from_numpy(results[self.compiled.output(name)].copy()) for name in names]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images, self._outputs[:1])[0].to(images.device)

    def forward_with_statistics(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(logits, {stage: statistics})`` in one run of the graph."""
        logits, *statistics = self._run(images, self._outputs)
        return logits, dict(zip(self.statistics, statistics, strict=True))

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, precision={self.precision}, inference_precision={self.inference_precision}"


def load_openvino(path: str | os.PathLike, threads: int | None = None) -> OpenVinoModel:
    """An ONNX export or an IR written by ``export --format openvino``, compiled by OpenVINO (eval mode)."""
    return OpenVinoModel(path, read_header(path), threads).eval()


def write_ir(onnx_path: str | os.PathLike, header: dict, out: str | os.PathLike) -> Path:
    """The OpenVINO IR of an fp32 ONNX graph at ``out`` (``.xml``, weights in the ``.bin`` beside it, kept fp32), the
    checkpoint ``header`` in its ``rt_info``."""
    out = Path(out)
    if out.suffix.lower() != IR_SUFFIX:
        raise ValueError(f"an OpenVINO IR is an {IR_SUFFIX} file (weights in the .bin beside it), not {out.name}")
    _save_ir(openvino_core().read_model(str(onnx_path)), header, out)
    return out


def set_ir_header(path: str | os.PathLike, header: dict) -> None:
    """Replace the ``core`` header of an IR written by :func:`write_ir` (the graph and weights as they are)."""
    _save_ir(openvino_core().read_model(str(path)), header, Path(path))


def _save_ir(model, header: dict, out: Path) -> None:
    """``model`` with ``header`` in its rt_info, saved as ``out`` and its ``.bin``: staged beside them, then each
    renamed over its target (the ``.bin`` first, so a reader of the new ``.xml`` finds its weights)."""

    openvino = import_openvino()
    model.set_rt_info(json.dumps({**header, "format_version": FORMAT_VERSION}, sort_keys=True, default=str), [HEADER_KEY])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as scratch:
        staged = Path(scratch) / out.name
        openvino.save_model(model, str(staged), compress_to_fp16=False)  # the default would store fp16 weights
        for suffix in (".bin", IR_SUFFIX):
            os.chmod(staged.with_suffix(suffix), 0o644)
            os.replace(staged.with_suffix(suffix), out.with_suffix(suffix))


def _run_ir(path: Path) -> OpenVinoModel:
    if not is_ir(path):
        raise ValueError(f"{path} is not an OpenVINO IR")
    model = load_openvino(path)
    model.runtime, model.round_to = "openvino", model.header.get("round_to", 1)
    return model


register_runner(IR_SUFFIX, _run_ir)
