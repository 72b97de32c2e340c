"""``predict``: verdicts on image files; ``ood fit``: a checkpoint's out-of-distribution model as a sidecar."""

from __future__ import annotations

import argparse

from core.cli.common import answered_by, emit, probability, runtime_flag


def cmd_predict(args: argparse.Namespace) -> None:
    import csv

    import core
    from core.evaluation.ood import load_ood
    from core.evaluation.predict import COLUMNS, predict_files
    from core.io import atomic_write

    model = core.load_model(args.checkpoint, runtime=args.runtime, progress=not args.quiet)
    ood = load_ood(args.checkpoint)
    result = predict_files(model, args.paths, ood, face_crop=not args.no_crop, threshold=args.threshold,
                           batch_size=args.batch_size, detector=args.detector, progress=not args.quiet)
    result = {**result, "checkpoint": str(args.checkpoint), **answered_by(model, args.runtime), "threshold": args.threshold}
    if args.out:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "note"], extrasaction="ignore")
                writer.writeheader()
                for row in result["predictions"]:
                    writer.writerow({**row, "face": "" if row["face"] is None else " ".join(map(str, row["face"]))})

        atomic_write(args.out, write)
    predictions = result["predictions"]
    fake = sum(p["label"] == "fake" for p in predictions)
    unreliable = sum(p["in_distribution"] is False for p in predictions)
    no_face = sum(p["face"] is None for p in predictions) if not args.no_crop else 0
    ood_note = (f"; {unreliable} unlike the training data (verdict unreliable)" if ood is not None
                else "; no out-of-distribution model for this checkpoint (`python -m core ood fit` makes one)")
    emit(args, result, f"{len(predictions)} images: {fake} fake, {len(predictions) - fake} real{ood_note}"
                        + f"; answered by {result['runtime_description']}"
                        + (f"; {no_face} without a face (centre square judged)" if no_face else "")
                        + (f"; {len(result['skipped'])} skipped" if result["skipped"] else "")
                        + (f"; {result['images_per_s']} images/s" if result["images_per_s"] else "")
                        + (f"; wrote {args.out}" if args.out else ""))


def cmd_ood_fit(args: argparse.Namespace) -> None:
    from core.evaluation.ood import fit_checkpoint

    result = fit_checkpoint(args.checkpoint, args.data, args.data_root, progress=not args.quiet)
    share = result.get("test_in_distribution")
    emit(args, result, f"wrote {result['sidecar']} ({result['sidecar_bytes'] / 1e3:.0f} kB): fitted on {result['n_fit']} "
                        f"training images, calibrated on {result['n_calibration']} validation images"
                        + (f"; {share:.1%} of {result['n_test']} test images in distribution" if share is not None else ""))


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""
    from core.data.faces import DETECTORS

    predict = command(commands, "predict", cmd_predict,
                      "verdicts on images or folders of images: face crop, P(fake), and whether the input is like the "
                      "training data")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (taken recursively)")
    predict.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    predict.add_argument("--no-crop", action="store_true", help="judge the whole image (default: the largest face)")
    predict.add_argument("--threshold", type=probability, default=0.5, help="P(fake) above it means fake (default 0.5)")
    predict.add_argument("--out", help="CSV file with one row per image (the JSON prediction fields)")
    predict.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default 32)")
    runtime_flag(predict)
    predict.add_argument("--detector", choices=DETECTORS, default="auto", help="face detector (default auto: YuNet)")

    summary = "out-of-distribution models of checkpoints"
    ood = commands.add_parser("ood", help=summary, description=summary)
    ood_commands = ood.add_subparsers(dest="ood_command", required=True, metavar="ACTION")
    fit = command(ood_commands, "fit", cmd_ood_fit,
                  "fit a checkpoint's out-of-distribution model on its training data and write it beside it "
                  "(<name>.ood.safetensors); the checkpoint itself is not rewritten")
    fit.add_argument("checkpoint", help="checkpoint file or run directory")
    fit.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    fit.add_argument("--data-root", help="root folder for --data")
