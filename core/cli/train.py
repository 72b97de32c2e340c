"""``train`` and ``finetune``: one run, or a grid of runs (seeds, sweeps, IMP rounds, Taylor steps)."""

from __future__ import annotations

import argparse
import os

from core.cli.common import _boolean, _emit, log

# student hyperparameters: flag -> StudentOptions field (core/methods/distillation.py)
STUDENT_FLAGS = {
    "kd_temperature": (float, "T of the KD loss"),
    "kd_scale": (str, "none (the Pearson authors' code, default: no T^2 factor) or t2 (Hinton's T^2 factor)"),
    "tau_start": (float, "Gumbel temperature at the start (tau_0)"),
    "tau_end": (float, "Gumbel temperature at the last epoch (tau_E)"),
    "lambda_kd": (float, "weight of the KD loss (lambda_1)"),
    "lambda_rl": (float, "weight of the feature-reconstruction loss (lambda_2)"),
    "lambda_prune": (float, "weight of the pruning loss (lambda_3)"),
    "target_rate": (float, "KDFS: fraction of the teacher's MACs to remove (e.g. 0.8)"),
    "student_init": (str, "teacher (default) or scratch"),
    "mask_init": (str, "kaiming (the papers', default: about half the filters start dropped) or keep (all start kept)"),
    "keep_margin": (float, "mask_init keep: the starting keep-minus-drop logit (default 3)"),
    "feature_distance": (str, "attention (KDFS's, default) or mse"),
    "feature_stages": (str, "mean (the KDFS code, default: L_RL averaged over the 4 stages) or sum"),
    "feature_decoders": (_boolean, "true: a learnable 1x1 conv per stage before the distance (default false, as the KDFS code)"),
    "sampler_lr": (float, "learning rate of the mask logits (default: --lr)"),
    "sampler_weight_decay": (float, "weight decay of the mask parameters (default 0; pdd: the weights')"),
    "correlation_normalization": (str, "pearson: author-code (the published code's (W-1)^2 scale, default) or paper "
                                       "(the equations)"),
    "score_every": (int, "pearson: recompute the redundancy scores every N steps (needs --no-correlation-weight-gradient)"),
    "initial_score": (float, "pdd: mean of the starting mask scores (default 0)"),
    "initial_score_std": (float, "pdd: their spread (default 0.001, the PDD code's; 0: all equal)"),
}


# lottery-ticket options: flag -> LTHOptions field (core/methods/lth.py)
LTH_FLAGS = {
    "prune_rate": (float, "fraction of the remaining weights each IMP round removes (default 0.2)"),
    "target_sparsity": (float, "IMP stops at this fraction of conv/linear weights pruned (default 0.8)"),
    "rewind_epoch": (int, "0: rewind to the initialisation (default); k: to the dense run's weights after k epochs"),
    "chain": (str, "name of the IMP chain (default: the architecture and a random id)"),
}


# Taylor-pruning options: flag -> TaylorOptions field (core/methods/taylor.py); --kd-temperature is shared
TAYLOR_FLAGS = {
    "alpha": (float, "weight of the KD (soft-label) loss; BCE gets 1 - alpha (default 0.25, the NTU report's best)"),
    "prune_ratio": (float, "fraction of the dense network's prunable channels the schedule removes (default 0.5)"),
    "steps": (int, "pruning steps, each a run with its fine-tune (default 5; --one-shot: 1)"),
    "taylor_batches": (int, "training batches whose loss gradient gives the Taylor importance (default 8)"),
}


# two-in-one options: flag -> TwoInOneOptions field (core/methods/two_in_one.py); --kd-temperature, --lambda-kd are shared
TWO_IN_ONE_FLAGS = {
    "mode": (str, "spatial (spatial-branch KD only), naive (one shared projector, losses summed), dedicated (a projector "
                  "per branch, summed) or two-in-one (a projector per branch + gradient homogenisation, default)"),
    "lambda_feature": (float, "weight of the feature-distillation losses (default 1)"),
    "projector_hidden": (int, "hidden width of each projector MLP (default 512)"),
}


def _train_config(args: argparse.Namespace, student_method: str | None = None, **fixed):
    from core.config import build_config

    options = {name: getattr(args, name) for name in {**STUDENT_FLAGS, **LTH_FLAGS, **TAYLOR_FLAGS, **TWO_IN_ONE_FLAGS}
               if getattr(args, name, None) is not None}
    if getattr(args, "local_pruning", False):
        options["global_pruning"] = False
    if getattr(args, "no_correlation_weight_gradient", False):
        options["correlation_weight_gradient"] = False
    values = dict(
        preset=args.preset, config_file=args.config, data=args.data, data_root=args.data_root,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        image_size=args.image_size, seed=args.seed, device=args.device, runs_dir=args.runs_dir, num_workers=args.num_workers,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        log_every=args.log_every, augment=args.augment, method_options=options or None,
        scheduler=getattr(args, "scheduler", None), warmup_epochs=getattr(args, "warmup_epochs", None),
        early_stopping_patience=getattr(args, "patience", None),
        nonfinite=getattr(args, "nonfinite", None),
    )
    values.update(fixed)
    return build_config(student_method=student_method, **values)


def _emit_run(args: argparse.Namespace, result, runs: list[str] | None = None) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for the job
        return
    test = result.test
    extra = {}
    pruning = _pruning_summary(result.checkpoint)
    if pruning:
        extra = {"params_reduction": pruning["params_reduction"], "macs_reduction": pruning["macs_reduction"],
                 "compact_params": pruning["compact_params"], "compact_macs": pruning["compact_macs"]}
    tested = (f"test accuracy {test['accuracy']:.4f}, AUC {test['auc']:.4f} on {test.get('n')} images, "
              f"{test.get('skipped', 0)} skipped" if test.get("accuracy") is not None else f"no test: {test.get('note')}")
    human = f"{result.status}: {result.run_dir} ({tested})"
    if extra:
        human += f"; compact student: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs"
    if runs:
        extra["runs"] = runs
        human += f"; {len(runs)} runs: python -m core report {' '.join(runs)}"
    _emit(args, {"run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint), "status": result.status,
                 "test_accuracy": test["accuracy"], "test_auc": test["auc"], **extra}, human)


def _pruning_summary(checkpoint) -> dict | None:
    from core.checkpoint import read_header

    header = read_header(checkpoint)
    return header.get("pruning") or header.get("structured_pruning")


def cmd_train(args: argparse.Namespace) -> None:
    from core.training.engine import train

    if args.resume:
        _emit_run(args, train(resume=args.resume, progress=not args.quiet))
        return
    results = execute_train(args)
    _emit_run(args, results[-1], [str(r.run_dir) for r in results] if len(results) > 1 else None)


def train_configs(args: argparse.Namespace) -> list:
    """The TrainConfigs a ``train`` command line asks for: one per (sweep value, seed)."""
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [args.seed]
    sweep_key, sweep_values = _parse_sweep(args.sweep) if args.sweep else (None, [None])
    configs = []
    for value in sweep_values:  # one run directory per (value, seed); `report` tabulates them
        for seed in seeds:
            config = _train_config(args, method=args.method, arch=args.arch, pretrained=args.pretrained,
                                   trainable=args.trainable, teacher=args.teacher, seed=seed)
            if sweep_key is not None:
                _set_sweep_value(config, sweep_key, value)
            if args.method in ("taylor", "two-in-one"):  # the network to prune, or the student to start from
                config.init_checkpoint = args.init_checkpoint or config.init_checkpoint
            configs.append(config)
    return configs


def execute_train(args: argparse.Namespace, train_fn=None) -> list:
    """Run what a ``train`` command line asks for; ``train_fn`` trains one config (default: a new run)."""
    from core.training.engine import train

    train_fn = train_fn or (lambda config: train(config, progress=not args.quiet))
    configs = train_configs(args)
    if args.method == "lth":
        return [result for config in configs for result in _lottery_tickets(args, config, train_fn)]
    if args.method == "taylor":
        from core.training.drivers import prune_iteratively

        return [result for config in configs
                for result in prune_iteratively(config, one_shot=args.one_shot, progress=not args.quiet, train_fn=train_fn)]
    return [train_fn(config) for config in configs]


def _lottery_tickets(args: argparse.Namespace, config, train_fn) -> list:
    """IMP from a dense run (and one-shot with --one-shot), or one run of a given ticket (--ticket: transfer it)."""
    from core.checkpoint import read_header, resolve_checkpoint
    from core.training.drivers import iterative_magnitude_pruning

    if not args.ticket:
        return iterative_magnitude_pruning(config, one_shot=args.one_shot, progress=not args.quiet, train_fn=train_fn)
    ticket = read_header(resolve_checkpoint(args.ticket))
    if "lth" not in ticket:
        raise ValueError(f"{args.ticket} is not an lth run (train one with --method lth)")
    config.init_checkpoint = str(args.ticket)
    config.arch = ticket["model"]["arch"]
    config.method_options.setdefault("sparsity", ticket["lth"]["sparsity"])
    return [train_fn(config)]


def _parse_sweep(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` -> (key, typed values); KEY is a TrainConfig field or a method option."""
    import yaml

    key, _, values = text.partition("=")
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not key or not parsed:
        raise ValueError(f"--sweep takes KEY=V1,V2,... (e.g. lambda_prune=0,0.5,5), got {text!r}")
    return key.strip().replace("-", "_"), parsed


def _set_sweep_value(config, key: str, value) -> None:
    import dataclasses

    if key in {f.name for f in dataclasses.fields(config)} and key != "method_options":
        setattr(config, key, value)
    else:
        config.method_options = {**config.method_options, key: value}


def cmd_finetune(args: argparse.Namespace) -> None:
    from core.checkpoint import read_header
    from core.training.engine import train

    config = finetune_config(args, read_header(args.checkpoint))
    _emit_run(args, train(config, progress=not args.quiet))


def finetune_config(args: argparse.Namespace, source: dict):
    """The TrainConfig of ``finetune CKPT``, given the student's checkpoint header ``source``.

    With ``--preset``, that preset's fine-tune for this kind of student (a dataset preset refuses a
    student the paper did not fine-tune there, unless ``--lr`` says how); without one, the published
    fine-tune of this kind of student (the ``paper`` preset's), for whatever the flags leave open.
    """
    from core.config import finetune_defaults, published_finetune

    student_method = source.get("student_method") or source.get("method")
    if args.preset is not None and args.lr is None and not published_finetune(args.preset, student_method):
        raise ValueError(f"preset {args.preset!r} has no fine-tune for {student_method} students (the paper does not "
                         "fine-tune them on that dataset): pass --lr (and --epochs), or another preset")
    config = _train_config(args, method="finetune", student_method=student_method, init_checkpoint=str(args.checkpoint),
                           arch=source["model"]["arch"], teacher=args.teacher,
                           data=args.data or source.get("config", {}).get("data"),
                           data_root=args.data_root or source.get("data_root"),
                           image_size=args.image_size or source["image_size"])
    if args.preset is None:
        defaults = finetune_defaults(student_method)
        log.info("%s student: the published fine-tune %s, where the flags say nothing", student_method, defaults)
        for key, value in defaults.items():
            if key == "method_options":
                config.method_options = {**value, **config.method_options}
            elif getattr(args, key, None) is None:
                setattr(config, key, value)
    return config


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""
    from core.methods import METHODS

    def training_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="synthetic, synthetic:<source>, a registered name, or a folder/CSV path")
        p.add_argument("--data-root", help="root folder of a registered dataset")
        p.add_argument("--preset", help="named preset from configs/presets.yaml (quick, full, paper, rvf10k, 140k, ...)")
        p.add_argument("--config", help="YAML file of TrainConfig keys")
        p.add_argument("--epochs", type=int)
        p.add_argument("--batch-size", type=int, help="images per step (per process under torchrun)")
        p.add_argument("--lr", type=float)
        p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
        p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
        p.add_argument("--image-size", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: automatic)")
        p.add_argument("--num-workers", type=int, help="DataLoader workers (default: automatic)")
        p.add_argument("--max-train-samples", type=int)
        p.add_argument("--max-eval-samples", type=int)
        p.add_argument("--augment", choices=["paper", "light", "none"],
                       help="paper: flip, rotation, crop, colour jitter, affine; light: flip, crop, jitter")
        p.add_argument("--log-every", type=int, help="steps between progress records in metrics.jsonl (default 5)")
        p.add_argument("--scheduler", choices=["cosine", "warmup-cosine", "step", "none"], help="lr schedule, stepped per epoch")
        p.add_argument("--warmup-epochs", type=int, help="warmup-cosine: epochs of linear warm-up (default 0)")
        p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation accuracy (default off)")
        p.add_argument("--nonfinite", choices=["stop", "skip"],
                       help="a NaN/Inf loss: stop the run, keeping the last good checkpoint (default), or skip that step's "
                            "update (20 such steps in a row still stop it)")
        p.add_argument("--runs-dir", help="where run directories go (default runs/)")

    train = command(commands, "train", cmd_train, "train a teacher or a student; writes a run directory")
    train.add_argument("--method", choices=sorted(METHODS), default="teacher")
    training_flags(train)
    train.add_argument("--arch", help="architecture (default resnet50)")
    train.add_argument("--pretrained", help="'imagenet', a local weights file, or 'none'")
    train.add_argument("--trainable", choices=["all", "layer4"])
    train.add_argument("--teacher", help="teacher checkpoint or run (students; default: a shipped teacher of the same data)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or cancelled run from its last checkpoint")
    train.add_argument("--seeds", help="comma-separated seeds: one run per seed, in sequence (e.g. 0,1,2)")
    train.add_argument("--sweep", metavar="KEY=V1,V2,...",
                       help="ablation: one run per value of a config field or method option (e.g. lambda_prune=0,0.5,5)")
    student = train.add_argument_group("student options (kdfs, pearson)")
    for name, (kind, text) in STUDENT_FLAGS.items():
        student.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    student.add_argument("--no-correlation-weight-gradient", action="store_true",
                         help="pearson: the correlation loss moves only the masks, not the weights")
    tickets = train.add_argument_group("lottery tickets (lth)")
    for name, (kind, text) in LTH_FLAGS.items():
        tickets.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    tickets.add_argument("--one-shot", action="store_true",
                         help="lth: also prune the dense run straight to the target, once; taylor: prune in a single step")
    tickets.add_argument("--ticket", metavar="RUN", help="train this ticket (mask kept, weights rewound) on --data: a transfer")

    taylor = train.add_argument_group("Taylor pruning (taylor)")
    taylor.add_argument("--init-checkpoint", metavar="RUN", help="taylor: the network to prune, a dense teacher-method run "
                        "(e.g. --arch efficientnet_lite0) or a taylor step; two-in-one: the student to start from "
                        "(e.g. a compact pearson student; default: --arch from scratch)")
    for name, (kind, text) in TAYLOR_FLAGS.items():
        taylor.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    taylor.add_argument("--local", dest="local_pruning", action="store_true",
                        help="every layer loses the same fraction (default: global ranking across layers)")

    two_in_one = train.add_argument_group("two-in-one distillation (two-in-one; --teacher: a --arch dual_resnet18 teacher run)")
    for name, (kind, text) in TWO_IN_ONE_FLAGS.items():
        two_in_one.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)

    finetune = command(commands, "finetune", cmd_finetune,
                       "fine-tune the compact network of a student checkpoint (default lr 4e-5, BCE)")
    finetune.add_argument("checkpoint", help="student checkpoint or run directory (masked or compact)")
    training_flags(finetune)
    finetune.add_argument("--teacher", help="teacher to distil from (default: the student's own teacher)")
    finetune.add_argument("--lambda-kd", dest="lambda_kd", type=float,
                          help="weight of KD from the student's teacher (default 0: BCE only, as the published fine-tune)")
    finetune.add_argument("--kd-temperature", dest="kd_temperature", type=float, help="T of the KD loss (default 3)")

