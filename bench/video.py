"""The video command end to end."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import REPO, SHIPPED_RESNET50, register_benchmark, target

VIDEO_TARGET_S = 15.0  # a 10 s, 25 fps, 640x360 clip, 32 sampled frames, compact Pearson student, 2 CPU cores


@register_benchmark("video", "the video command on a synthetic 10 s 25 fps 640x360 clip: decode, detect, classify, encode")
def bench_video(smoke: bool) -> dict:
    """``python -m core video`` end to end (a fresh process: imports and model load included), and its stages in-process.

    The clip is a synthetic fake (a benchmark faceswap test face moving over a background);
    smoke: 2 s at 10 fps, 320x180, 8 sampled frames.
    """
    import json
    import subprocess
    import sys
    import tempfile

    import core
    from core.data.datasets import FAKE
    from core.data.synthetic_video import ClipConfig, sample_clip
    from core.data.video import SamplingOptions
    from core.evaluation.video import VideoOptions, analyse_video
    from core.io import cache_dir

    clip_config = ClipConfig(seconds=2, fps=10, width=320, height=180, face_side=110) if smoke else ClipConfig()
    frames, repeats = (8, 1) if smoke else (32, 3)
    checkpoint = SHIPPED_RESNET50["pearson"]
    clip = sample_clip(FAKE, cache_dir() / "videos", config=clip_config)
    model = core.load_model(REPO / checkpoint, runtime="torch")
    options = VideoOptions(sampling=SamplingOptions(num_frames=frames))
    stages, walls = [], []
    with tempfile.TemporaryDirectory(prefix="core-bench-video-") as scratch:
        for repeat in range(repeats):
            stages.append(analyse_video(clip, model, options, out=Path(scratch) / f"in-process-{repeat}.mp4", progress=False)["timing"])
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "core", "video", str(clip), "--checkpoint", checkpoint, "--num-frames",
                                   str(frames), "--out", str(Path(scratch) / f"cli-{repeat}.mp4"), "--quiet", "--json"],
                                  cwd=REPO, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - started)
            result = json.loads(done.stdout.strip().splitlines()[-1])
        photo = _photo_clip(Path(scratch), clip_config)
        photo_walls, photo_results = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "core", "video", str(photo), "--checkpoint", checkpoint, "--num-frames",
                                   str(frames), "--quiet", "--json"], cwd=REPO, capture_output=True, text=True, check=True)
            photo_walls.append(time.perf_counter() - started)
            photo_results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    photo_wall = statistics.median(photo_walls)
    found_share = statistics.median(1 - len(r["frames_without_face"]) / r["sampled"] for r in photo_results)
    photo_record = {"clip": "scikit-image's astronaut (head and shoulders) moving over a background", "cli_wall_s": photo_walls,
                    "median_cli_wall_s": round(photo_wall, 3), "frames_with_face": found_share,
                    "verdict": photo_results[-1]["verdict"], "ood_score": photo_results[-1]["ood_score"],
                    "in_distribution": photo_results[-1]["in_distribution"], "timing": photo_results[-1]["timing"]}
    medians = {stage: round(statistics.median(t[stage] for t in stages), 3) for stage in stages[0]}
    wall = statistics.median(walls)
    summary = (f"video: {clip_config.seconds:g} s {clip_config.fps:g} fps {clip_config.width}x{clip_config.height} clip, {frames} "
               f"frames, compact Pearson: CLI end to end {wall:.2f} s (target < {VIDEO_TARGET_S:g} s); in-process "
               + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in medians.items()))
    return {"config": {"clip": clip_config.__dict__, "sampled_frames": frames, "checkpoint": checkpoint, "repeats": repeats},
            "raw_s": {"cli_wall": [round(w, 3) for w in walls], "stages": stages}, "median_s": {"cli_wall": round(wall, 3), **medians},
            "faces_found": result["faces_total"], "verdict": result["verdict"], "output": result["output"],
            "real_photograph": photo_record,
            "targets": {"cli end to end (s)": target(wall, VIDEO_TARGET_S, higher_is_better=False),
                        "real-photograph clip: cli end to end (s)": target(photo_wall, VIDEO_TARGET_S, higher_is_better=False),
                        "real-photograph clip: sampled frames with the face": target(found_share, PHOTO_FACE_TARGET)},
            "summary": summary + f"; real-photograph clip: face in {found_share:.0%} of sampled frames (target >= "
                                 f"{PHOTO_FACE_TARGET:.0%}), CLI {photo_wall:.2f} s, {photo_results[-1]['verdict']}"}


PHOTO_FACE_TARGET = 0.95  # issue 21: the face found in >= 95% of sampled frames of the real-photograph clip


def _photo_clip(folder: Path, config) -> Path:
    """A clip of a real photograph: scikit-image's astronaut, head and shoulders, moving over a drifting background."""
    import skimage.data
    from PIL import Image

    from core.data.synthetic_video import render_clip, write_video

    photo = Image.fromarray(skimage.data.astronaut()).crop((90, 0, 390, 300))
    return write_video(folder / "astronaut.mp4", render_clip(photo, config), config.fps)
