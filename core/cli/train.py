"""``train`` and ``finetune``: one run, or a grid of runs (seeds, sweeps, IMP rounds, Taylor steps)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.checkpoint import compact_cost, read_header
from core.cli.common import boolean, emit
from core.config import training_settings
from core.training.requests import (
    explicit_keys,
    finetune_config,
    kept_result,
    train_jobs,
    transfer_jobs,
)


def option_flags(parser: argparse.ArgumentParser, declarations, title: str | None = None) -> None:
    """Declared settings (:mod:`core.options`: a method's options, the training configuration's) as flags, every
    default None (not given: the preset's, the config file's or the declared default); a flag already on the parser
    (an option two methods share) keeps its first declaration."""
    taken = {action.dest for action in parser._actions}
    group = parser.add_argument_group(title) if title else parser
    for option in declarations:
        if option.internal or option.name in taken:
            continue
        shown = option.switch or option.default is None or "default" in option.help
        text = option.help + ("" if shown else f" (default {option.default})")
        if option.switch:
            group.add_argument("--" + option.flag, dest=option.name, action="store_const", const=not option.default,
                               default=None, help=text)
        elif option.choices:
            group.add_argument("--" + option.flag, dest=option.name, choices=option.choices, help=text)
        else:
            group.add_argument("--" + option.flag, dest=option.name, help=text, metavar=option.flag.upper().replace("-", "_"),
                               type=boolean if option.kind is bool else option.kind)
        taken.add(option.name)


def method_flags(parser: argparse.ArgumentParser) -> None:
    """Every registered method's options, one group per options class (named after the methods that take it)."""
    from core.methods import METHODS

    trainable = {name: method.options_class for name, method in METHODS.items()
                 if method.options_class is not None and method.trainable}
    for options_class in dict.fromkeys(trainable.values()):  # each class once, in registry order
        names = [name for name, cls in trainable.items() if issubclass(cls, options_class)]
        option_flags(parser, options_class.declarations(), f"{', '.join(names)} options")


def _emit_run(args: argparse.Namespace, result, runs: list[str] | None = None) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for the job
        return
    test = result.test
    extra = {}
    cost = compact_cost(read_header(result.checkpoint))
    if cost["pruned"]:
        extra = {"params_reduction": cost["params_reduction"], "macs_reduction": cost["macs_reduction"],
                 "compact_params": cost["params"], "compact_macs": cost["macs"]}
    tested = (f"test accuracy {test['accuracy']:.4f}, AUC {test['auc']:.4f} on {test.get('n')} images, "
              f"{test.get('skipped', 0)} skipped" if test.get("accuracy") is not None else f"no test: {test.get('note')}")
    human = f"{result.status}: {result.run_dir} ({tested})"
    if result.already_finished:
        human = f"{result.run_dir} had already finished: nothing to resume, nothing changed ({tested})"
    if extra:
        human += f"; compact student: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs"
    if runs:
        extra["runs"] = runs
        human += f"; {len(runs)} runs: python -m core report {' '.join(runs)}"
    emit(args, {"run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint), "status": result.status,
                 "test_accuracy": test["accuracy"], "test_auc": test["auc"], "already_finished": result.already_finished,
                 **extra}, human)


def cmd_train(args: argparse.Namespace) -> None:
    from core.training.engine import train

    if args.resume:
        if args.executor:
            raise ValueError("--resume continues one run in this process; with --executor, run the grid's command again "
                             "(its finished runs are reused, the others resume)")
        _emit_run(args, train(resume=args.resume, progress=not args.quiet))
        return
    results = execute_train(args)
    _emit_run(args, results[-1], [str(r.run_dir) for r in results] if len(results) > 1 else None)


def execute_train(args: argparse.Namespace, train_fn=None, jobs: list | None = None) -> list:
    """Run what a ``train`` command line asks for (or ``jobs``, those of another command): with ``--executor``, every
    job through the job engine (each run trained once: a rerun reuses finished runs and resumes killed ones); else in
    this process, each config trained by ``train_fn`` (default: a new run)."""
    from core.runs import default_runs_dir
    from core.training.engine import train
    from core.training.executors import run_jobs

    jobs = jobs if jobs is not None else train_jobs(args)
    settings = executor_settings(args, Path(jobs[0].config.runs_dir or default_runs_dir()))
    if settings is not None:
        return [result for results in run_jobs(jobs, settings, progress=not args.quiet) for result in results]
    train_fn = train_fn or (lambda config: train(config, progress=not args.quiet))
    return [result for job in jobs for result in job.run(train_fn)]


def executor_flags(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and its Slurm settings (``train`` and ``reproduce``)."""
    from core.training.executors import EXECUTORS, SLURM_TIME_MIN

    group = parser.add_argument_group("job engine (submitit): every run, or chain of runs, its own job; the same command "
                                      "again reuses finished runs and resumes killed ones")
    group.add_argument("--executor", choices=EXECUTORS,
                       help="local: each run (an lth or taylor chain: each chain) a process on this machine, as many at "
                            "once as there are free GPUs, one at a time without; slurm: each a Slurm job, together one "
                            "job array. Default: every run in this process")
    group.add_argument("--slurm-partition", metavar="NAME", help="partition of the Slurm jobs (default: the cluster's)")
    group.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per Slurm job (default 1; a run trains on one)")
    group.add_argument("--slurm-time", metavar="TIME", help="time limit per Slurm job: minutes (90) or HH:MM:SS (1:30:00); "
                                                            f"default {SLURM_TIME_MIN // 60}:00:00. A job that reaches it is "
                                                            "requeued, and its run resumes from its last checkpoint")
    group.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per Slurm job (default: the partition's)")


def executor_settings(args: argparse.Namespace, runs_dir: Path):
    """The :class:`core.training.executors.ExecutorSettings` of the ``--executor`` flags (job folders under
    ``<runs_dir>/.submitit``), or None without ``--executor``."""
    from core.training.executors import JOBS_FOLDER, ExecutorSettings, slurm_minutes

    slurm = {"slurm_partition": getattr(args, "slurm_partition", None), "slurm_gpus": getattr(args, "slurm_gpus", None),
             "slurm_cpus": getattr(args, "slurm_cpus", None), "slurm_time": getattr(args, "slurm_time", None)}
    given = {key: value for key, value in slurm.items() if value is not None}
    executor = getattr(args, "executor", None)
    if given and executor != "slurm":
        raise ValueError(f"{', '.join('--' + key.replace('_', '-') for key in given)}: Slurm settings, "
                         "for --executor slurm only")
    if "slurm_time" in given:
        given["slurm_time"] = slurm_minutes(given["slurm_time"])
    return None if executor is None else ExecutorSettings(executor, Path(runs_dir) / JOBS_FOLDER, **given)


def cmd_finetune(args: argparse.Namespace) -> None:
    from core.training.engine import train

    config = finetune_config(args, read_header(args.checkpoint))
    _emit_run(args, train(config, progress=not args.quiet))


def cmd_transfer(args: argparse.Namespace) -> None:
    from core.methods.transfer import settings_record

    jobs = transfer_jobs(args)
    results = execute_train(args, jobs=jobs)
    headers = [read_header(result.checkpoint) for result in results]
    kept = kept_result(results)
    runs = [{"lr": job.config.lr, "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
             "status": result.status, "val_accuracy": header.get("metrics", {}).get("val_accuracy"),
             "test_accuracy": result.test.get("accuracy"), "kept": index == kept}
            for index, (job, result, header) in enumerate(zip(jobs, results, headers, strict=True))]
    transfer = headers[kept]["transfer"]
    settings = settings_record(jobs[0].config, explicit_keys(args), [run["lr"] for run in runs],
                               grid_given=bool({"lr", "lr_grid"} & explicit_keys(args)))
    tried = ", ".join(f"{run['lr']:g} (val acc {run['val_accuracy']:.4f})" for run in runs)
    human = (f"transfer of {transfer['source']} ({transfer['source_dataset']}) to {transfer['target']} in the source's "
             f"normalisation: lr {tried}; kept lr {runs[kept]['lr']:g}: {runs[kept]['run_dir']} (test accuracy "
             f"{runs[kept]['test_accuracy']:.4f})")
    emit(args, {"run_dir": runs[kept]["run_dir"], "checkpoint": runs[kept]["checkpoint"], "status": results[kept].status,
                 "test_accuracy": runs[kept]["test_accuracy"], "test_auc": results[kept].test.get("auc"),
                 "kept": runs[kept], "runs": runs, "source": transfer["source"],
                 "source_dataset": transfer["source_dataset"], "target": transfer["target"],
                 "normalization": {**headers[kept]["normalization"], "from": "source"}, "settings": settings}, human)


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""
    from core.methods import METHODS

    def training_flags(p: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
        p.add_argument("--preset", help="named preset from configs/presets.yaml (quick, full, paper, rvf10k, 140k, ...)")
        p.add_argument("--config", help="YAML file of TrainConfig keys")
        option_flags(p, [s for s in training_settings() if s.name not in leave_out], "training settings (TrainConfig)")

    train = command(commands, "train", cmd_train, "train a teacher or a student; writes a run directory")
    train.add_argument("--method", choices=sorted(METHODS), default="teacher")
    training_flags(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or cancelled run from its last checkpoint")
    train.add_argument("--seeds", help="comma-separated seeds: one run per seed, in sequence, or as jobs with --executor "
                                       "(e.g. 0,1,2)")
    train.add_argument("--sweep", metavar="KEY=V1,V2,...",
                       help="ablation: one run per value of a config field or method option, by its name in this help "
                            "(e.g. epochs=5,10)")
    executor_flags(train)
    method_flags(train)
    chains = train.add_argument_group("runs that chain (lth, taylor) and starting checkpoints")
    chains.add_argument("--one-shot", action="store_true",
                        help="lth: also prune the dense run straight to the target, once; taylor: prune in a single step")
    chains.add_argument("--ticket", metavar="RUN", help="lth: train this ticket (mask kept, weights rewound) on --data: a transfer")
    chains.add_argument("--init-checkpoint", metavar="RUN", help="; ".join(
        f"{name}: {method.starts_from}" for name, method in METHODS.items() if method.starts_from))

    finetune = command(commands, "finetune", cmd_finetune,
                       "fine-tune the compact network of a student checkpoint (default lr 4e-5, BCE)")
    finetune.add_argument("checkpoint", help="student checkpoint or run directory (masked or compact)")
    training_flags(finetune, leave_out=("arch", "pretrained", "trainable"))  # the student's own
    option_flags(finetune, METHODS["finetune"].options_class.declarations())

    transfer = command(commands, "transfer", cmd_transfer,
                       "cross-dataset transfer (the Pearson paper's Table 8): retrain the last block and head of a "
                       "teacher or student on another dataset, in the source's normalisation, once per lr of a grid; "
                       "the run of best validation accuracy is kept")
    transfer.add_argument("checkpoint", help="the source: a teacher or student checkpoint or run directory")
    training_flags(transfer, leave_out=("arch", "pretrained", "teacher"))  # the source's network; no teacher
    transfer.add_argument("--lr-grid", metavar="LR,LR,...",
                          help="one run per learning rate, the best target validation accuracy kept (default "
                               "1e-5,1e-4,1e-3; --lr X: a grid of one)")
    option_flags(transfer, METHODS["transfer"].options_class.declarations())
    executor_flags(transfer)

