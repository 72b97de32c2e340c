"""What a ``train``, ``finetune`` or ``transfer`` request asks for, as TrainConfigs and jobs: the library side of those
commands. A request is the command's values by name (the CLI's parsed arguments, or any object with those attributes:
``request.epochs``, ``request.preset``, a method option by its name, ...); a value of None is not given, so the
``--config`` file, then the preset, then the declared default decide it (:func:`core.config.build_config`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import yaml

from core.checkpoint import read_header, resolve_checkpoint
from core.config import build_config, finetune_defaults, published_finetune, training_settings
from core.methods import METHODS, check_presets, get_method
from core.methods.transfer import LR_GRID, TRANSFER_SETTINGS, kept_run, parse_lr_grid
from core.training.drivers import grid, named_chain
from core.training.executors import TrainJob

log = logging.getLogger(__name__)


def declared_options(request) -> dict:
    """The method options given on the command line: every declared option whose flag was used."""
    names = {option.name for method in METHODS.values() if method.options_class is not None
             for option in method.options_class.declarations()}
    return {name: getattr(request, name) for name in sorted(names) if getattr(request, name, None) is not None}


def train_config(request, student_method: str | None = None, **fixed):
    """The TrainConfig of ``request``'s settings and method options (``fixed``: values the command sets itself)."""
    values = {setting.name: getattr(request, setting.name, None) for setting in training_settings() if not setting.internal}
    values.update(preset=request.preset, config_file=request.config, method_options=declared_options(request) or None, **fixed)
    return build_config(student_method=student_method, **values)


def train_configs(request) -> list:
    """The TrainConfigs a ``train`` command line asks for: one per (sweep value, seed)."""
    check_presets()  # an unknown key in any preset is an error before anything runs (once, not per seed)

    def config_of(seed: int):
        config = train_config(request, method=request.method, seed=seed)
        if get_method(request.method).starts_from:  # the network to prune, or the student to start from
            config.init_checkpoint = request.init_checkpoint or config.init_checkpoint
        return config

    seeds = [int(s) for s in request.seeds.split(",") if s.strip()] if request.seeds else [request.seed]
    return grid(config_of, seeds, request.sweep)


def train_jobs(request) -> list:
    """The jobs of a ``train`` command line (:class:`core.training.executors.TrainJob`): one per config, a chain of
    runs (IMP rounds, Taylor steps) for a method with a driver."""
    driver = get_method(request.method).driver
    jobs = []
    for config in train_configs(request):
        if driver == "imp" and request.ticket:  # one run of a given ticket (a transfer), not a chain
            jobs.append(TrainJob(ticket_config(request, config)))
        elif driver is not None:
            if driver == "imp" and getattr(request, "executor", None):  # a rerun must find the same chain's rounds
                config = named_chain(config)
            jobs.append(TrainJob(config, driver, one_shot=request.one_shot))
        else:
            jobs.append(TrainJob(config))
    return jobs


def ticket_config(request, config):
    """The config of one run of a given ticket on --data (mask kept, weights rewound): ``--ticket``."""
    ticket = read_header(resolve_checkpoint(request.ticket))
    if "lth" not in ticket:
        raise ValueError(f"{request.ticket} is not an lth run (train one with --method lth)")
    config.init_checkpoint = str(request.ticket)
    config.arch = ticket["model"]["arch"]
    config.method_options.setdefault("sparsity", ticket["lth"]["sparsity"])
    return config


def finetune_config(request, source: dict):
    """The TrainConfig of ``finetune CKPT``, given the student's checkpoint header ``source``.

    With ``--preset``, that preset's fine-tune for this kind of student (a dataset preset refuses a
    student the paper did not fine-tune there, unless ``--lr`` says how); without one, the published
    fine-tune of this kind of student (the ``paper`` preset's), for whatever the flags leave open.
    """
    check_presets()

    student_method = source.get("student_method") or source.get("method")
    if request.preset is not None and request.lr is None and not published_finetune(request.preset, student_method):
        raise ValueError(f"preset {request.preset!r} has no fine-tune for {student_method} students (the paper does not "
                         "fine-tune them on that dataset): pass --lr (and --epochs), or another preset")
    config = train_config(request, method="finetune", student_method=student_method, init_checkpoint=str(request.checkpoint),
                           arch=source["model"]["arch"], teacher=request.teacher,
                           data=request.data or source.get("config", {}).get("data"),
                           data_root=request.data_root or source.get("data_root"),
                           image_size=request.image_size or source["image_size"])
    if request.preset is None:
        defaults = finetune_defaults(student_method)
        log.info("%s student: the published fine-tune %s, where the flags say nothing", student_method, defaults)
        for key, value in defaults.items():
            if key == "method_options":
                config.method_options = {**value, **config.method_options}
            elif getattr(request, key, None) is None:
                setattr(config, key, value)
    return config


def kept_result(results: list) -> int:
    """Which of a transfer's runs (:class:`core.training.engine.TrainResult`, one per lr) is kept: the best target
    validation accuracy, as its best checkpoint records it (:func:`core.methods.transfer.kept_run`)."""
    return kept_run([read_header(result.checkpoint) for result in results])


def transfer_jobs(request) -> list:
    """The jobs of a ``transfer`` command line (:class:`core.training.executors.TrainJob`): one run per lr of the grid,
    so a job engine runs them at once; :func:`core.methods.transfer.kept_run` picks the one kept."""
    source = read_header(resolve_checkpoint(request.checkpoint))
    return [TrainJob(config) for config in transfer_configs(request, source)]


def transfer_configs(request, source: dict) -> list:
    """The TrainConfigs of ``transfer CKPT --data TARGET``, one per lr of the grid, given the source checkpoint's
    header: the published transfer (:data:`core.methods.transfer.TRANSFER_SETTINGS`) wherever neither a flag nor
    ``--config`` sets a value; the source's image size, augmentation and seed unless flags say otherwise."""

    if request.preset is not None:
        raise ValueError("transfer has no preset: its settings are the paper's transfer (python -m core transfer --help); "
                         "change them with flags or --config")
    if request.lr is not None and request.lr_grid:
        raise ValueError("give --lr (a grid of one) or --lr-grid, not both")
    trained = source.get("config") or {}
    config = train_config(request, method="transfer", init_checkpoint=str(request.checkpoint), arch=source["model"]["arch"],
                           image_size=request.image_size or source["image_size"], augment=request.augment or trained.get("augment"),
                           seed=request.seed if request.seed is not None else trained.get("seed"))
    explicit = explicit_keys(request)
    for key, setting in TRANSFER_SETTINGS.items():
        if key not in explicit:
            setattr(config, key, setting.value)
    # --lr-grid; else an lr the command line gives (--lr, --config: a grid of one); else the default grid
    rates = parse_lr_grid(request.lr_grid) if request.lr_grid else [config.lr] if "lr" in explicit else list(LR_GRID.value)
    return [dataclasses.replace(config, lr=rate) for rate in rates]


def explicit_keys(request) -> set[str]:
    """The TrainConfig keys a command line sets itself: by a flag, or in its ``--config`` file."""
    given = {key for key, value in vars(request).items() if value is not None}
    if request.config and Path(request.config).is_file():
        given |= set(yaml.safe_load(Path(request.config).read_text()) or {})
    return given


# --------------------------------------------------------------------------- a request as data, and its command line

VERBS = ("train", "finetune", "transfer")
# what a request holds beyond the training settings and the methods' options: the commands' own arguments
ARGUMENTS = {"method": "--method", "preset": "--preset", "config": "--config", "seeds": "--seeds", "sweep": "--sweep",
             "one_shot": "--one-shot", "ticket": "--ticket", "init_checkpoint": "--init-checkpoint",
             "lr_grid": "--lr-grid", "quiet": "--quiet"}
SWITCHES = ("one_shot", "quiet")  # value-less flags, given when true
SOURCE = "checkpoint"  # finetune's and transfer's positional argument: the checkpoint they start from


def _declarations() -> dict:
    """Every setting and method option by name, as declared (core.options)."""
    found = {s.name: s for s in training_settings() if not s.internal}
    for method in METHODS.values():
        for option in method.options_class.declarations() if method.options_class else ():
            if not option.internal:
                found.setdefault(option.name, option)
    return found


def flag_of(name: str, declared: dict | None = None) -> str:
    """The command-line flag of a request's value ``name`` (a setting, a method option or a command's argument);
    ``declared``: :func:`_declarations`, when the caller already has it."""
    if name in ARGUMENTS:
        return ARGUMENTS[name]
    declared = (declared if declared is not None else _declarations()).get(name)
    if declared is None:
        raise ValueError(f"{name!r} is neither a training setting, a method option nor an argument of "
                         f"{'/'.join(VERBS)}")
    return "--" + declared.flag


def command_line(verb: str, values: dict) -> list[str]:
    """The arguments of ``python -m core`` that ask for the request ``values`` of ``verb`` (rendered from the values,
    in their order; the source checkpoint first): what a person would type to run it by hand."""
    if verb not in VERBS:
        raise ValueError(f"a request is one of {', '.join(VERBS)}, not {verb!r}")
    argv = [verb] + ([str(values[SOURCE])] if SOURCE in values else [])
    declared = _declarations()
    for name, value in values.items():
        if name == SOURCE or value is None:
            continue
        option = declared.get(name)
        if name in SWITCHES or (option is not None and option.switch):
            default = False if name in SWITCHES else option.default
            argv += [flag_of(name, declared)] if value != default else []
        else:
            argv += [flag_of(name, declared), str(value)]
    return argv


def request_of(verb: str, values: dict):
    """The request object the functions above read (what the CLI's parser gives for the same command line): every
    setting, option and argument, None where ``values`` does not give it (false for a switch)."""
    names = {**dict.fromkeys(_declarations()), **dict.fromkeys(ARGUMENTS), SOURCE: None, "executor": None}
    request = SimpleNamespace(**names, command=verb)
    for name in SWITCHES:
        setattr(request, name, False)
    for name, value in values.items():
        if name not in names:
            flag_of(name)  # the error naming what it is not
        setattr(request, name, value)
    return request
