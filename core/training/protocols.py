"""Paper protocols, reproduced end to end: ``python -m core reproduce PROTOCOL --dataset D``.

A protocol is a list of stages, each one ordinary ``python -m core train|finetune``
command line (so every stage can also be run by hand, and its run directory is an
ordinary run): the teacher (or a given one), then for each seed every compared method's
search and, where the paper fine-tuned that method on that dataset, its fine-tune; then
``report``, with the paper's published numbers (``configs/protocols.yaml``) beside the
measured ones.

Resumable: each stage trains through :func:`core.training.engine.train_once`, which
reuses a finished run of the same config in the protocol's runs directory and resumes
an interrupted one, so running the same command again after a kill continues where it
stopped and recomputes nothing.

Scales:

- ``full``: the dataset preset's published settings, unchanged (``configs/presets.yaml``).
- ``mini``: the same settings on a small budget. Every stage trains
  ``min(MINI_MAX_EPOCHS, ceil(E / MINI_EPOCH_DIVISOR))`` of its ``E`` published epochs, at the
  embedded benchmark's 64 px; the Gumbel schedule ``tau(e) = tau_0 (tau_E/tau_0)^((e+1)/E)``
  keeps its published end points and is compressed into the shorter run (it is defined on
  the fraction of training done). The teacher is the shipped one for the dataset when there
  is one (64 px, trained by the embedded ``full`` preset), else one trained by that preset.

A dataset with no published row (the embedded benchmark, or a folder of your own) is
compared with a reference row: ``synthetic:*`` uses the paper's 140k row, as
``synthetic_reference`` in ``configs/protocols.yaml`` says; others need ``--reference``.

The video benchmarks a paper used (``datasets`` of its entry in ``configs/protocols.yaml``: FF++ for two-in-one,
OpenForensics and FF++ for the lottery tickets) are planned by name without their data; ``--data-root`` (the face
crops ``python -m core data frames`` wrote) goes into every stage's command, and the notes say which split the
benchmark's adapter uses. ``--cross NAME=DIR,...`` adds datasets the report tests every run on as well (the
paper's cross-dataset targets, e.g. Celeb-DF and DFDC after FF++), so its ``cross_dataset_video`` table puts
DeepfakeBench's published rows beside the measured ones.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from core.checkpoint import compact_cost, read_header, resolve_checkpoint
from core.config import (
    FOLLOW_SIDES,
    TrainConfig,
    build_config,
    load_presets,
    load_protocols,
    published_finetune,
    resolve_preset,
)
from core.data.datasets import DATASETS, VIDEO_LAYOUTS, frames_layout
from core.data.synthetic import SOURCES
from core.evaluation.cross_dataset import DatasetSpec, check_dataset_specs, parse_dataset_specs, published_benchmarks
from core.evaluation.evaluate import evaluate
from core.evaluation.report import build_report, published_table, write_table
from core.io import atomic_write_text
from core.methods import compared_in, create_method
from core.methods.distillation import default_teacher
from core.methods.transfer import TRANSFER_SETTINGS, settings_record
from core.runs import default_runs_dir
from core.stats import mean_std
from core.training.engine import train_once
from core.training.executors import ExecutorSettings, TrainJob, run_jobs
from core.training.requests import (
    command_line,
    declared_options,
    explicit_keys,
    finetune_config,
    flag_of,
    kept_result,
    request_of,
    train_configs,
    train_jobs,
    transfer_configs,
    transfer_jobs,
)

log = logging.getLogger(__name__)

SCALES = ("full", "mini")
MINI_EPOCH_DIVISOR = 20
MINI_MAX_EPOCHS = 8
MINI_IMAGE_SIZE = 64  # the embedded benchmark's size (and the shipped teachers')
DEFAULT_SEEDS = {"full": [0, 1, 2], "mini": [0]}  # mini: one seed, a check of the machinery in minutes
PAPER_SEEDS = {"pearson-paper": list(range(10))}  # full scale, as the paper: its t-tests are over 10 seeds
# the keys of a resolved config that the plan prints (the whole config is in each run's config.json)
PLAN_KEYS = ("data", "arch", "image_size", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
             "scheduler", "warmup_epochs", "step_size", "preset", "follow", "seed", "teacher", "init_checkpoint",
             "pretrained", "trainable", "early_stopping_patience", "early_stopping_metric", "max_train_samples",
             "method_options")


def mini_epochs(epochs: int) -> int:
    """The ``mini`` scale's epochs for a stage of ``epochs`` published epochs."""
    return max(1, min(MINI_MAX_EPOCHS, math.ceil(epochs / MINI_EPOCH_DIVISOR)))


@dataclass
class Stage:
    """One stage of a protocol: a ``train``/``finetune``/``transfer`` request (its values by name; ``{KEY}`` in a value
    is the checkpoint of stage ``KEY``), or a given checkpoint. The command line it prints is rendered from the values
    (:func:`core.training.requests.command_line`), never parsed back."""

    stage: str  # teacher | dense | search | finetune | transfer
    method: str
    seed: int
    key: str  # e.g. "search/kdfs/0"
    verb: str | None  # train | finetune | transfer; None: a given checkpoint
    values: dict = field(default_factory=dict)  # the request: settings, method options, the command's arguments
    given: str | None = None  # the teacher's checkpoint, when it is given rather than trained
    label: str = ""  # what tells stages of one method apart (an architecture, a mode)
    config: dict = field(default_factory=dict)  # the resolved values the plan shows
    sources: dict = field(default_factory=dict)  # the same, each as {value, source, ref}

    @property
    def command(self) -> list[str] | None:
        """The arguments of ``python -m core`` that run this stage by hand (None: a given checkpoint)."""
        return None if self.verb is None else command_line(self.verb, self.values)

    @property
    def needs(self) -> list[str]:
        """The stages whose checkpoints this one starts from or distils (the ``{KEY}`` placeholders of its values)."""
        return [key for value in self.values.values() for key in re.findall(r"\{([^}]+)\}", str(value))]

    def record(self) -> dict:
        shown = None if self.verb is None else ["python", "-m", "core", *map(_placeholder, self.command)]
        return {"stage": self.stage, "method": self.method, "seed": self.seed, "label": self.label or None,
                "command": shown, "given": self.given, "config": self.sources or self.config}


def _placeholder(argument: str) -> str:
    """``{search/kdfs/0}`` -> ``<search/kdfs/0 checkpoint>`` for the printed plan."""
    return re.sub(r"\{([^}]+)\}", r"<\1 checkpoint>", argument)


@dataclass
class Plan:
    protocol: str
    dataset: str
    scale: str
    reference: str | None  # the dataset whose published row the measurements are compared with
    runs_dir: Path
    stages: list[Stage]
    notes: list[str]
    data_root: str | None = None
    cross: list[DatasetSpec] = field(default_factory=list)  # datasets the report tests every run on as well
    transfer: list[DatasetSpec] = field(default_factory=list)  # targets each final student is transferred to (Table 8)

    def record(self) -> dict:
        return {"protocol": self.protocol, "dataset": self.dataset, "data_root": self.data_root, "scale": self.scale,
                "reference": self.reference, "runs_dir": str(self.runs_dir), "notes": self.notes,
                "cross": [spec.text for spec in self.cross], "transfer": [spec.text for spec in self.transfer],
                "runs": [s.record() for s in self.stages]}


@dataclass
class PlanContext:
    """What every protocol's planner is given."""

    dataset: str
    data_root: str | None
    scale: str
    seeds: list[int]
    methods: list[str] | None
    teacher: str | None
    runs_dir: Path
    # values added to requests: "train" / "finetune" / "transfer" to every such request, "train:<method>" to that
    # method's (tests shrink the runs with them), e.g. {"train": {"epochs": 1}}
    extra: dict[str, dict]
    follow: str = "code"  # where the paper's text and its authors' code disagree (the dataset presets' layers)
    transfer: list[DatasetSpec] = field(default_factory=list)  # pearson-paper: Table 8's transfer targets
    reference: str | None = None  # the dataset whose published row the runs are compared with (its preset: pearson)

    def common(self, verb: str, method: str) -> dict:
        """What every request of ``verb`` gets: the data, where the runs go, and the ``extra`` values."""
        values = {"data": self.dataset, "runs_dir": str(self.runs_dir)}
        if self.data_root:
            values["data_root"] = self.data_root
        return {**values, **self.extra.get(verb, {}), **self.extra.get(f"{verb}:{method}", {})}

    def wanted(self, methods: list[str]) -> list[str]:
        if self.methods is None:
            return methods
        unknown = sorted(set(self.methods) - set(methods))
        if unknown:
            raise ValueError(f"--methods {','.join(unknown)}: not compared in this protocol; choose from {', '.join(methods)}")
        return [m for m in methods if m in self.methods]


# --- the protocols ------------------------------------------------------------------------


def _teacher_stage(ctx: PlanContext, arch: str, request: dict, key: str = "teacher") -> Stage:
    """A given teacher, the shipped one (mini), or a training stage (``request``: its train values)."""

    given = ctx.teacher if key == "teacher" else None
    if given is None and ctx.scale == "mini":
        given = default_teacher(ctx.dataset, arch)
    if given is not None:
        return Stage("teacher", "teacher", 0, key, None, given=str(given), label=arch)
    return Stage("teacher", "teacher", 0, key, "train", {**request, **ctx.common("train", "teacher")}, label=arch)


def _scaled(ctx: PlanContext, preset: str, method: str, student_method: str | None = None) -> dict:
    """The values that shrink a stage to the ``mini`` scale (none at ``full``)."""
    if ctx.scale == "full":
        return {}
    config = build_config(preset=preset, method=method, student_method=student_method, follow=ctx.follow)
    values = {"epochs": mini_epochs(config.epochs), "image_size": MINI_IMAGE_SIZE}
    if config.scheduler == "warmup-cosine":  # the warm-up keeps its share of the run
        values["warmup_epochs"] = config.warmup_epochs * mini_epochs(config.epochs) // config.epochs
    return values


def _transfer_scaled(ctx: PlanContext) -> dict:
    """The values that shrink a transfer stage to the ``mini`` scale (none at ``full``)."""
    return {} if ctx.scale == "full" else {"epochs": mini_epochs(TRANSFER_SETTINGS["epochs"].value)}


def plan_pearson_paper(ctx: PlanContext) -> tuple[list[Stage], list[str]]:
    """Teacher; per seed: the KDFS, Pearson and PDD searches (and any method compared in this protocol), each
    fine-tuned where the paper fine-tuned it."""
    preset = ctx.reference
    teacher_preset = preset if ctx.scale == "full" else "full"
    stages = [_teacher_stage(ctx, "resnet50", {"method": "teacher", "preset": teacher_preset,
                                               **({"image_size": MINI_IMAGE_SIZE} if ctx.scale == "mini" else {})})]
    notes = [f"hyperparameters: the {preset} preset (configs/presets.yaml); where the paper's text and its authors' "
             f"code disagree, the {'code' if ctx.follow == 'code' else 'paper'}'s side is followed (--follow "
             f"{ctx.follow}); every value says its source"]
    compared = ctx.wanted(compared_in("pearson-paper"))  # every method that says it takes part (Method.compared_in)
    for seed in ctx.seeds:
        for method in compared:
            search = f"search/{method}/{seed}"
            stages.append(Stage("search", method, seed, search, "train",
                                {"method": method, "preset": preset, "follow": ctx.follow, "teacher": "{teacher}",
                                 "seed": seed, **_scaled(ctx, preset, method), **ctx.common("train", method)}))
            if published_finetune(preset, method):
                stages.append(Stage("finetune", method, seed, f"finetune/{method}/{seed}", "finetune",
                                    {"checkpoint": f"{{{search}}}", "preset": preset, "follow": ctx.follow, "seed": seed,
                                     **_scaled(ctx, preset, "finetune", method), **ctx.common("finetune", method)}))
            final = f"finetune/{method}/{seed}" if published_finetune(preset, method) else search
            for spec in ctx.transfer:  # Table 8: the compressed student fine-tuned on another dataset
                stages.append(Stage("transfer", method, seed, f"transfer/{method}/{seed}/{spec.label}", "transfer",
                                    {"checkpoint": f"{{{final}}}", "data": spec.name, "data_root": spec.root,
                                     "seed": seed, "runs_dir": str(ctx.runs_dir), **_transfer_scaled(ctx),
                                     **ctx.extra.get("transfer", {})}, label=spec.label))
    if ctx.transfer:
        notes.append(f"transfer (Table 8): each final student's layer4 + FC retrained on {', '.join(s.text for s in ctx.transfer)} "
                     "in its source's normalisation (AdamW, lr x 0.1 every 5 epochs, the best lr of the grid by target "
                     "validation accuracy kept); the report's transfer table, its published columns not typed in")
    fine_tuned = [m for m in compared if published_finetune(preset, m)]
    notes.append(f"fine-tuned, as the paper did on {preset}: {', '.join(fine_tuned) or 'none'}; "
                 "a fine-tune starts from its search's last checkpoint (the authors' script)")
    if ctx.scale == "mini":
        notes.append(f"mini: each stage trains min({MINI_MAX_EPOCHS}, ceil(E/{MINI_EPOCH_DIVISOR})) of its E published "
                     f"epochs at {MINI_IMAGE_SIZE} px; the Gumbel tau keeps its published start and end, compressed "
                     "into the shorter run; the teacher is the shipped one for the dataset when there is one (else one "
                     "trained by the embedded full preset)")
    return stages, notes


def plan_lottery_tickets(ctx: PlanContext) -> tuple[list[Stage], list[str]]:
    """Per architecture and seed: a dense run, IMP rounds of 20% to 80% sparsity, and one-shot to 80%."""
    preset = "full" if ctx.scale == "full" else "quick"
    archs = ["mesonet", "cnn5", "resnet18"] if ctx.scale == "full" else ["mesonet"]
    stages = [Stage("search", "lth", seed, f"search/lth-{arch}/{seed}", "train",
                    {"method": "lth", "arch": arch, "preset": preset, "one_shot": True, "chain": f"{arch}-seed{seed}",
                     "seed": seed, **ctx.common("train", "lth")}, label=arch)
              for seed in ctx.seeds for arch in archs]
    return stages, [f"no published training settings: the embedded {preset} preset's (4-10 epochs per round)",
                    f"architectures: {', '.join(archs)}" + ("" if ctx.scale == "full" else " (mini: MesoNet only)")]


# the report's fine-tune, which the B0 teacher's fine-tune takes from the ntu preset's taylor entry: the settings its
# train request sets over the dense runs' preset (the others must already be the same in both)
NTU_FINETUNE_KEYS = ("epochs", "optimizer", "lr", "scheduler", "early_stopping_patience", "weight_decay",
                     "early_stopping_metric")


def plan_ntu_taylor(ctx: PlanContext) -> tuple[list[Stage], list[str]]:
    """The NTU report's protocol: the dense B0 and Lite0, the B0 fine-tuned into the teacher, then Taylor + KD of the
    Lite0, iterative (the preset's steps) and one-shot.

    ``full``: the ``ntu`` preset (224 px; the report's dense training, its fine-tune for the B0 and for every pruning
    step). ``mini``: the dataset's shipped B0 and Lite0 (else ones the embedded ``efficientnet`` preset trains, at
    64 px), no B0 fine-tune, and the ``quick`` preset's Taylor budget at 64 px. A given ``--teacher`` is the
    fine-tuned B0."""
    full = ctx.scale == "full"
    dense_preset = "ntu" if full else "efficientnet"  # mini: the preset that trained the shipped B0 and Lite0

    def dense_request(arch: str) -> dict:
        return {"method": "teacher", "arch": arch, "preset": dense_preset, **({} if full else {"pretrained": "imagenet"})}

    trained_teacher = full and ctx.teacher is None
    if trained_teacher:
        dense_b0 = Stage("dense", "teacher", 0, "dense/efficientnet_b0", "train",
                         {**dense_request("efficientnet_b0"), **ctx.common("train", "teacher")}, label="efficientnet_b0")
        teacher = Stage("teacher", "teacher", 0, "teacher", "train",
                        {"method": "teacher", "arch": "efficientnet_b0", "preset": "ntu",
                         "init_checkpoint": f"{{{dense_b0.key}}}", "pretrained": "none", **_ntu_finetune(),
                         **ctx.common("train", "teacher")}, label="efficientnet_b0")
    else:
        teacher = _teacher_stage(ctx, "efficientnet_b0", dense_request("efficientnet_b0"))
    dense = _teacher_stage(replace(ctx, teacher=None), "efficientnet_lite0", dense_request("efficientnet_lite0"),
                           key="dense")
    dense.stage = "dense"
    stages = [dense_b0, dense, teacher] if trained_teacher else [teacher, dense]
    quick = build_config(preset="quick", method="taylor")  # mini: the embedded quick budget of a Taylor step
    budget = {} if full else {"epochs": quick.epochs, "max_train_samples": quick.max_train_samples,
                              "image_size": MINI_IMAGE_SIZE}
    for seed in ctx.seeds:
        for one_shot in (False, True):
            name = "one-shot" if one_shot else "iterative"
            stages.append(Stage("search", "taylor", seed, f"search/taylor-{name}/{seed}", "train",
                                {"method": "taylor", "preset": "ntu", "init_checkpoint": "{dense}",
                                 "teacher": "{teacher}", "seed": seed, "one_shot": one_shot, **budget,
                                 **ctx.common("train", "taylor")}, label=name))
    return stages, _ntu_notes(ctx, quick)


def _ntu_finetune() -> dict:
    """The B0 teacher's fine-tune: the report's fine-tune (the ``ntu`` preset's taylor entry), as the values its train
    request sets over the dense runs' settings (those that differ)."""
    dense, finetune = build_config(preset="ntu", method="teacher"), build_config(preset="ntu", method="taylor")
    return {key: getattr(finetune, key) for key in NTU_FINETUNE_KEYS if getattr(dense, key) != getattr(finetune, key)}


def _ntu_notes(ctx: PlanContext, quick) -> list[str]:
    dense, finetune = build_config(preset="ntu", method="teacher"), build_config(preset="ntu", method="taylor")
    options = finetune.method_options
    tuned = (f"{finetune.epochs} epochs, {finetune.optimizer} lr {finetune.lr:g}, weight decay {finetune.weight_decay:g}, "
             f"scheduler {finetune.scheduler}, early stopping on validation {finetune.early_stopping_metric} "
             f"(patience {finetune.early_stopping_patience})")
    shown = ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                      for name, value in sorted(options.items()))  # the options, by their declared names
    notes = [f"Taylor + KD (the ntu preset), iterative and one-shot: {shown}; each step fine-tuned for {tuned}; "
             "every value says its source (the NTU report, or ours with the reason)"]
    if ctx.scale == "full":
        notes.append(f"{dense.image_size} px, batch {dense.batch_size}; dense B0 and Lite0: {dense.optimizer} lr "
                     f"{dense.lr:g} (momentum {dense.momentum:g}), weight decay {dense.weight_decay:g}, "
                     f"{dense.warmup_epochs} warm-up epochs then a cosine, early stopping on validation "
                     f"{dense.early_stopping_metric} (patience {dense.early_stopping_patience}), at most {dense.epochs} "
                     "epochs, from ImageNet")
        notes.append("the teacher: " + (f"the given {ctx.teacher}" if ctx.teacher else
                     "the dense B0 (every weight, head included) fine-tuned as the report fine-tunes: its fine-tune's "
                     "settings above (ours: the report fine-tunes its B0, but that fine-tune's own settings are not among "
                     "those relayed from it)"))
    else:
        notes.append(f"mini: the dataset's shipped B0 and Lite0 (else ones the embedded efficientnet preset trains), no "
                     f"B0 fine-tune; each Taylor step {quick.epochs} epochs on {quick.max_train_samples} training images "
                     f"at {MINI_IMAGE_SIZE} px (the quick preset's budget)")
    return notes


def plan_two_in_one(ctx: PlanContext) -> tuple[list[Stage], list[str]]:
    """The dual-branch teacher (given or trained), then a ResNet-18 student per ablation mode."""
    preset = "full" if ctx.scale == "full" else "quick"
    stages = [_teacher_stage(ctx, "dual_resnet18", {"method": "teacher", "arch": "dual_resnet18", "preset": preset})]
    for seed in ctx.seeds:
        for mode in ("spatial", "naive", "two-in-one"):
            stages.append(Stage("search", "two-in-one", seed, f"search/two-in-one-{mode}/{seed}", "train",
                                {"method": "two-in-one", "preset": preset, "teacher": "{teacher}", "mode": mode,
                                 "seed": seed, **ctx.common("train", "two-in-one")}, label=mode))
    return stages, [f"no published training settings: the embedded {preset} preset's"]


PLANNERS = {"pearson-paper": plan_pearson_paper, "lottery-tickets": plan_lottery_tickets,
            "ntu-taylor": plan_ntu_taylor, "two-in-one": plan_two_in_one}


# --- planning -------------------------------------------------------------------------------


def default_protocol_runs_dir(protocol: str, dataset: str, scale: str) -> Path:

    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-")
    return default_runs_dir() / "reproduce" / f"{protocol}-{slug}-{scale}"


def check_dataset(dataset: str) -> None:
    """Refuse, in one line, a dataset no stage could load: not registered (a video benchmark included, with a variant
    where it takes one), not the embedded benchmark or one of its sources, not an existing folder or CSV. Needs none
    of the data."""

    named, _, source = dataset.partition(":")
    if named.lower() in DATASETS or dataset == "synthetic":
        return
    if named == "synthetic":

        if source in SOURCES:
            return
        raise ValueError(f"unknown synthetic source {dataset!r}: choose from {', '.join(SOURCES)}")
    if Path(dataset).expanduser().exists():
        return
    raise ValueError(f"unknown dataset {dataset!r}: pass one of {', '.join(DATASETS)} (with --data-root), synthetic, "
                     "synthetic:<source>, or an existing folder/CSV")


def dataset_notes(protocol: str, dataset: str, data_root: str | None, cross: list[DatasetSpec]) -> list[str]:
    """What the plan says about its data: how the benchmark's adapter splits it (its own description), the frames
    folder it reads, and the cross-dataset targets (given, or the paper's and how to add them)."""

    notes = []
    preset = DATASETS.get(dataset.partition(":")[0].lower())
    if preset is not None and data_root is None:
        notes.append(f"data: {dataset} needs --data-root ({preset.description.splitlines()[0]})")
    if preset is not None and preset.name in VIDEO_LAYOUTS:
        notes.append(f"data and split of {dataset}, as its adapter reads them: "
                     + " ".join(line.strip() for line in preset.description.splitlines()[1:]))
    layout = frames_layout(Path(data_root)) if data_root and Path(data_root).is_dir() else None
    if layout is not None:
        notes.append(f"data: the face crops in {data_root} (`data frames`, layout {layout}), in the split its "
                     "manifest.csv records")
    paper = (load_protocols()[protocol].get("datasets") or {}).get(dataset.lower()) or {}
    benchmark = published_benchmarks()
    theirs = [name for name in benchmark["benchmarks"] if name != dataset.lower()] \
        if dataset.lower() == benchmark["trained_on"] else []
    if cross:
        notes.append(f"cross-dataset: the report also tests every run on {', '.join(spec.text for spec in cross)} "
                     "(cross_dataset and, for FF++ / Celeb-DF / DFDC, cross_dataset_video beside DeepfakeBench's "
                     "published rows)")
    elif paper.get("cross") or theirs:
        said = [f"the paper tested on {', '.join(paper['cross'])}"] if paper.get("cross") else []
        said += [f"DeepfakeBench's protocol on {', '.join(theirs)}"] if theirs else []
        targets = ",".join(f"{name}=DIR" for name in dict.fromkeys([*paper.get("cross", []), *theirs]))
        notes.append(f"cross-dataset ({'; '.join(said)}): add --cross {targets} to test every run on them in the "
                     "report, now or after the runs (a rerun reuses every finished run and only reports)")
    return notes


def _cross_specs(cross: str | list[DatasetSpec] | None) -> list[DatasetSpec]:
    """``--cross``: specs that need no default root (``NAME=DIR``, a folder/CSV path, ``synthetic:<source>``)."""
    specs = parse_dataset_specs(cross) if isinstance(cross, str) else list(cross or [])
    for spec in specs:
        if spec.is_named and spec.root is None and not spec.name.startswith("synthetic"):
            raise ValueError(f"--cross {spec.name}: give its folder, {spec.name}=DIR (--data-root is the trained "
                             "dataset's)")
    return specs


def reference_of(protocol: str, dataset: str, reference: str | None) -> str | None:
    """The published row the measurements are compared with (see the module docstring)."""
    published = load_protocols()[protocol].get("published", {})
    if reference is not None:
        if reference not in published:
            raise ValueError(f"--reference {reference!r}: {protocol} publishes rows for {', '.join(published)}")
        return reference
    if dataset in published:
        return dataset
    if "any" in published:
        return "any"
    if dataset.startswith("synthetic"):
        return load_protocols()[protocol].get("synthetic_reference")
    raise ValueError(f"{protocol} has no published row for {dataset!r}: pass --reference with one of "
                     f"{', '.join(published)} (its published hyperparameters are then used)")


def plan(protocol: str, dataset: str, data_root: str | None = None, seeds: list[int] | None = None,
         methods: list[str] | None = None, scale: str = "full", teacher: str | None = None,
         runs_dir: str | Path | None = None, reference: str | None = None,
         extra: dict[str, list[str]] | None = None, cross: str | list[DatasetSpec] | None = None,
         follow: str = "code", transfer: str | list[DatasetSpec] | None = None) -> Plan:
    """The protocol's stages with their resolved configs; needs neither the data nor earlier stages' outputs.

    ``cross``: datasets the report tests every run on as well (specs, ``NAME=DIR`` or a path; comma-separated)."""
    if protocol not in PLANNERS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PLANNERS)}")
    check_dataset(dataset)
    cross_specs = _cross_specs(cross)
    transfer_specs = _cross_specs(transfer)
    if transfer_specs and protocol != "pearson-paper":
        raise ValueError("--transfer-to: only pearson-paper has a transfer table (its Table 8)")
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError(f"--seeds must list distinct seeds, got {seeds}")
    ref = reference_of(protocol, dataset, reference)
    if follow not in FOLLOW_SIDES:
        raise ValueError(f"--follow must be one of {', '.join(FOLLOW_SIDES)}, got {follow!r}")
    default_seeds = PAPER_SEEDS.get(protocol, DEFAULT_SEEDS["full"]) if scale == "full" else DEFAULT_SEEDS[scale]
    ctx = PlanContext(dataset, data_root, scale, seeds or default_seeds, methods, teacher,
                  Path(runs_dir) if runs_dir else default_protocol_runs_dir(protocol, dataset, scale), extra or {},
                  follow, transfer_specs, ref)
    if protocol == "pearson-paper" and ref not in load_presets():
        raise ValueError(f"no preset for the reference dataset {ref!r}")
    stages, notes = PLANNERS[protocol](ctx)
    if ref is not None and ref != dataset and ref != "any":
        notes.append(f"published numbers: the paper's {ref} row (no published row for {dataset})")
    notes += dataset_notes(protocol, dataset, data_root, cross_specs)
    keys = {s.key: s for s in stages}
    for stage in stages:
        stage.config, stage.sources = _stage_config(stage, keys)
    return Plan(protocol, dataset, scale, ref, ctx.runs_dir, stages, notes, data_root, cross_specs, transfer_specs)


def _request(stage: Stage, resolve) -> object:
    """The stage's request (:func:`core.training.requests.request_of`), each ``{KEY}`` in its values replaced by
    ``resolve(KEY)``."""
    values = {name: re.sub(r"\{([^}]+)\}", lambda m: resolve(m.group(1)), value) if isinstance(value, str) else value
              for name, value in stage.values.items()}
    return request_of(stage.verb, values)


def _stage_config(stage: Stage, stages: dict[str, Stage]) -> tuple[dict, dict]:
    """The resolved config a stage's request builds (earlier stages' outputs as placeholders): its values, and the
    same values each with its source (:func:`_sourced`)."""
    if stage.verb is None:
        config = TrainConfig.from_dict(read_header(stage.given).get("config", {}))
        return _shown(config), _sourced(config, None, given=stage.given)
    request = _request(stage, lambda key: f"<{key} checkpoint>")
    if stage.verb in ("transfer", "finetune"):  # the header the source stage's checkpoint will have, as far as it reads
        source = stages[stage.values["checkpoint"].strip("{}")]
        header = {"method": source.method, "model": {"arch": source.config["arch"]},
                  "image_size": source.config["image_size"],
                  "config": {"data": source.config["data"], "seed": source.seed}, "data_root": source.config.get("data_root")}
    if stage.verb == "transfer":
        configs = transfer_configs(request, header)
        explicit = explicit_keys(request)
        grid = [config.lr for config in configs]
        return ({**_shown(configs[0]), "lr": grid},
                {**settings_record(configs[0], explicit, grid, bool({"lr", "lr_grid"} & explicit)),
                 "method": "transfer", "method_options": {}})
    if stage.verb == "finetune":
        config = finetune_config(request, header)
        return _shown(config), _sourced(config, request, student_method=source.method)
    config = train_configs(request)[0]
    return _shown(config), _sourced(config, request)


def _in_effect(config) -> list[str]:
    """The :data:`PLAN_KEYS` that change what this run does (momentum only for SGD, a warm-up only with a warm-up
    schedule, ...): a value that does nothing is not printed."""
    hidden = set()
    if config.optimizer != "sgd":
        hidden.add("momentum")
    if config.scheduler != "warmup-cosine":
        hidden.add("warmup_epochs")
    if config.scheduler != "step":
        hidden.add("step_size")
    if config.method != "teacher":
        hidden |= {"pretrained", "trainable"}
    for key in ("teacher", "init_checkpoint", "early_stopping_patience", "max_train_samples", "preset"):
        if getattr(config, key) is None:
            hidden.add(key)
    if config.early_stopping_patience is None:
        hidden.add("early_stopping_metric")
    if config.method == "teacher" or config.preset is None or "published" not in load_presets().get(config.preset, {}):
        hidden.add("follow")  # the teacher's settings are the paper's alone
    return [key for key in PLAN_KEYS if key not in hidden and key != "method_options"]


def _shown(config) -> dict:
    """The plan's view of a TrainConfig: the :data:`PLAN_KEYS` in effect, with the method options in effect (defaults
    included)."""

    values = config.to_dict()
    return {**{key: values[key] for key in _in_effect(config)}, "method": config.method,
            "method_options": create_method(config).options_in_effect()}


INHERITED = ("arch", "image_size", "init_checkpoint")  # a fine-tune's, from the student it starts from


def _sourced(config, args, student_method: str | None = None, given: str | None = None) -> dict:
    """:func:`_shown` with each value as ``{value, source, ref}``: ``published`` (the paper: its table, equation or
    passage), ``author-code`` (the authors' released code: repository, file, commit) or ``ours`` (the reason)."""

    shown = _shown(config)
    preset_sources: dict = {}
    if config.preset is not None:
        preset_sources = resolve_preset(config.preset, config.method, student_method, config.follow)[1]
    flags = {} if args is None else {key: flag_of(key) for key in shown
                                     if key not in ("method", "method_options") and getattr(args, key, None) is not None}
    options_given = {} if args is None else declared_options(args)

    def source_of(key: str, option: bool = False) -> dict:
        name = f"method_options.{key}" if option else key
        if given is not None:
            return {"source": "ours", "ref": f"the given checkpoint's own config ({given})"}
        if (option and key in options_given) or (not option and key in flags):
            flag = "--" + key.replace("_", "-") if option else flags[key]
            return {"source": "ours", "ref": f"this protocol's command line ({flag}): {_why_given(key)}"}
        if name in preset_sources:
            return preset_sources[name]
        if student_method is not None and key in INHERITED:
            return {"source": "ours", "ref": f"the {student_method} student it fine-tunes (its search stage)"}
        if key == "preset":
            return {"source": "ours", "ref": "the protocol's choice of preset"}
        return {"source": "ours", "ref": "the toolkit's default (neither the paper nor its authors' code sets it)"
                                         if config.preset and "published" in load_presets().get(config.preset, {})
                else "the toolkit's default"}

    sourced = {key: {"value": value, **source_of(key)} for key, value in shown.items()
               if key not in ("method", "method_options")}
    sourced["method"] = shown["method"]
    sourced["method_options"] = {name: {"value": value, **source_of(name, option=True)}
                                 for name, value in shown["method_options"].items()}
    return sourced


def _why_given(key: str) -> str:
    return {"seed": "one of the protocol's seeds", "data": "the dataset asked for", "data_root": "its folder",
            "teacher": "the protocol's teacher stage", "epochs": "the stage's budget (mini: its share of the published epochs)",
            "image_size": "the mini scale's size", "warmup_epochs": "the mini scale keeps the warm-up's share",
            "follow": "--follow"}.get(key, "set by the protocol's planner")


# --- running ------------------------------------------------------------------------------


@dataclass
class Outcome:
    stage: Stage
    run_dirs: list[Path]
    checkpoint: Path  # the stage's result: the best checkpoint of its (last) run, or the given one


def run(plan_: Plan, out: str | Path | None = None, progress: bool = True, latency: bool = False,
        executor: ExecutorSettings | None = None) -> dict:
    """Execute (or continue) every stage, then report; returns the ``--json`` result.

    ``executor`` (:class:`core.training.executors.ExecutorSettings`): the stages run as jobs of a job engine, wave
    by wave (:func:`waves`), the stages of a wave at once; without it, one after another in this process.
    """

    check_dataset_specs(plan_.cross)  # a wrong --cross folder is refused before any training, not after it
    started = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    if executor is None:
        bar = tqdm(plan_.stages, desc=f"reproduce {plan_.protocol}", unit="stage", disable=not progress)
        for stage in bar:
            bar.set_postfix_str(f"{stage.stage} {stage.method} {stage.label} seed {stage.seed}".replace("  ", " "))
            outcomes[stage.key] = _execute(stage, outcomes, progress)
    else:
        for number, wave in enumerate(waves(plan_.stages), start=1):
            log.info("reproduce: wave %d, %s", number, ", ".join(stage.key for stage in wave))
            outcomes.update(_execute_wave(wave, outcomes, executor, progress))
    out = Path(out) if out else plan_.runs_dir / "report"
    rows = measured_rows(plan_, outcomes)
    report = _report(plan_, outcomes, rows, out, latency, progress)
    runs = []
    for stage in plan_.stages:
        record = stage.record()
        outcome = outcomes[stage.key]
        record["run_dirs"] = [str(d) for d in outcome.run_dirs]
        record["checkpoint"] = str(outcome.checkpoint)
        runs.append(record)
    return {**plan_.record(), "runs": runs, "rows": rows, "report": report,
            "claims": load_protocols()[plan_.protocol].get("claims", []),
            "seconds": round(time.perf_counter() - started, 1)}


def _checkpoint(key: str, outcomes: dict[str, Outcome]) -> str:
    """The checkpoint a later stage reads from stage ``key``: a search's last (a fine-tune starts from it, as the
    authors' script does), else its best."""
    outcome = outcomes[key]
    if outcome.run_dirs and outcome.stage.stage == "search":
        return str(outcome.run_dirs[-1] / "last.safetensors")
    return str(outcome.checkpoint)


def _stage_jobs(stage: Stage, outcomes: dict[str, Outcome], progress: bool) -> list:
    """A trained stage's jobs (:class:`core.training.executors.TrainJob`), its placeholders resolved."""
    request = _request(stage, lambda key: _checkpoint(key, outcomes))
    request.quiet = not progress
    log.info("reproduce: %s", " ".join(["python -m core", *command_line(stage.verb, {
        name: value for name, value in vars(request).items() if name in stage.values})]))
    if stage.verb == "finetune":
        return [TrainJob(finetune_config(request, read_header(request.checkpoint)))]
    if stage.verb == "transfer":
        return transfer_jobs(request)
    return train_jobs(request)


def _execute(stage: Stage, outcomes: dict[str, Outcome], progress: bool) -> Outcome:

    if stage.verb is None:
        return Outcome(stage, [], resolve_checkpoint(stage.given))
    train_fn = lambda config: train_once(config, progress=progress)  # noqa: E731
    results = [result for job in _stage_jobs(stage, outcomes, progress) for result in job.run(train_fn)]
    return Outcome(stage, [r.run_dir for r in results], _result_checkpoint(stage, results))


def _result_checkpoint(stage: Stage, results: list) -> Path:
    """A stage's result: its (last) run's best checkpoint; a transfer's, the run its grid keeps."""
    if stage.stage == "transfer":

        return Path(results[kept_result(results)].checkpoint)
    return Path(results[-1].checkpoint)


def waves(stages: list[Stage]) -> list[list[Stage]]:
    """The stages in waves that can run at once: a stage joins the wave after the last stage its command names
    (``{key}``: the teacher of a search, the search of a fine-tune). A stage names only earlier stages."""
    wave_of: dict[str, int] = {}
    for stage in stages:
        wave_of[stage.key] = 1 + max((wave_of[key] for key in stage.needs), default=-1)
    grouped: list[list[Stage]] = [[] for _ in range(1 + max(wave_of.values(), default=-1))]
    for stage in stages:
        grouped[wave_of[stage.key]].append(stage)
    return grouped


def _execute_wave(wave: list[Stage], outcomes: dict[str, Outcome], executor: ExecutorSettings,
                  progress: bool = True) -> dict[str, Outcome]:
    """A wave's stages as jobs of the job engine, all at once (given teachers need none)."""

    trained = [stage for stage in wave if stage.verb is not None]
    jobs = {stage.key: _stage_jobs(stage, outcomes, progress=False) for stage in trained}
    results = iter(run_jobs([job for stage_jobs in jobs.values() for job in stage_jobs], executor, progress))
    done = {stage.key: Outcome(stage, [], resolve_checkpoint(stage.given)) for stage in wave if stage.verb is None}
    for stage in trained:
        runs = [result for _ in jobs[stage.key] for result in next(results)]
        done[stage.key] = Outcome(stage, [r.run_dir for r in runs], _result_checkpoint(stage, runs))
    return done


# --- measured beside published --------------------------------------------------------------


def _final_outcomes(plan_: Plan, outcomes: dict[str, Outcome]) -> dict[tuple[str, str], list[Outcome]]:
    """Per (method, label), one outcome per seed: each stage's last (its fine-tune where there is one), the
    teacher, and every run of a chain (lottery-ticket rounds, Taylor steps) as its own entry."""
    finals: dict[tuple[str, str, int], Outcome] = {}
    for stage in plan_.stages:
        if stage.stage == "transfer":  # trained on another dataset: the report's transfer table has them
            continue
        outcome = outcomes[stage.key]
        method = "dense" if stage.stage == "dense" else stage.method
        label = "" if stage.stage == "teacher" else stage.label
        if len(outcome.run_dirs) > 1:
            for index, run_dir in enumerate(outcome.run_dirs, start=1):
                finals[(method, f"{label} run {index}", stage.seed)] = Outcome(stage, [run_dir], run_dir / "best.safetensors")
        else:
            finals[(method, label, stage.seed)] = outcome
    grouped: dict[tuple[str, str], list[Outcome]] = {}
    for (method, label, _), outcome in finals.items():
        grouped.setdefault((method, label), []).append(outcome)
    return grouped


def cost_of(header: dict) -> dict:
    """Params and MACs of a checkpoint's deployable network, and its reductions against the dense one it came from."""
    cost = compact_cost(header)
    return {key: cost[key] for key in ("params", "macs", "params_reduction", "macs_reduction")}


def measured_rows(plan_: Plan, outcomes: dict[str, Outcome]) -> list[dict]:
    """One row per method (and label): measured test accuracy over seeds, cost, and the published numbers."""

    published = load_protocols()[plan_.protocol].get("published", {}).get(plan_.reference or "", {})
    rows = []
    for (method, label), members in _final_outcomes(plan_, outcomes).items():
        accuracies, aucs = [], []
        for outcome in members:
            metrics = evaluate(outcome.checkpoint, plan_.dataset, "test", plan_.data_root, progress=False).metrics()
            accuracies.append(metrics["accuracy"])
            aucs.append(metrics["auc"])
        mean, std = mean_std(accuracies)
        header = read_header(members[0].checkpoint)
        sparsity = header.get("lth", {}).get("sparsity")  # a lottery ticket: the share of weights at zero
        row = {"method": method, "label": label or None, "seeds": len(members), "accuracy": mean,
               **({"sparsity": sparsity} if sparsity is not None else {}),
               "accuracy_std": std if len(members) > 1 else None, "accuracies": accuracies,
               "auc": sum(aucs) / len(aucs), "image_size": header.get("image_size"),
               "arch": header.get("model", {}).get("arch"), **cost_of(header),
               "checkpoints": [str(m.checkpoint) for m in members]}
        if method in published:
            row["published"] = {**published[method], "reference": plan_.reference,
                                **({"image_size": 256} if plan_.protocol == "pearson-paper" else {})}
        rows.append(row)
    return rows


def _report(plan_: Plan, outcomes: dict[str, Outcome], rows: list[dict], out: Path, latency: bool,
            progress: bool) -> dict:
    """``report`` over every run of the protocol, plus the published-beside-measured table."""

    paths = []
    for outcome in outcomes.values():
        paths.extend(outcome.run_dirs or [outcome.checkpoint])
    targets = [*plan_.cross, *[spec for spec in plan_.transfer if spec.text not in {c.text for c in plan_.cross}]]
    result = build_report(list(dict.fromkeys(map(str, paths))), out, targets, "test", plan_.data_root,
                          latency=latency, progress=progress, png=False)
    table = published_table(rows)
    markdown = write_table(table, out, "published")
    claims = "\n".join(f"- {claim}" for claim in load_protocols()[plan_.protocol].get("claims", []))
    notes = "\n".join(f"- {note}" for note in plan_.notes)
    section = (f"\n## published beside measured ({plan_.protocol}, {plan_.dataset}, scale {plan_.scale})\n\n"
               f"{markdown}\n\nNotes:\n{notes}\n\nPublished claims:\n{claims}\n")
    report_md = out / "report.md"
    atomic_write_text(report_md, report_md.read_text() + section)
    result["tables"]["published"] = str(out / "published.md")
    atomic_write_text(out / "reproduce.json", json.dumps({**plan_.record(), "rows": rows}, indent=1, default=str))
    return result
