"""``evaluate`` and ``report``: metrics of checkpoints, paper-style tables and figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.cli.common import emit, probability


def cmd_evaluate(args: argparse.Namespace) -> None:
    from core.evaluation.evaluate import evaluate
    from core.training.distributed import default_device

    started = time.perf_counter()
    evaluation = evaluate(args.checkpoint, args.data, args.split, args.data_root, str(default_device(args.device)),
                          args.batch_size, args.num_workers, progress=not args.quiet, use_cache=not args.no_cache)
    metrics = evaluation.metrics(args.threshold, args.video_aggregate)
    result = {**metrics, "seconds": round(time.perf_counter() - started, 2)}
    if args.roc:
        result["roc"] = evaluation.roc()
    video = metrics.get("video")
    video = (f", video AUC {video['auc']:.4f}, EER {video['eer']:.4f}, AP {video['ap']:.4f} on {video['videos']} videos "
             f"({video['aggregate']} of the frames)") if video else ""
    reasons = ", ".join(f"{count} {reason}" for reason, count in metrics["skipped_reasons"].items())
    emit(args, result, f"{evaluation.dataset}/{args.split}: accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f}, "
                        f"EER {metrics['eer']:.4f}, AP {metrics['ap']:.4f} on {metrics['n']} images "
                        f"({metrics['skipped']} skipped{': ' + reasons if reasons else ''}"
                        f"{', cached predictions' if evaluation.cached else ''}){video}; {evaluation.images}")


def cmd_report(args: argparse.Namespace) -> None:
    from core.evaluation.report import build_report, mcnemar_pair, write_mcnemar_pair

    if args.mcnemar is None and args.on is not None:
        raise ValueError("--on names the test set of --mcnemar CKPT_A CKPT_B; give both")
    if args.mcnemar is not None and args.on is None:
        raise ValueError("--mcnemar CKPT_A CKPT_B needs --on D, the test set both are scored on")
    if not args.paths and args.mcnemar is None:
        raise ValueError("report needs run directories or checkpoints, or --mcnemar CKPT_A CKPT_B --on D")
    out = args.out or str(Path("reports") / time.strftime("%Y%m%d-%H%M%S"))
    pair = None
    if args.mcnemar is not None:  # first: a missing checkpoint or an unknown dataset fails before the tables' work
        pair = mcnemar_pair(*args.mcnemar, args.on, args.split, args.data_root, progress=not args.quiet)
    result, human = {"out": out, "tables": {}, "figures": []}, []
    if args.paths:
        result = build_report(args.paths, out, args.data or "", args.split, args.data_root, latency=not args.no_latency,
                              progress=not args.quiet, png=not args.no_png)
        human.append(f"wrote {len(result['tables'])} tables and {len(result['figures'])} figures to {result['out']} "
                     f"({result['computed']} of {result['evaluations']} evaluations computed, the rest cached; "
                     f"{result['seconds']} s)")
    if pair is not None:
        result["tables"]["mcnemar_pair"] = write_mcnemar_pair(pair, out)
        result["mcnemar"] = pair
        human.insert(0, _mcnemar_text(pair))
        human.append(f"wrote the mcnemar_pair table to {out}")
    emit(args, result, "\n".join(human))


def _mcnemar_text(pair: dict) -> str:
    """The pair's 2x2 table, statistic, p-value and test, for a terminal."""
    (both, only_a), (only_b, neither) = pair["table"]
    width = max(len(str(count)) for count in (both, only_a, only_b, neither)) + 2
    return "\n".join([
        f"McNemar on {pair['tested_on']}/{pair['split']}, {pair['n']} images:",
        f"  A = {pair['a']} (trained on {pair['a_trained_on']}, accuracy {pair['accuracy_a']:.4f})",
        f"  B = {pair['b']} (trained on {pair['b_trained_on']}, accuracy {pair['accuracy_b']:.4f})",
        f"  {'':<10}{'B correct':>{width + 9}}{'B wrong':>{width + 9}}",
        f"  {'A correct':<10}{both:>{width + 9}}{only_a:>{width + 9}}",
        f"  {'A wrong':<10}{only_b:>{width + 9}}{neither:>{width + 9}}",
        f"  statistic {pair['statistic']:.4g}, p-value {pair['p_value']:.4g} ({pair['test']})"
        + ("; significant at 0.05" if pair["significant_at_0.05"] else "; not significant at 0.05")])


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""
    from core.data.datasets import SPLIT_CHOICES
    from core.evaluation.evaluate import VIDEO_AGGREGATES

    evaluate = command(commands, "evaluate", cmd_evaluate, "metrics of one checkpoint on one dataset split")
    evaluate.add_argument("checkpoint", help="checkpoint file or run directory")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--split", default="test", choices=list(SPLIT_CHOICES),
                          help="the split as the data declares it (default test); all: every image")
    evaluate.add_argument("--threshold", type=probability, default=0.5, help="P(fake) above it means fake (default 0.5)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=0)
    evaluate.add_argument("--device")
    evaluate.add_argument("--no-cache", action="store_true", help="recompute predictions (and do not store them)")
    evaluate.add_argument("--roc", action="store_true", help="include the ROC curve points in the JSON")
    evaluate.add_argument("--video-aggregate", default="mean", choices=list(VIDEO_AGGREGATES),
                          help="a video's score from its frames' P(fake) when frames carry a video id (default mean, "
                               "as DeepfakeBench)")

    report = command(commands, "report", cmd_report, "paper-style tables (CSV + Markdown) and figures for runs and checkpoints")
    report.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_CKPT")
    report.add_argument("--mcnemar", nargs=2, metavar=("CKPT_A", "CKPT_B"),
                        help="McNemar's test between these two checkpoints, trained on any data, on the test set --on "
                             "(the Pearson paper's Table 9): the 2x2 table, statistic, p-value and test; also "
                             "mcnemar_pair.csv/.md")
    report.add_argument("--on", metavar="D", help="the dataset --mcnemar scores both checkpoints on (--split of it, "
                                                  "default test): a registered name with --data-root, NAME=ROOT, "
                                                  "synthetic[:<source>], or a folder/CSV path")
    report.add_argument("--out", help="output folder (default reports/<time>)")
    report.add_argument("--data", help="comma-separated datasets for the cross-dataset tables (each checkpoint's own is "
                                       "added): NAME=ROOT gives a registered dataset its own root (celebdf=/data/celebdf-"
                                       "frames,dfdc=/data/dfdc-frames), NAME uses --data-root, or a folder/CSV path; "
                                       "FF++, Celeb-DF or DFDC add DeepfakeBench's table (cross_dataset_video)")
    report.add_argument("--data-root", help="the root of a registered dataset given by NAME alone")
    report.add_argument("--split", default="test", choices=list(SPLIT_CHOICES))
    report.add_argument("--no-latency", action="store_true", help="skip the deployment table's latency measurement")
    report.add_argument("--no-png", action="store_true", help="HTML figures only (PNGs need kaleido and a Chromium)")
