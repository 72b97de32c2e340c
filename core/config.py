"""Training configuration: one dataclass of plain values, named presets, overrides.

Precedence, lowest first: the dataclass defaults, the preset
(``configs/presets.yaml``), a ``--config`` YAML file, then command-line flags.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESETS_FILE = CONFIG_DIR / "presets.yaml"
PRESETS_ENV = "CORE_PRESETS"  # more preset files (os.pathsep-separated), merged over PRESETS_FILE key by key
PROTOCOLS_FILE = CONFIG_DIR / "protocols.yaml"  # what the papers publish (reproduce, report's published rows)


@dataclass
class TrainConfig:
    method: str = "teacher"
    data: str = "synthetic"
    data_root: str | None = None
    arch: str = "resnet50"
    pretrained: str | None = None  # None, "imagenet" or a local weights file
    trainable: str = "all"  # "all", or "layer4" (only layer4 and the head, the paper's fine-tune)
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # cosine | warmup-cosine | step | none
    step_size: int = 10  # step scheduler: epochs per 10x decay
    warmup_epochs: int = 0  # warmup-cosine: epochs of linear warm-up before the cosine
    early_stopping_patience: int | None = None  # stop after this many epochs without a better validation metric
    early_stopping_metric: str = "accuracy"  # what the patience watches: validation accuracy or loss (best.* stays accuracy's)
    augment: str = "paper"  # paper | light | none (core.data.images.train_transform)
    max_train_samples: int | None = None  # an evenly spread subset, for quick runs
    max_eval_samples: int | None = None
    num_workers: int = -1  # -1 = automatic
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # NHWC weights and batches in training (CUDA and CPU: faster on both)
    log_every: int = 5  # steps between progress records in metrics.jsonl
    nonfinite: str = "stop"  # a NaN/Inf loss: stop (keep the last good checkpoint) | skip (no update for that step)
    nonfinite_max_skips: int = 20  # skip: this many non-finite steps in a row still stop the run
    runs_dir: str | None = None  # default: $CORE_RUNS_DIR or <repo>/runs
    teacher: str | None = None  # teacher checkpoint, for students
    init_checkpoint: str | None = None  # fine-tuning: the student checkpoint to start from
    preset: str | None = None
    follow: str = "code"  # a dataset preset: where the paper's text and its authors' code disagree, follow the code or the paper
    method_options: dict = field(default_factory=dict)  # method-specific hyperparameters

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(f.name for f in dataclasses.fields(cls))}")
        return cls(**values)


OPTIMIZERS = ("adam", "adamw", "adamax", "sgd")  # adamax: the Pearson authors' code
SCHEDULERS = ("cosine", "warmup-cosine", "step", "none")
# the smallest value each numeric setting takes (None, where a field allows it, means "not set")
LOWEST = {"epochs": 1, "batch_size": 1, "image_size": 16, "step_size": 1, "warmup_epochs": 0, "weight_decay": 0,
          "momentum": 0, "early_stopping_patience": 1, "max_train_samples": 1, "max_eval_samples": 1, "log_every": 1,
          "nonfinite_max_skips": 0}


def check_domains(config: TrainConfig) -> None:
    """Every setting inside its domain, checked before anything is written (``--epochs 0`` is refused, not run)."""
    for name, lowest in LOWEST.items():
        value = getattr(config, name)
        if value is None and name in ("early_stopping_patience", "max_train_samples", "max_eval_samples"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= lowest:
            raise ValueError(f"{name.replace('_', '-')} must be a number >= {lowest}, got {value!r}")
    if isinstance(config.lr, bool) or not isinstance(config.lr, int | float) or not config.lr > 0:
        raise ValueError(f"lr must be a number > 0, got {config.lr!r}")
    for name, choices in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("follow", FOLLOW_SIDES)):
        if getattr(config, name) not in choices:
            raise ValueError(f"unknown {name} {getattr(config, name)!r}; choose from {', '.join(choices)}")


def load_presets() -> dict[str, dict]:
    """The named presets (keys starting with ``_`` only hold shared YAML anchors), with those of the files in
    ``$CORE_PRESETS`` merged over them key by key (a new method's entry in an existing preset, a new preset)."""
    loaded = yaml.safe_load(PRESETS_FILE.read_text()) or {}
    for extra in filter(None, os.environ.get(PRESETS_ENV, "").split(os.pathsep)):
        _merge_deep(loaded, yaml.safe_load(Path(extra).read_text()) or {})
    return {name: preset for name, preset in loaded.items() if not name.startswith("_")}


def load_protocols() -> dict[str, dict]:
    """The papers' published numbers and claims, one entry per paper (``configs/protocols.yaml``; keys starting with
    ``_`` only hold shared YAML anchors)."""
    loaded = yaml.safe_load(PROTOCOLS_FILE.read_text()) or {}
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
FOLLOW_SIDES = ("code", "paper")  # where the paper's text and its authors' code disagree, which one a run follows
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


def _note(layer: dict, source: str, path: str) -> str:
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
                sources[name] = {"source": source, "ref": _note(layer, source, where),
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
