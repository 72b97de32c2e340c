"""Training configuration: one dataclass of plain values, named presets, overrides.

Precedence, lowest first: the dataclass defaults, the preset
(``configs/presets.yaml``), a ``--config`` YAML file, then command-line flags.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.options import Declaration, declarations, option

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESETS_FILE = CONFIG_DIR / "presets.yaml"
PRESETS_ENV = "CORE_PRESETS"  # more preset files (os.pathsep-separated), merged over PRESETS_FILE key by key
PROTOCOLS_FILE = CONFIG_DIR / "protocols.yaml"  # what the papers publish (reproduce, report's published rows)


OPTIMIZERS = ("adam", "adamw", "adamax", "sgd")  # adamax: the Pearson authors' code
SCHEDULERS = ("cosine", "warmup-cosine", "step", "none")
AUGMENTATIONS = ("paper", "light", "none")  # core.data.images.train_transform
NONFINITE_MODES = ("stop", "skip")
EARLY_STOPPING_METRICS = ("accuracy", "loss")  # the validation metric the patience watches
FOLLOW_SIDES = ("code", "paper")  # where the paper's text and its authors' code disagree, which one a run follows


@dataclass
class TrainConfig:
    """One run's settings, each declared once (:func:`core.options.option`): its flag on ``train``, ``finetune`` and
    ``transfer``, its sidebar widget (those with a label), its check and its row in the docs' table of settings come
    from here. ``internal`` settings are set by a command's own arguments (``--method``, ``--preset``, a fine-tune's
    checkpoint) or by the method's options, never by a generic flag."""

    method: str = option("teacher", "the method (python -m core train --method)", internal=True)
    data: str = option("synthetic", "synthetic, synthetic:<source>, a registered name, or a folder/CSV path")
    data_root: str | None = option(None, "root folder of a registered dataset")
    arch: str = option("resnet50", "architecture (default resnet50; python -m core models)")
    pretrained: str | None = option(None, "'imagenet', a local weights file, or 'none'")
    trainable: str = option("all", "what is trained: all, or layer4 (only layer4 and the head: the paper's fine-tune; "
                                   "transfer's default)", choices=("all", "layer4"))
    image_size: int = option(64, "input size in pixels", low=16)
    epochs: int = option(10, "epochs", label="Epochs", low=1)
    batch_size: int = option(32, "images per step (per process under torchrun)", label="Batch size", low=1)
    optimizer: str = option("adam", "the optimizer (adamax: the Pearson authors' code)", choices=OPTIMIZERS)
    lr: float = option(1e-3, "learning rate", label="Learning rate", low=0, low_open=True)
    weight_decay: float = option(1e-4, "weight decay (AdamW's decoupled; L2 for the others)", low=0)
    momentum: float = option(0.9, "SGD momentum", low=0)
    scheduler: str = option("cosine", "lr schedule, stepped per epoch", choices=SCHEDULERS)
    step_size: int = option(10, "step scheduler: epochs per 10x decay", low=1)
    warmup_epochs: int = option(0, "warmup-cosine: epochs of linear warm-up before the cosine", low=0)
    early_stopping_patience: int | None = option(
        None, "early stopping: epochs without a better validation accuracy, or loss (the patience metric); default off",
        low=1, flag="patience")
    early_stopping_metric: str = option(
        "accuracy", "what early stopping watches (the best checkpoint stays the best accuracy's)",
        choices=EARLY_STOPPING_METRICS, flag="patience-metric")
    augment: str = option("paper", "paper: flip, rotation, crop, colour jitter, affine; light: flip, crop, jitter",
                          choices=AUGMENTATIONS)
    max_train_samples: int | None = option(None, "an evenly spread subset of the training images, for quick runs",
                                           label="Max training images (a quick look)", low=1)
    max_eval_samples: int | None = option(None, "an evenly spread subset of the validation and test images", low=1)
    num_workers: int = option(-1, "DataLoader workers (-1: automatic)", low=-1)
    seed: int = option(0, "random seed")
    device: str = option("auto", "cuda, cuda:1, mps, cpu or auto ($CORE_DEVICE, else the first GPU, else the CPU)")
    amp: bool = option(True, "mixed precision (CUDA only)")
    channels_last: bool = option(True, "NHWC weights and batches in training (faster on CUDA and on the CPU)")
    log_every: int = option(5, "steps between progress records in metrics.jsonl", low=1)
    nonfinite: str = option("stop", "a NaN/Inf loss: stop the run, keeping the last good checkpoint, or skip that "
                                    "step's update (too many such steps in a row still stop it)",
                            choices=NONFINITE_MODES)
    nonfinite_max_skips: int = option(20, "skip: this many non-finite steps in a row still stop the run", low=0)
    runs_dir: str | None = option(None, "where run directories go ($CORE_RUNS_DIR, else runs/)")
    teacher: str | None = option(None, "teacher checkpoint or run (students: default a shipped teacher of the same "
                                        "data; finetune: the student's own teacher)")
    init_checkpoint: str | None = option(None, "the network a run starts from (a fine-tune's student, the network "
                                               "to prune)", internal=True)
    preset: str | None = option(None, "the named preset the run started from (--preset)", internal=True)
    follow: str = option("code", "a dataset preset (rvf10k, 140k, ...): where the paper's text and its authors' code "
                                 "disagree, follow the code (it produced the published numbers) or the paper's equations",
                         choices=FOLLOW_SIDES)
    method_options: dict = option({}, "the method's options (core.methods.options)", internal=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(f.name for f in dataclasses.fields(cls))}")
        return cls(**values)


def training_settings() -> tuple[Declaration, ...]:
    """Every TrainConfig setting as declared (read at call time: a setting added to the class appears everywhere)."""
    return declarations(TrainConfig)


def check_domains(config: TrainConfig) -> None:
    """Every setting inside its domain, checked before anything is written (``--epochs 0`` is refused, not run): a
    ValueError naming the setting's flag and its domain."""
    check_settings({s.name: getattr(config, s.name) for s in training_settings() if not s.internal})


def check_settings(values: dict, where: str = "") -> None:
    """``values`` (TrainConfig keys: a preset's block, a config file) each inside its declared domain; a ValueError
    naming the setting (after ``where``), its domain and the value. ``method_options`` are the method's to check."""
    declared = {s.name: s for s in training_settings()}
    unknown = set(values) - set(declared)
    if unknown:
        raise ValueError(f"{where}unknown keys {sorted(unknown)} (TrainConfig fields: {sorted(declared)})")
    for name, value in values.items():
        setting = declared[name]
        if setting.internal:
            continue
        try:
            setting.check(value)
        except ValueError:
            domain = setting.domain()
            domain = f"a number {domain}" if setting.kind in (int, float) and not setting.choices else domain
            raise ValueError(f"{where}{setting.flag} must be {domain}, got {value!r}") from None


_PARSED: dict[tuple[str, int, int], object] = {}  # parsed YAML files by (path, modification time, size)


def parsed_yaml(path: Path) -> object:
    """``path`` parsed as YAML (safe loader; libyaml's where installed), a fresh copy per call. The parse is kept by
    the file's path, modification time and size: a command reads the presets once per setting it resolves (a
    ``reproduce`` plan: about 330 times, 45 s of pure-Python parsing on this machine), and an edited file is read
    again."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return copy.deepcopy(_PARSED[key])  # a caller may change its copy; YAML anchors stay shared within it


def load_presets() -> dict[str, dict]:
    """The named presets (keys starting with ``_`` only hold shared YAML anchors), with those of the files in
    ``$CORE_PRESETS`` merged over them key by key (a new method's entry in an existing preset, a new preset)."""
    loaded = parsed_yaml(PRESETS_FILE) or {}
    for extra in filter(None, os.environ.get(PRESETS_ENV, "").split(os.pathsep)):
        _merge_deep(loaded, parsed_yaml(Path(extra)) or {})
    return {name: preset for name, preset in loaded.items() if not name.startswith("_")}


def load_protocols() -> dict[str, dict]:
    """The papers' published numbers and claims, one entry per paper (``configs/protocols.yaml``; keys starting with
    ``_`` only hold shared YAML anchors)."""
    loaded = parsed_yaml(PROTOCOLS_FILE) or {}
    return {name: entry for name, entry in loaded.items() if not name.startswith("_")}


def _merge_deep(base: dict, layer: dict) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = dict(base[key])  # YAML anchors share dicts: never write through one
            _merge_deep(base[key], value)
        else:
            base[key] = value


def _merge(values: dict, layer: dict) -> None:
    """Update ``values`` with ``layer``; ``method_options`` merge key by key."""
    for key, value in layer.items():
        if key == "method_options" and isinstance(value, dict):
            values["method_options"] = {**values.get("method_options", {}), **value}
        else:
            values[key] = value


SOURCES = ("published", "author-code", "ours")  # a dataset preset's declared layers, in merge order
NOTES = {"published": "refs", "author-code": "refs", "ours": "reasons"}  # where each layer says why


def preset_layers(preset: dict) -> list[dict]:
    """A preset's ``{train, methods}`` layers in merge order: ``published``, ``author-code``, ``ours``; or the preset
    itself (an embedded preset has one layer)."""
    return [layer for _, layer in sourced_layers(preset)]


def sourced_layers(preset: dict) -> list[tuple[str, dict]]:
    """``(source, layer)`` in merge order; an unlayered preset is one layer of ``ours``."""
    if any(source in preset for source in SOURCES):
        return [(source, preset.get(source) or {}) for source in SOURCES]
    return [("ours", preset)]


def layer_note(layer: dict, source: str, path: str) -> str:
    """The reference (or reason) a layer gives for ``path``: its entry with the longest key-path prefix of it."""
    notes = layer.get(NOTES[source]) or {}
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in notes:
            return str(notes[".".join(parts[:end])])
    return ""


def resolve_preset(preset_name: str, method: str, student_method: str | None = None,
                   follow: str = "code") -> tuple[dict, dict[str, dict]]:
    """``(values, sources)``: the TrainConfig values a named preset gives ``method`` (a fine-tune: of a
    ``student_method`` student), and for each (``method_options.<name>`` for an option) where it comes from,
    ``{"source": published | author-code | ours, "ref": ...}``.

    Order: every layer's ``train``, then every layer's ``methods.<method>`` (without its ``finetune`` part), then,
    for ``finetune``, every layer's ``methods.finetune`` and ``methods.<student_method>.finetune``. An author-code value
    for a key that ``published`` sets departs from the paper's text: it is taken only when following the code."""
    if follow not in FOLLOW_SIDES:
        raise ValueError(f"follow must be one of {', '.join(FOLLOW_SIDES)}, got {follow!r}")
    presets = load_presets()
    if preset_name not in presets:
        raise ValueError(f"unknown preset '{preset_name}'; choose from {sorted(presets)}")
    layers = sourced_layers(presets[preset_name])
    values: dict = {}
    sources: dict[str, dict] = {}

    def apply(source: str, layer: dict, block: dict, path: str) -> None:
        for key, value in block.items():
            entries = [(f"method_options.{k}", v, f"{path}.method_options.{k}") for k, v in value.items()] \
                if key == "method_options" and isinstance(value, dict) else [(key, value, f"{path}.{key}")]
            for name, item, where in entries:
                departs = source == "author-code" and sources.get(name, {}).get("source") == "published"
                if departs and follow == "paper":
                    continue
                if name.startswith("method_options."):
                    values["method_options"] = {**values.get("method_options", {}), name.split(".", 1)[1]: item}
                else:
                    values[name] = item
                sources[name] = {"source": source, "ref": layer_note(layer, source, where),
                                 **({"departs_from": sources[name]["ref"]} if departs else {})}

    for source, layer in layers:
        apply(source, layer, layer.get("train", {}), "train")
    for source, layer in layers:
        block = {k: v for k, v in (layer.get("methods", {}).get(method) or {}).items() if k != "finetune"}
        apply(source, layer, block, f"methods.{method}")
    if method == "finetune" and student_method:
        for source, layer in layers:
            apply(source, layer, (layer.get("methods", {}).get(student_method) or {}).get("finetune", {}),
                  f"methods.{student_method}.finetune")
    return values, sources


def preset_values(preset_name: str, method: str, student_method: str | None = None, follow: str = "code") -> dict:
    """The TrainConfig values a named preset gives ``method`` (see :func:`resolve_preset`)."""
    return resolve_preset(preset_name, method, student_method, follow)[0]


def published_finetune(preset_name: str, student_method: str) -> bool:
    """Whether the preset fine-tunes ``student_method`` students (a dataset preset: whether the paper did)."""
    layers = preset_layers(load_presets()[preset_name])
    methods = layers[0].get("methods", {})
    return "finetune" in methods or "finetune" in methods.get(student_method, {})


def finetune_defaults(student_method: str) -> dict:
    """The published fine-tune of a ``student_method`` student when no preset is given: the ``paper``
    preset's ``methods.finetune`` and ``methods.<student_method>.finetune``."""
    methods = load_presets()["paper"].get("methods", {})
    values: dict = {}
    _merge(values, methods.get("finetune", {}))
    _merge(values, methods.get(student_method, {}).get("finetune", {}))
    return values


def build_config(preset: str | None = None, config_file: str | None = None, student_method: str | None = None,
                 **overrides) -> TrainConfig:
    """Merge defaults, a named preset, a YAML file and explicit overrides (None = not given).

    A preset has a ``train`` section for every method and optional ``methods.<name>``
    sections that apply on top for that method (e.g. the papers' KDFS and Pearson tables);
    a dataset preset splits both into ``published`` and ``ours`` layers (:func:`preset_values`).
    ``student_method``: for ``finetune``, the method of the student being fine-tuned.
    """
    loaded: dict = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping of TrainConfig keys")
    given = {k: v for k, v in overrides.items() if v is not None}
    method = given.get("method", loaded.get("method", TrainConfig.method))
    follow = given.get("follow", loaded.get("follow", TrainConfig.follow))
    values: dict = {}
    if preset is not None:
        _merge(values, preset_values(preset, method, student_method, follow))
        values["preset"] = preset
    _merge(values, loaded)
    _merge(values, given)
    if isinstance(values.get("pretrained"), str) and values["pretrained"].lower() in ("none", ""):
        values["pretrained"] = None
    return TrainConfig.from_dict(values)
