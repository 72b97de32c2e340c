"""``reproduce``: a paper's protocol, published beside measured (the driver: :mod:`core.training.protocols`)."""

from __future__ import annotations

import argparse

from core.cli.common import emit


def cmd_reproduce(args: argparse.Namespace) -> None:
    from core.cli.train import executor_settings
    from core.training import protocols

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    plan = protocols.plan(args.protocol, args.dataset, data_root=args.data_root, seeds=seeds, methods=methods,
                          scale=args.scale, teacher=args.teacher, runs_dir=args.runs_dir, reference=args.reference,
                          cross=args.cross, follow=args.follow, transfer=args.transfer_to)
    executor = executor_settings(args, plan.runs_dir)
    if args.dry_run:
        lines = [f"{args.protocol} on {args.dataset} ({args.scale}): {len(plan.stages)} stages, runs in {plan.runs_dir}"]
        for stage in plan.stages:
            record = stage.record()
            lines.append(f"  {stage.stage:8} {stage.method:10} seed {stage.seed}: "
                         + (" ".join(record["command"]) if record["command"] else f"given {stage.given}"))
        lines += [f"  note: {note}" for note in plan.notes]
        emit(args, plan.record(), "\n".join(lines))
        return
    result = protocols.run(plan, out=args.out, progress=not args.quiet, latency=args.latency, executor=executor)
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
    emit(args, result, "\n".join(lines))


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""
    from core.cli.train import executor_flags
    from core.training.protocols import PLANNERS, SCALES

    reproduce = command(commands, "reproduce", cmd_reproduce,
                        "run a paper's whole protocol (teacher, every method per seed, fine-tunes where the paper had "
                        "them) and report published beside measured; resumable")
    reproduce.add_argument("protocol", choices=sorted(PLANNERS))
    reproduce.add_argument("--dataset", required=True, help="a registered dataset (with --data-root), synthetic:<source>, "
                                                            "or a folder/CSV (with --reference)")
    reproduce.add_argument("--data-root", help="root folder of a registered dataset (a video benchmark: the face crops "
                                               "`data frames` wrote); it goes into every stage's command")
    reproduce.add_argument("--cross", help="comma-separated datasets the report tests every run on as well, each NAME=DIR "
                                           "or a folder path (e.g. celebdf=/data/celebdf-frames,dfdc=/data/dfdc-frames "
                                           "after --dataset ffpp: DeepfakeBench's published rows beside the measured)")
    reproduce.add_argument("--transfer-to", metavar="NAME=DIR,...",
                           help="pearson-paper: datasets each final student is transferred to after fine-tuning (the "
                                "paper's Table 8: python -m core transfer), each NAME=DIR or a folder")
    reproduce.add_argument("--seeds", help="comma-separated seeds (default at full scale: 0-9 for pearson-paper, as its t-tests, "
                                                        "0,1,2 for the others; 0 at mini)")
    reproduce.add_argument("--follow", choices=("code", "paper"), default="code",
                           help="where the paper's text and its authors' released code disagree, follow the code "
                                "(default: it produced the published numbers) or the paper's equations (T^2 in KD, a "
                                "decoder per stage summed over the stages, Eq. 5's 1/(W-1))")
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
    executor_flags(reproduce)
