"""``video``: per-frame and per-video verdicts on a video, and an annotated copy."""

from __future__ import annotations

import argparse

from core.cli.common import answered_by, emit, probability, runtime_flag
from core.cli.data import face_flags, face_options


def cmd_video(args: argparse.Namespace) -> None:
    import core
    from core.data.faces import FACE_MARGIN
    from core.data.frames import crop_scale_of
    from core.data.video import SamplingOptions
    from core.evaluation.ood import load_ood
    from core.evaluation.video import VideoOptions, analyse_video

    model = core.load_model(args.checkpoint, runtime=args.runtime, progress=not args.quiet)
    # crops framed like the checkpoint's training images: a `data frames` dataset says its scale; the embedded
    # benchmark's images show the face with a margin of FACE_MARGIN on each side
    crop_scale = args.crop_scale or crop_scale_of(model.header.get("config", {}).get("data", "")) or 1 + 2 * FACE_MARGIN
    options = VideoOptions(
        sampling=SamplingOptions(strategy=args.strategy, num_frames=args.num_frames, stride=args.stride, random=args.random,
                                 seed=args.seed),
        faces=face_options(args, crop_scale), aggregate=args.aggregate, threshold=args.threshold)
    result = analyse_video(args.input, model, options, out=args.out, progress=not args.quiet, ood=load_ood(args.checkpoint))
    result = {**result, **answered_by(model, args.runtime)}
    timing = result["timing"]
    written = f"; wrote {result['output']['path']} ({result['output']['codec']})" if "output" in result else ""
    emit(args, result, f"{result['verdict']}; {result['faces_total']} faces in {result['sampled']} sampled frames "
                        f"({len(result['frames_without_face'])} without a face); "
                        + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timing.items()) + written
                        + f"; answered by {result['runtime_description']}")


def add_parsers(commands, command) -> None:
    """This group's subcommands on the ``python -m core`` parser."""

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
    video.add_argument("--threshold", type=probability, default=0.5, help="video score above it means fake (default 0.5)")
    video.add_argument("--crop-scale", type=float, help="crop side / face side (default: that of the checkpoint's training data: "
                                                        "1.3 for `data frames` crops, 1.8 for the embedded benchmark)")
    runtime_flag(video)
    face_flags(video)
