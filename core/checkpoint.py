"""The checkpoint format, on the ground floor because every layer reads it.

Tensors in safetensors, plus a JSON header that rebuilds the model (``core.models.load_model``
builds it). Four kinds of file hold a checkpoint: ``.safetensors`` (training writes them),
``.pt`` (``export --format pt``), ``.onnx`` (``export --format onnx|onnx-int8``: a graph whose
``metadata_props`` carry the same header) and ``.xml`` (``export --format openvino``: an OpenVINO IR, its
weights in the ``.bin`` beside it, the header in its ``rt_info``). This module reads and writes the headers and
tensors of all of them; a format that has no PyTorch weights (ONNX, the IR) registers the module that runs it with
:func:`register_runner` (``core.deploy.onnx`` and ``core.deploy.openvino`` do, on import).

Nothing here unpickles code: weights load through safetensors, and the trainer
state (optimiser, scheduler, counters) and exported ``.pt`` models through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core.io import atomic_write, write_bytes_to
from core.registry import Registry

FORMAT_VERSION = 1
HEADER_KEY = "core"
PT_FORMAT = "core-checkpoint-pt-1"
REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "checkpoints"  # the payload tag of `export --format pt` files
BEST, LAST, TRAINER_STATE = "best.safetensors", "last.safetensors", "trainer_state.pt"
ONNX_SUFFIX = ".onnx"  # ONNX exports (core.deploy.onnx) are told apart by suffix: a protobuf has no magic number
IR_SUFFIX = ".xml"  # OpenVINO IR exports (core.deploy.openvino): the graph; its weights are the .bin beside it
# a checkpoint's out-of-distribution model, when it is not in the checkpoint itself (core.evaluation.ood): a property
# of that checkpoint, never a checkpoint of its own
SIDECAR_SUFFIX = ".ood.safetensors"


class Header(TypedDict, total=False):
    """The JSON header every checkpoint carries (``.safetensors`` metadata, ``.pt`` payload, ONNX metadata_props).

    Always written by the engine: ``method``, ``model`` (the spec ``core.models.build_from_spec`` builds),
    ``image_size``, ``normalization`` (``mean``, ``std``), ``dataset``, ``data_root``, ``params``, ``macs``
    (of the network as trained), ``config`` (its TrainConfig), ``metrics`` and ``format_version``. Added by
    what made the checkpoint: a student's ``teacher`` and ``pruning`` record, a Taylor step's
    ``structured_pruning``, a lottery ticket's ``lth``, a fine-tune's ``finetuned_from`` and ``student_method``,
    an export's ``compacted_from`` and ``deploy``, a shipped file's ``stored_dtype`` and ``shipped_from``, the
    engine's ``ood`` record with its tensors (``extra_tensors`` lists their prefixes: they are not weights).
    What the network costs is read in one place: :func:`compact_cost`.
    """

    format_version: int
    method: str
    model: dict
    image_size: int
    normalization: dict
    dataset: str
    data_root: str | None
    params: float
    macs: float
    config: dict
    metrics: dict
    teacher: str | None
    pruning: dict
    structured_pruning: dict
    lth: dict
    finetuned_from: str
    student_method: str
    compacted_from: str
    deploy: dict
    stored_dtype: str
    shipped_from: str
    ood: dict  # the out-of-distribution model's record (core.evaluation.ood), written by the engine after the test
    extra_tensors: list  # prefixes of stored tensors that are not model weights (e.g. "ood.")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this project (reason in the message)."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, header: dict, dtype: torch.dtype | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model``'s state with ``header`` atomically; ``dtype`` casts floats (e.g. fp16 to ship).

    ``extra`` are tensors that are not weights (their names' prefixes, up to the first dot, go in the header's
    ``extra_tensors``; :func:`load_checkpoint` leaves them out, :func:`load_extra_tensors` reads them)."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    header = {**header, "format_version": FORMAT_VERSION}
    header.pop("extra_tensors", None)
    if extra:
        if any("." not in name for name in extra):
            raise ValueError("extra tensor names need a prefix ending in a dot, e.g. 'ood.0.mean'")
        prefixes = sorted({name.split(".", 1)[0] + "." for name in extra})
        clash = [name for name in state if name.startswith(tuple(prefixes))]
        if clash:
            raise ValueError(f"extra tensors would shadow model weights: {clash[:3]}")
        state.update({name: tensor.detach().to("cpu").contiguous() for name, tensor in extra.items()})
        header["extra_tensors"] = prefixes
    metadata = {HEADER_KEY: json.dumps(header, sort_keys=True, default=str)}
    # serialised in memory, then written by Python: a full disk raises a clear OSError (safetensors' own
    # file writer reports it as an opaque SafetensorError); the bytes are at most one checkpoint
    atomic_write(path, lambda tmp: write_bytes_to(tmp, safetensors_bytes(state, metadata=metadata)))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its best, else last, checkpoint).

    A relative path that does not exist from the working directory is tried from the
    repository root, so ``checkpoints/...`` names in shipped headers work from anywhere.
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run directory holds no {BEST} or {LAST} (did the run finish an epoch?)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``x.safetensors`` (or ``x.onnx``) -> ``x.ood.safetensors``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + SIDECAR_SUFFIX)


def is_sidecar(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(SIDECAR_SUFFIX)


def has_ood_calibration(path: str | os.PathLike, header: Header) -> bool:
    """Whether ``predict`` can say if an input is like this checkpoint's training data: the out-of-distribution
    model is in its header, or in its sidecar."""
    return bool(header.get("ood")) or sidecar_path(path).is_file()


def is_onnx(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


def is_ir(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == IR_SUFFIX


def is_graph(path: str | os.PathLike) -> bool:
    """An export that holds a graph to run (ONNX, OpenVINO IR), not PyTorch weights."""
    return is_onnx(path) or is_ir(path)


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; safetensors files start with a header length."""
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"PK"
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror})") from None


def save_pt(path: str | os.PathLike, model: nn.Module, header: dict) -> None:
    """``{"format", "header", "state_dict"}`` via torch.save: loadable with ``weights_only=True``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": PT_FORMAT, "header": {**header, "format_version": FORMAT_VERSION}, "state_dict": state}
    atomic_write(path, lambda tmp: _torch_save(payload, tmp))


def _refusal(error: Exception) -> str:
    """One line on why torch.load refused a file (its messages span paragraphs; keep the line naming the culprit)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    culprit = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), lines[0] if lines else "")
    return f"{type(error).__name__}: {culprit}"[:300]


def _load_pt(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - anything unreadable is "not a checkpoint"
        raise CheckpointError(f"{path}: not a readable .pt checkpoint ({_refusal(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT:
        raise CheckpointError(f"{path}: a torch file, but not one written by `python -m core export --format pt`")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: damaged .pt checkpoint (its state_dict is not a dict of tensors)")
    return state, _check_version(path, payload.get("header"))


def _check_version(path: Path, header) -> dict:
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged checkpoint header (not a JSON object)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} but this version of core reads format {FORMAT_VERSION}"
        )
    return header


def read_onnx_header(path: str | os.PathLike) -> dict:
    """The checkpoint header stored in an ONNX file's ``metadata_props``; CheckpointError when there is none."""
    import onnx  # optional runtime, imported on use

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises its own DecodeError; anything unreadable is "not ONNX"
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(error).__name__})") from None
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    if HEADER_KEY not in metadata:
        raise CheckpointError(f"{path}: an ONNX model without this project's header (metadata_props key {HEADER_KEY!r}); "
                              f"only files written by `python -m core export CKPT --format onnx` can be loaded")
    try:
        return json.loads(metadata[HEADER_KEY])
    except ValueError:
        raise CheckpointError(f"{path}: damaged checkpoint header in the ONNX metadata") from None


def read_ir_header(path: str | os.PathLike) -> dict:
    """The checkpoint header in an OpenVINO IR's ``rt_info`` (``<core value="..."/>``), read as XML: no OpenVINO needed."""

    try:
        entry = ElementTree.parse(path).getroot().find(f"rt_info/{HEADER_KEY}")
    except (ElementTree.ParseError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable OpenVINO IR ({type(error).__name__})") from None
    if entry is None or entry.get("value") is None:
        raise CheckpointError(f"{path}: an XML file without this project's header (rt_info {HEADER_KEY!r}); only "
                              "IRs written by `python -m core export CKPT --format openvino` can be loaded")
    try:
        return json.loads(entry.get("value"))
    except ValueError:
        raise CheckpointError(f"{path}: damaged checkpoint header in the IR's rt_info") from None


# suffix -> runner(path) -> module: formats that hold a graph, not PyTorch weights, and the layer that runs them
# (core.deploy.onnx registers ".onnx" on import; core.load_model imports it)
RUNNERS: Registry[Callable[[Path], nn.Module]] = Registry("graph-format runner")


def register_runner(suffix: str, runner: Callable[[Path], nn.Module]) -> None:
    RUNNERS.register(suffix.lower(), runner)


def runner_for(path: Path) -> Callable[[Path], nn.Module] | None:
    """The registered runner of a graph format (``.onnx``), None for a file with PyTorch weights."""
    suffix = path.suffix.lower()
    if suffix == ONNX_SUFFIX and suffix not in RUNNERS:
        raise CheckpointError(f"{path}: an ONNX export; ONNX Runtime support is registered by core.deploy.onnx "
                              "(core.load_model, the CLI and the dashboard import it)")
    if suffix == IR_SUFFIX and suffix not in RUNNERS:
        raise CheckpointError(f"{path}: an OpenVINO IR; OpenVINO support is registered by core.deploy.openvino "
                              "(core.load_model, the CLI and the dashboard import it)")
    return RUNNERS.get(suffix)


def read_header(path: str | os.PathLike) -> Header:
    """The JSON header of a checkpoint, without loading its tensors (an ONNX export's: from its metadata)."""
    path = resolve_checkpoint(path)
    if is_onnx(path):
        return _check_version(path, read_onnx_header(path))
    if is_ir(path):
        return _check_version(path, read_ir_header(path))
    if _is_torch_file(path):
        return _load_pt(path)[1]
    try:

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a safetensors checkpoint, or a truncated one ({error})") from None
    if HEADER_KEY not in metadata and is_sidecar(path):
        checkpoint = path.with_name(path.name.removesuffix(SIDECAR_SUFFIX) + ".safetensors")
        raise CheckpointError(f"{path}: the out-of-distribution sidecar of {checkpoint.name}, not a checkpoint; "
                              f"pass {checkpoint}")
    if HEADER_KEY not in metadata:
        raise CheckpointError(f"{path}: safetensors file without this project's header (not written by core?)")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except ValueError:
        raise CheckpointError(f"{path}: damaged checkpoint header") from None
    return _check_version(path, header)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Header]:
    """(state dict, header) of a checkpoint file or run directory."""
    path = resolve_checkpoint(path)
    if is_graph(path):
        raise CheckpointError(f"{path}: an {'ONNX' if is_onnx(path) else 'OpenVINO IR'} export holds a graph, not PyTorch "
                              "weights; core.load_model runs it, training and fine-tuning need the source checkpoint")
    if _is_torch_file(path):
        return _load_pt(path)
    header = read_header(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({error})") from None
    extra = tuple(header.get("extra_tensors") or ())
    return ({name: tensor for name, tensor in state.items() if not name.startswith(extra)} if extra else state), header


def load_extra_tensors(path: str | os.PathLike, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` checkpoint that are not weights (see ``save_checkpoint(extra=)``): those whose
    names start with ``prefix``, or all of them. Other formats hold none."""

    path = resolve_checkpoint(path)
    declared = tuple(read_header(path).get("extra_tensors") or ())
    if is_graph(path) or _is_torch_file(path) or not declared:
        return {}
    prefix = prefix if prefix is not None else declared
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys() if name.startswith(prefix)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({error})") from None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` (any float dtype) into ``model``, with a clear error on a mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{source} does not match the architecture its header names: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]}"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def _torch_save(payload, tmp: str) -> None:
    """torch.save through a Python file object: a full disk raises OSError(ENOSPC), not torch's opaque RuntimeError."""
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)


def save_trainer_state(path: str | os.PathLike, state: dict) -> None:
    atomic_write(path, lambda tmp: _torch_save(state, tmp))


def load_trainer_state(path: str | os.PathLike) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a trainer state"
        raise CheckpointError(f"{path}: unreadable trainer state ({_refusal(error)})") from None


def compact_cost(header: Header) -> dict:
    """What a checkpoint's deployable network costs, read in one place for every kind of checkpoint.

    ``params`` and ``macs`` of the network it serves; for a pruned one (``pruned``: a masked or compact
    student's ``pruning`` record, a Taylor student's ``structured_pruning``) also those of the dense network
    it came from (``full_params``, ``full_macs``: the teacher's, or the dense network Taylor pruned) and the
    reductions. A fine-tuned compact network reports its own count. Anything else: its own count, nothing
    removed (``full_*`` None, reductions 0).
    """
    record = header.get("pruning") or header.get("structured_pruning") or {}
    if "compact_params" not in record:
        return {"pruned": False, "params": header.get("params"), "macs": header.get("macs"), "full_params": None,
                "full_macs": None, "params_reduction": 0.0, "macs_reduction": 0.0}
    full_params = record.get("teacher_params") or record.get("dense_params")
    full_macs = record.get("teacher_macs") or record.get("dense_macs")
    params, macs = record["compact_params"], record["compact_macs"]
    if header.get("model", {}).get("type") == "compact-resnet" and header.get("params"):
        params, macs = header["params"], header["macs"]  # a fine-tuned compact network: its own count
    return {"pruned": True, "params": params, "macs": macs, "full_params": full_params, "full_macs": full_macs,
            "params_reduction": 1 - params / full_params, "macs_reduction": 1 - macs / full_macs}
