"""The command line: ``python -m core <command>`` (see INTERFACES.md).

Human logs and progress bars go to stderr. With ``--json`` the last line of
stdout is exactly one JSON object. Bad input ends with a one-line ``error: ...``
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("core")
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def _emit(args: argparse.Namespace, result: dict, human: str) -> None:
    """Print the human summary to stderr and, with --json, one JSON object to stdout."""
    print(human, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(_finite(result), default=str))


def _finite(value):
    """JSON has no NaN: report undefined metrics as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- data -----------------------------------------------------------------------------


def cmd_data_synth(args: argparse.Namespace) -> None:
    from core.data.synthetic import SOURCES, SynthConfig, default_root, generate_benchmark, read_manifest, split_totals

    sources = tuple(args.sources.split(",")) if args.sources else SOURCES
    config = SynthConfig(image_size=args.image_size, per_source=args.per_source, seed=args.seed,
                         difficulty=args.difficulty, sources=sources)
    if not 0 <= args.difficulty <= 1:
        raise ValueError(f"--difficulty must be in [0, 1], got {args.difficulty}")
    out = Path(args.out) if args.out else default_root()
    existing = read_manifest(out) if args.if_missing else None
    manifest = existing or generate_benchmark(out, config, workers=args.workers, progress=not args.quiet)
    sources = manifest["config"]["sources"]
    counts = split_totals(manifest)
    verb = "kept" if existing else "wrote"
    _emit(args, {"root": str(out), "sources": sources, "counts": manifest["counts"],
                 "images": manifest["images"], "seconds": manifest["seconds"], "generated": existing is None},
          f"{verb} {manifest['images']} images ({len(sources)} sources: {counts}) in {out} ({manifest['seconds']} s to generate)")


def cmd_data_list(args: argparse.Namespace) -> None:
    from core.data.datasets import DATASETS, describe_datasets

    _emit(args, {"datasets": sorted(DATASETS)}, describe_datasets())


def cmd_data_info(args: argparse.Namespace) -> None:
    from core.data.datasets import resolve_dataset

    dataset = resolve_dataset(args.data, args.data_root)
    counts = dataset.counts()
    sources = sorted({s.source for split in dataset.splits.values() for s in split})
    described = {split: dataset.describe(split) for split in counts}
    dropped = [f"  left out of the manifest: {count} {reason} (e.g. {', '.join(dataset.dropped_examples[reason])})"
               for reason, count in dataset.dropped_reasons.items()]
    _emit(args, {"name": dataset.name, "root": str(dataset.root), "counts": counts, "sources": sources,
                 "provenance": dataset.provenance, "images": described, "dropped_rows": dataset.dropped_rows,
                 "dropped_reasons": dataset.dropped_reasons, "dropped_examples": dataset.dropped_examples},
          f"{dataset.name} at {dataset.root}: {counts}\n" + "\n".join(f"  {line}" for line in described.values())
          + "".join(f"\n{line}" for line in dropped))


def cmd_data_check(args: argparse.Namespace) -> None:
    from core.data.check import DUPLICATE_THRESHOLD, check
    from core.data.datasets import resolve_dataset
    from core.io import cache_dir

    args.threshold = DUPLICATE_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= args.threshold <= 256 or args.workers < 1:
        raise ValueError("--threshold is a number of bits in [0, 256], --workers a count >= 1")
    dataset = resolve_dataset(args.data, args.data_root)
    report = check(dataset, None if args.no_cache else cache_dir() / "image-hashes", workers=args.workers,
                   progress=not args.quiet, threshold=args.threshold)
    lines = [f"{report['name']} at {report['root']}: {report['images']} images "
             f"({report['hashed']} hashed, {report['from_cache']} from the cache) in {report['seconds']} s"]
    for record in report["splits"].values():
        sources = ", ".join(f"{name} {c['real']}/{c['fake']}" for name, c in record["sources"].items())
        lines.append(f"  {record['images']}; usable {record['n']} (real {record['labels']['real']}, fake "
                     f"{record['labels']['fake']}; per source real/fake: {sources or '-'}), skipped {record['skipped']}")
    skipped = report["skipped"]
    if skipped["total"]:
        lines.append(f"  skipped {skipped['total']}: " + "; ".join(
            f"{count} {reason} (e.g. {', '.join(skipped['examples'].get(reason, [])[:2])})"
            for reason, count in skipped["reasons"].items()))
    lines += [f"  warning: {warning}" for warning in report["warnings"]]
    sizes = report["sizes"]
    if sizes["width"]:
        lines.append(f"  sizes: width {sizes['width']['min']}-{sizes['width']['max']} (median {sizes['width']['median']:g}), "
                     f"height {sizes['height']['min']}-{sizes['height']['max']}; most common "
                     + ", ".join(f"{size} ({n})" for size, n in sizes["common"]))
    duplicates = report["duplicates"]
    lines.append(f"  near-duplicates across splits: {duplicates['pairs']} pairs (<= {duplicates['threshold_bits']} of 256 bits; "
                 + (", ".join(f"{k}: {v}" for k, v in duplicates["per_split_pair"].items()) or "none") + ")")
    lines += [f"    {pair['splits'][0]} {pair['a']}  ~  {pair['splits'][1]} {pair['b']}  (distance {pair['distance']})"
              for pair in report["duplicates_across_splits"][:10]]
    _emit(args, report, "\n".join(lines))


def _face_options(args: argparse.Namespace, crop_scale: float):
    from core.data.video import FaceOptions

    return FaceOptions(scale_factor=args.scale_factor, min_neighbors=args.min_neighbors, largest_only=not args.all_faces,
                       crop_scale=crop_scale)


def cmd_data_frames(args: argparse.Namespace) -> None:
    from core.data.frames import extract_face_dataset

    summary = extract_face_dataset(args.video_root, args.out, frames_per_video=args.frames_per_video, balance=not args.no_balance,
                                   size=args.size, faces=_face_options(args, args.crop_scale or 1.3),
                                   random_frames=args.random_frames, seed=args.seed, progress=not args.quiet)
    _emit(args, summary, f"wrote {summary['crops']} face crops of {summary['videos']} videos to {summary['out']} "
                         f"(per split {summary['crops_per_split']}, per label {summary['crops_per_label']}; "
                         f"{summary['frames_without_face']} sampled frames had no face); train with --data {summary['out']}")


def cmd_data_videos(args: argparse.Namespace) -> None:
    from core.data.datasets import resolve_dataset
    from core.data.synthetic_video import ClipConfig, write_video_dataset

    width, _, height = args.frame_size.partition("x")
    config = ClipConfig(seconds=args.seconds, fps=args.fps, width=int(width), height=int(height), seed=args.seed)
    samples = resolve_dataset(f"synthetic:{args.source}").split(args.split)
    records = write_video_dataset(args.out, samples, args.per_label, config, suffix=args.suffix, progress=not args.quiet)
    _emit(args, {"out": args.out, "videos": records}, f"wrote {len(records)} synthetic {args.source} clips "
                                                      f"({config.frames} frames at {config.fps:g} fps, {args.frame_size}) to {args.out}")


# --- video --------------------------------------------------------------------------------


def cmd_video(args: argparse.Namespace) -> None:
    import core
    from core.data.faces import FACE_MARGIN
    from core.data.frames import crop_scale_of
    from core.data.video import SamplingOptions
    from core.evaluation.video import VideoOptions, analyse_video

    model = core.load_model(args.checkpoint)
    # crops framed like the checkpoint's training images: a `data frames` dataset says its scale; the embedded
    # benchmark's images show the face with a margin of FACE_MARGIN on each side
    crop_scale = args.crop_scale or crop_scale_of(model.header.get("config", {}).get("data", "")) or 1 + 2 * FACE_MARGIN
    options = VideoOptions(
        sampling=SamplingOptions(strategy=args.strategy, num_frames=args.num_frames, stride=args.stride, random=args.random,
                                 seed=args.seed),
        faces=_face_options(args, crop_scale), aggregate=args.aggregate, threshold=args.threshold)
    result = analyse_video(args.input, model, options, out=args.out, progress=not args.quiet)
    timing = result["timing"]
    written = f"; wrote {result['output']['path']} ({result['output']['codec']})" if "output" in result else ""
    _emit(args, result, f"{result['verdict']}; {result['faces_total']} faces in {result['sampled']} sampled frames "
                        f"({len(result['frames_without_face'])} without a face); "
                        + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timing.items()) + written)


# --- train ----------------------------------------------------------------------------


def _probability(text: str) -> float:
    """A threshold on P(fake): a number in [0, 1], refused at the boundary otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a threshold on P(fake) lies in [0, 1], got {value:g}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


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
    from core.training.config import build_config

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
    from core.training.checkpoint import read_header

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
        from core.methods.taylor import prune_iteratively

        return [result for config in configs
                for result in prune_iteratively(config, one_shot=args.one_shot, progress=not args.quiet, train_fn=train_fn)]
    return [train_fn(config) for config in configs]


def _lottery_tickets(args: argparse.Namespace, config, train_fn) -> list:
    """IMP from a dense run (and one-shot with --one-shot), or one run of a given ticket (--ticket: transfer it)."""
    from core.methods.lth import iterative_magnitude_pruning
    from core.training.checkpoint import read_header, resolve_checkpoint

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
    from core.training.checkpoint import read_header
    from core.training.engine import train

    config = finetune_config(args, read_header(args.checkpoint))
    _emit_run(args, train(config, progress=not args.quiet))


def finetune_config(args: argparse.Namespace, source: dict):
    """The TrainConfig of ``finetune CKPT``, given the student's checkpoint header ``source``.

    With ``--preset``, that preset's fine-tune for this kind of student (a dataset preset refuses a
    student the paper did not fine-tune there, unless ``--lr`` says how); without one, the published
    fine-tune of this kind of student (the ``paper`` preset's), for whatever the flags leave open.
    """
    from core.training.config import finetune_defaults, published_finetune

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


# --- reproduce ------------------------------------------------------------------------------


def cmd_reproduce(args: argparse.Namespace) -> None:
    from core.training import protocols

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    plan = protocols.plan(args.protocol, args.dataset, data_root=args.data_root, seeds=seeds, methods=methods,
                          scale=args.scale, teacher=args.teacher, runs_dir=args.runs_dir, reference=args.reference)
    if args.dry_run:
        lines = [f"{args.protocol} on {args.dataset} ({args.scale}): {len(plan.stages)} stages, runs in {plan.runs_dir}"]
        for stage in plan.stages:
            record = stage.record()
            lines.append(f"  {stage.stage:8} {stage.method:10} seed {stage.seed}: "
                         + (" ".join(record["command"]) if record["command"] else f"given {stage.given}"))
        lines += [f"  note: {note}" for note in plan.notes]
        _emit(args, plan.record(), "\n".join(lines))
        return
    result = protocols.run(plan, out=args.out, progress=not args.quiet, latency=args.latency)
    lines = [f"{args.protocol} on {args.dataset} ({args.scale}, published row: {plan.reference}) in {result['seconds']} s; "
             f"report: {result['report']['out']}"]
    for row in result["rows"]:
        published = row.get("published") or {}
        shown = f"  {row['method']}{' ' + row['label'] if row.get('label') else ''}: accuracy {100 * row['accuracy']:.2f}%"
        if row.get("accuracy_std") is not None:
            shown += f" ± {100 * row['accuracy_std']:.2f}"
        shown += f", MACs ↓ {100 * row['macs_reduction']:.1f}%, params ↓ {100 * row['params_reduction']:.1f}%"
        if "accuracy" in published:
            shown += (f"   | published: {published['accuracy']}%"
                      + (f", FLOPs ↓ {published['flops_reduction']}%, params ↓ {published['params_reduction']}%"
                         if "flops_reduction" in published else ""))
        lines.append(shown)
    _emit(args, result, "\n".join(lines))


# --- export -----------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> None:
    from core.pruning.export import export

    fmt = args.format
    suffix = {"onnx-int8": "-int8.onnx"}.get(fmt, f".{fmt}")
    out = args.out or str(Path(args.checkpoint).with_suffix("")) + f"-compact{suffix}"
    result = export(args.checkpoint, fmt, out, data=args.data, data_root=args.data_root,
                    calibration_images=args.calibration_images, progress=not args.quiet)
    int8 = (f"; {result['bytes'] / 2**20:.2f} MB = {result['size_ratio']:.1%} of the fp32 ONNX "
            f"({result['fp32_bytes'] / 2**20:.2f} MB), calibrated on {result['calibration']['images']} images of "
            f"{result['calibration']['data']}; on {result['check_images']} of them, max |P(fake) difference| "
            f"{result['probability_max_abs_diff']:.3f}" if fmt == "onnx-int8" else "")
    _emit(args, result, f"wrote {result['path']} ({result['kind']}, {result['params'] / 1e6:.2f} M params, "
                        f"{result['macs'] / 1e6:,.1f} M MACs at {result['image_size']} px); "
                        f"max |logit difference| vs the source: {result['max_abs_diff']:.2e}{int8}")


# --- evaluate -------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> None:
    from core.evaluation.evaluate import evaluate
    from core.models.resnet import default_device

    started = time.perf_counter()
    evaluation = evaluate(args.checkpoint, args.data, args.split, args.data_root, str(default_device(args.device)),
                          args.batch_size, args.num_workers, progress=not args.quiet, use_cache=not args.no_cache)
    metrics = evaluation.metrics(args.threshold)
    result = {**metrics, "seconds": round(time.perf_counter() - started, 2)}
    if args.roc:
        result["roc"] = evaluation.roc()
    video = f", video AUC {metrics['video']['auc']:.4f} on {metrics['video']['videos']} videos" if "video" in metrics else ""
    reasons = ", ".join(f"{count} {reason}" for reason, count in metrics["skipped_reasons"].items())
    _emit(args, result, f"{evaluation.dataset}/{args.split}: accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f}, "
                        f"EER {metrics['eer']:.4f}, AP {metrics['ap']:.4f} on {metrics['n']} images "
                        f"({metrics['skipped']} skipped{': ' + reasons if reasons else ''}"
                        f"{', cached predictions' if evaluation.cached else ''}){video}; {evaluation.images}")


# --- report -----------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> None:
    from core.evaluation.report import build_report

    datasets = [d for d in (args.data or "").split(",") if d]
    out = args.out or str(Path("reports") / time.strftime("%Y%m%d-%H%M%S"))
    result = build_report(args.paths, out, datasets, args.split, args.data_root, latency=not args.no_latency,
                          progress=not args.quiet, png=not args.no_png)
    _emit(args, result, f"wrote {len(result['tables'])} tables and {len(result['figures'])} figures to {result['out']} "
                        f"({result['computed']} of {result['evaluations']} evaluations computed, the rest cached; "
                        f"{result['seconds']} s)")


# --- bench ------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> None:
    from core.evaluation.bench import run_benchmark

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result, path = run_benchmark(args.name, smoke=args.smoke, out=args.out)
    _emit(args, {**result, "path": str(path)}, f"{result['summary']} [{path}, {result['seconds']} s]")


# --- profile --------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> None:
    from core.models import build_model
    from core.pruning.flops import profile_model

    if (args.arch is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --arch NAME or a checkpoint path")
    extra, human = {}, ""
    if args.arch:
        model, image_size, what = build_model(args.arch), args.image_size or 256, args.arch
    else:
        import core
        from core.deploy.onnx import OnnxModel
        from core.models.masked import masked_layers
        from core.pruning.export import compact_of

        loaded = core.load_model(args.checkpoint)
        image_size, what = args.image_size or loaded.header["image_size"], str(args.checkpoint)
        if isinstance(loaded, OnnxModel):  # a graph, not a module to profile
            _emit_exported_profile(args, loaded.header, image_size, what)
            return
        model, header = compact_of(loaded)  # a masked student counts as the network it prunes to
        if header["model"]["type"] == "compact-resnet":
            full = build_model(header["model"]["arch"])
            teacher = profile_model(full, image_size)
            active = model.active_filters
            channels = [layer.channels for layer in masked_layers(full)]
            extra = {"kind": "compact-resnet", "teacher_params": teacher["params"], "teacher_macs": teacher["macs"],
                     "active_filters": active, "active_percent": [round(100 * a / c, 2) for a, c in zip(active, channels, strict=True)]}
        elif header["model"]["type"] == "pruned-net":  # a taylor run: reductions against the dense architecture
            dense = profile_model(build_model(header["model"]["arch"]), image_size)
            extra = {"kind": "pruned-net", "dense_params": dense["params"], "dense_macs": dense["macs"]}
    cost = profile_model(model, image_size)
    if extra.get("kind") == "pruned-net":
        extra["params_reduction"] = 1 - cost["params"] / extra["dense_params"]
        extra["macs_reduction"] = 1 - cost["macs"] / extra["dense_macs"]
        human = (f" (pruned: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs "
                 f"than the dense {header['model']['arch']})")
    elif extra:
        extra["params_reduction"] = 1 - cost["params"] / extra["teacher_params"]
        extra["macs_reduction"] = 1 - cost["macs"] / extra["teacher_macs"]
        human = (f" (compact student: {extra['params_reduction']:.1%} fewer params, {extra['macs_reduction']:.1%} fewer MACs "
                 f"than its {header['model']['arch']} teacher; {sum(extra['active_filters'])} of {sum(channels)} block filters kept)")
    _emit(args, {"model": what, **cost, "params_m": cost["params"] / 1e6, "macs_m": cost["macs"] / 1e6, **extra},
          f"{what} at {image_size}x{image_size}: {cost['params'] / 1e6:.2f} M params, {cost['macs'] / 1e6:,.1f} M MACs{human}")


def _emit_exported_profile(args: argparse.Namespace, header: dict, image_size: int, what: str) -> None:
    """An ONNX export's params and MACs are those its export recorded: the PyTorch network it was exported from."""
    if image_size != header["image_size"]:
        raise ValueError(f"{what} is an ONNX export: its counts are recorded at its own {header['image_size']} px; "
                         "profile the source checkpoint for another --image-size")
    deploy = header["deploy"]
    result = {"model": what, "params": header["params"], "macs": header["macs"], "image_size": image_size,
              "params_m": header["params"] / 1e6, "macs_m": header["macs"] / 1e6, "kind": header["model"]["type"],
              "precision": deploy["precision"], "counted_from": "export header", "source": deploy.get("source")}
    _emit(args, result, f"{what} at {image_size}x{image_size}: {result['params_m']:.2f} M params, {result['macs_m']:,.1f} M MACs "
                        f"(ONNX {deploy['precision']}: the counts of the network it was exported from, {deploy.get('source')})")


# --- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from core.data.datasets import SPLIT_CHOICES
    from core.methods import METHODS

    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(sub, name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout as the last line")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        p.set_defaults(func=func)
        return p

    data = commands.add_parser("data", help="datasets: generate the embedded benchmark, list adapters")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = command(data_commands, "synth", cmd_data_synth, "write the embedded synthetic deepfake benchmark")
    synth.add_argument("--out", help="output folder (default data/synthetic, or $CORE_DATA_DIR/synthetic)")
    synth.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--per-source", type=int, default=2400, help="images per source over all splits (default 2400)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--difficulty", type=float, default=0.5, help="0 = easy ... 1 = hard (default 0.5)")
    synth.add_argument("--sources", help="comma-separated subset of sources (default: all five)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    synth.add_argument("--if-missing", action="store_true", help="keep an existing benchmark at --out instead of rewriting it")
    def face_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scale-factor", type=float, default=1.15, help="Haar pyramid step (default 1.15; OpenCV's is 1.1)")
        p.add_argument("--min-neighbors", type=int, default=5, help="Haar hits needed for a face (default 5; OpenCV's is 3)")
        p.add_argument("--all-faces", action="store_true", help="every face of a frame (default: the largest only)")

    frames = command(data_commands, "frames", cmd_data_frames,
                     "turn a folder of videos (FaceForensics++ or real/fake folders) into a dataset of face crops")
    frames.add_argument("video_root", help="folder of videos, e.g. FaceForensics++ with original_sequences/ and manipulated_sequences/")
    frames.add_argument("--out", required=True, help="new folder for the crops, manifest.csv and frames.json")
    frames.add_argument("--frames-per-video", type=int, default=32, help="crops per real video (default 32)")
    frames.add_argument("--no-balance", action="store_true", help="as many frames per fake video as per real one")
    frames.add_argument("--size", type=int, default=256, help="side of the saved square crops (0: as cropped; default 256)")
    frames.add_argument("--crop-scale", type=float, help="crop side / face side (default 1.3)")
    frames.add_argument("--random-frames", action="store_true", help="random frames (seeded) instead of evenly spread")
    frames.add_argument("--seed", type=int, default=0)
    face_flags(frames)
    videos = command(data_commands, "videos", cmd_data_videos,
                     "write synthetic test clips: embedded-benchmark faces moving over backgrounds (real/fake/<source>/)")
    videos.add_argument("--out", required=True)
    videos.add_argument("--source", default="faceswap", help="benchmark source of the fake faces (default faceswap)")
    videos.add_argument("--split", default="test", choices=["train", "val", "test"], help="benchmark split the faces come from")
    videos.add_argument("--per-label", type=int, default=4, help="clips per label (default 4)")
    videos.add_argument("--seconds", type=float, default=10.0)
    videos.add_argument("--fps", type=float, default=25.0)
    videos.add_argument("--frame-size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    videos.add_argument("--suffix", default=".mp4", choices=[".mp4", ".avi", ".webm"])
    videos.add_argument("--seed", type=int, default=0)
    command(data_commands, "list", cmd_data_list, "list the registered real-dataset presets and their layouts")
    data_check = command(data_commands, "check", cmd_data_check, "a dataset report before training: counts, skipped files, "
                         "unbalanced splits, image sizes, near-duplicates across splits")
    data_check.add_argument("data", help="synthetic, synthetic:<source>, a registered name, or a folder/CSV path")
    data_check.add_argument("--data-root", help="root folder of a registered dataset")
    data_check.add_argument("--threshold", type=int, default=None,
                            help="near-duplicate distance, in bits of the 256-bit perceptual hash (default 24)")
    data_check.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes that hash (default: CPUs)")
    data_check.add_argument("--no-cache", action="store_true", help="hash every file again (and store nothing)")
    info = command(data_commands, "info", cmd_data_info, "resolve a dataset spec and print its split counts")
    info.add_argument("data", help="synthetic, synthetic:<source>, a registered name, or a folder/CSV path")
    info.add_argument("--data-root", help="root folder of a registered dataset")

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

    from core.training.protocols import PLANNERS, SCALES

    reproduce = command(commands, "reproduce", cmd_reproduce,
                        "run a paper's whole protocol (teacher, every method per seed, fine-tunes where the paper had "
                        "them) and report published beside measured; resumable")
    reproduce.add_argument("protocol", choices=sorted(PLANNERS))
    reproduce.add_argument("--dataset", required=True, help="a registered dataset (with --data-root), synthetic:<source>, "
                                                            "or a folder/CSV (with --reference)")
    reproduce.add_argument("--data-root", help="root folder of a registered dataset")
    reproduce.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2 at full scale, 0 at mini)")
    reproduce.add_argument("--methods", help="comma-separated subset of the compared methods (default: all)")
    reproduce.add_argument("--scale", choices=SCALES, default="full",
                           help="full: the published settings; mini: the same on a small epoch budget at 64 px")
    reproduce.add_argument("--teacher", help="a trained teacher to use instead of the teacher stage")
    reproduce.add_argument("--reference", help="the dataset whose published row to compare with (default: the dataset's "
                                               "own; synthetic:* uses 140k)")
    reproduce.add_argument("--dry-run", action="store_true", help="print the plan (commands and resolved configs) and stop")
    reproduce.add_argument("--runs-dir", help="where the stages' runs go (default runs/reproduce/<protocol>-<dataset>-<scale>);"
                                              " a rerun finds and skips finished runs, and resumes interrupted ones")
    reproduce.add_argument("--out", help="report folder (default <runs-dir>/report)")
    reproduce.add_argument("--latency", action="store_true", help="add the report's CPU latency table")

    export = command(commands, "export", cmd_export,
                     "write a checkpoint's compact model (pt, onnx, onnx-int8, safetensors) and check it")
    export.add_argument("checkpoint", help="checkpoint file or run directory")
    export.add_argument("--format", choices=["pt", "onnx", "onnx-int8", "safetensors"], default="pt",
                        help="onnx-int8: int8 static quantisation (ONNX Runtime, QDQ, per-channel weights)")
    export.add_argument("--out", help="output path (default: next to the checkpoint, <name>-compact.<format>, "
                                      "<name>-compact-int8.onnx)")
    export.add_argument("--data", help="onnx-int8: dataset of the calibration images (default: the checkpoint's own)")
    export.add_argument("--data-root", help="onnx-int8: root folder of a registered --data")
    export.add_argument("--calibration-images", type=int,
                        help="onnx-int8: training images that set the int8 ranges, evenly spread (default 300)")

    evaluate = command(commands, "evaluate", cmd_evaluate, "metrics of one checkpoint on one dataset split")
    evaluate.add_argument("checkpoint", help="checkpoint file or run directory")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--split", default="test", choices=list(SPLIT_CHOICES),
                          help="the split as the data declares it (default test); all: every image")
    evaluate.add_argument("--threshold", type=_probability, default=0.5, help="P(fake) above it means fake (default 0.5)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=0)
    evaluate.add_argument("--device")
    evaluate.add_argument("--no-cache", action="store_true", help="recompute predictions (and do not store them)")
    evaluate.add_argument("--roc", action="store_true", help="include the ROC curve points in the JSON")

    report = command(commands, "report", cmd_report, "paper-style tables (CSV + Markdown) and figures for runs and checkpoints")
    report.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_CKPT")
    report.add_argument("--out", help="output folder (default reports/<time>)")
    report.add_argument("--data", help="comma-separated datasets for the cross-dataset table (each checkpoint's own is added)")
    report.add_argument("--data-root")
    report.add_argument("--split", default="test", choices=list(SPLIT_CHOICES))
    report.add_argument("--no-latency", action="store_true", help="skip the deployment table's latency measurement")
    report.add_argument("--no-png", action="store_true", help="HTML figures only (PNGs need kaleido and a Chromium)")

    video = command(commands, "video", cmd_video, "per-frame and per-video verdicts on a video, and an annotated copy")
    video.add_argument("input", help="video file (.mp4, .avi, .mov, .mkv, .webm, ...)")
    video.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    video.add_argument("--out", help="annotated video: .mp4 (H.264 if this OpenCV has it, else mp4v), .webm (VP8, plays in "
                                     "browsers) or .avi")
    video.add_argument("--strategy", choices=["fixed_num_frames", "fixed_stride"], default="fixed_num_frames")
    video.add_argument("--num-frames", type=int, default=32, help="fixed_num_frames: frames to sample (default 32)")
    video.add_argument("--stride", type=int, default=10, help="fixed_stride: every N-th frame (default 10)")
    video.add_argument("--random", action="store_true", help="fixed_num_frames: random frames (seeded) instead of evenly spread")
    video.add_argument("--seed", type=int, default=0)
    video.add_argument("--aggregate", choices=["mean", "median", "max"], default="mean", help="per-video score from the faces'")
    video.add_argument("--threshold", type=_probability, default=0.5, help="video score above it means fake (default 0.5)")
    video.add_argument("--crop-scale", type=float, help="crop side / face side (default: that of the checkpoint's training data: "
                                                        "1.3 for `data frames` crops, 1.8 for the embedded benchmark)")
    face_flags(video)

    from core.evaluation.bench import BENCHMARKS

    bench = command(commands, "bench", cmd_bench, "run a benchmark (side-by-side ratios) and write its JSON to bench/results/")
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="; ".join(f"{b.name}: {b.description}" for b in BENCHMARKS.values()))
    bench.add_argument("--smoke", action="store_true", help="a tiny configuration that runs in seconds (CI), in bench/results/smoke/")
    bench.add_argument("--out", help="folder for the JSON (default bench/results/)")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")

    profile = command(commands, "profile", cmd_profile, "parameters and MACs (thop convention)")
    profile.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory")
    profile.add_argument("--arch", help="an architecture name instead of a checkpoint")
    profile.add_argument("--image-size", type=int, help="input side (default: the checkpoint's, or 256)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.data.datasets import DatasetError
    from core.data.images import ImageLoadError
    from core.data.video import VideoError
    from core.training.checkpoint import CheckpointError
    from core.training.engine import Cancelled

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    # OSError: a missing file, a full disk, a read-only folder (core.io.WriteError), ... (--verbose shows the traceback)
    except (DatasetError, CheckpointError, ImageLoadError, VideoError, ValueError, OSError, RuntimeError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    return 0


if __name__ == "__main__":
    sys.exit(main())
