"""Face-crop extraction (``data frames``' engine, :func:`core.data.frames.extract_items`) at dataset scale."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench import register_benchmark, target

WORKERS = (1, 2)  # in-process, and a pool of 2 processes (one OpenCV thread each) on the 2-core reference machine
# the pool keeps the reference machine's 2 cores busy (CPU seconds of all processes / wall seconds). Not a speed-up
# target: the in-process run is partly parallel already (OpenCV's threads), so its speed-up is below the core count
WORKERS_CORES_TARGET = 1.7
# the control: sum(range(n)), pure CPU work with no I/O or shared state (only the machine can slow two processes
# down), and builtins, so a worker process imports nothing to run it; ~0.4 s per call on the reference machine
CONTROL_SUM = 40_000_000


@register_benchmark("frames", "face-crop extraction of synthetic 640x360 clips (decode, YuNet, crop, PNG): frames/s, "
                              "1 vs 2 worker processes")
def bench_frames(smoke: bool) -> dict:
    """Sampled frames and crops per second of :func:`core.data.frames.extract_items` with ``workers=1`` (in this
    process, OpenCV's default threads) and ``workers=2`` (two processes, one OpenCV thread each), round-robin, each
    run into a fresh folder; and a rerun into a finished folder (every item's record is re-read, nothing is written).
    A control in the same rounds, a CPU loop (``sum(range(n))``) run twice in one process and once in each of two
    (warm) processes, says how much two processes can gain on the machine at that time (a shared VM's second core is not
    always free).

    The clips are synthetic (benchmark faceswap test faces moving over a background, :mod:`core.data.synthetic_video`),
    half real, half fake, 32 frames sampled per video as DeepfakeBench does, crops saved at 256 px.
    Smoke: two 1 s, 10 fps, 320x180 clips, 4 frames per video, one round."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import cv2

    from core.data.datasets import LABEL_NAMES, resolve_dataset
    from core.data.frames import Item, extract_items
    from core.data.synthetic_video import ClipConfig, write_video_dataset

    if smoke:
        clip, per_label, frames_per_video, size, repeats = ClipConfig(seconds=1, fps=10, width=320, height=180,
                                                                      face_side=110), 1, 4, 64, 1
    else:
        clip, per_label, frames_per_video, size, repeats = ClipConfig(seconds=8, fps=25, width=640, height=360), 12, 32, 256, 3
    samples = resolve_dataset("synthetic:faceswap").split("test")
    control = ("control: CPU loop x2, 1 process", "control: CPU loop x2, 2 processes")
    timings = {name: [] for name in [*(f"workers {w}" for w in WORKERS), "rerun, every item finished", *control]}
    loop = range(CONTROL_SUM // (20 if smoke else 1))
    cpu_seconds = {f"workers {w}": [] for w in WORKERS}  # this process and its finished children: where the time went
    summaries = {}
    with (tempfile.TemporaryDirectory(prefix="core-bench-frames-") as scratch,
          ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as control_pool):
        list(control_pool.map(sum, [range(2), range(2)]))  # started and warm: the control times the work, not the start
        started = time.perf_counter()
        clips = write_video_dataset(Path(scratch) / "clips", samples, per_label, config=clip, progress=False)
        render_s = time.perf_counter() - started
        items = [Item(c["path"], c["label"], c["source"], f"{LABEL_NAMES[c['label']]}/{Path(c['path']).stem}",
                      Path(c["path"]).stem, "train") for c in clips]
        source = {"layout": "bench", "clips": len(clips)}
        for round_index in range(repeats):
            for workers in WORKERS:
                out = Path(scratch) / f"crops-{round_index}-{workers}"
                cpu, started = _cpu_seconds(), time.perf_counter()
                summaries[workers] = extract_items(items, out, source=source, frames_per_video=frames_per_video, size=size,
                                                   workers=workers, progress=False)
                timings[f"workers {workers}"].append(time.perf_counter() - started)
                cpu_seconds[f"workers {workers}"].append(_cpu_seconds() - cpu)
            started = time.perf_counter()
            rerun = extract_items(items, out, source=source, frames_per_video=frames_per_video, size=size, progress=False)
            timings["rerun, every item finished"].append(time.perf_counter() - started)
            assert rerun["frames_written"] == 0 and rerun["items_resumed"] == len(items)
            started = time.perf_counter()
            sum(loop), sum(loop)
            timings[control[0]].append(time.perf_counter() - started)
            started = time.perf_counter()
            list(control_pool.map(sum, [loop, loop]))
            timings[control[1]].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    sampled, crops = summaries[1]["frames_sampled"], summaries[1]["crops"]
    assert all(s["crops"] == crops and s["frames_sampled"] == sampled for s in summaries.values()), "same dataset"
    rates = {f"workers {w}": {"sampled_frames_per_s": round(sampled / medians[f"workers {w}"], 2),
                              "crops_per_s": round(crops / medians[f"workers {w}"], 2),
                              "videos_per_s": round(len(items) / medians[f"workers {w}"], 3)} for w in WORKERS}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_seconds.items()}
    speedup = medians["workers 1"] / medians["workers 2"]
    machine_speedup = medians[control[0]] / medians[control[1]]
    ratios = {"workers 2 / workers 1 speed-up": speedup,
              "control: CPU loop, 2 processes / 1 speed-up": machine_speedup,
              "extraction speed-up / control speed-up": speedup / machine_speedup,
              "workers 2 / workers 1 CPU seconds": cpu_medians["workers 2"] / cpu_medians["workers 1"],
              "workers 1: cores busy (CPU seconds / wall seconds)": cpu_medians["workers 1"] / medians["workers 1"],
              "workers 2: cores busy (CPU seconds / wall seconds)": cpu_medians["workers 2"] / medians["workers 2"],
              "rerun of a finished extraction / workers 1 run": medians["rerun, every item finished"] / medians["workers 1"]}
    busy = ratios["workers 2: cores busy (CPU seconds / wall seconds)"]
    summary = (f"frames: {len(items)} synthetic {clip.width}x{clip.height} clips of {clip.frames} frames, {frames_per_video} "
               f"sampled per video: workers 1 {rates['workers 1']['sampled_frames_per_s']:.1f} sampled frames/s "
               f"({rates['workers 1']['crops_per_s']:.1f} crops/s), workers 2 {rates['workers 2']['sampled_frames_per_s']:.1f} "
               f"({rates['workers 2']['crops_per_s']:.1f} crops/s): {speedup:.2f}x, cores busy "
               f"{ratios['workers 1: cores busy (CPU seconds / wall seconds)']:.2f} -> {busy:.2f} (target >= {WORKERS_CORES_TARGET:g}), "
               f"where a pure CPU loop gained {machine_speedup:.2f}x from 2 processes; a rerun into the finished folder "
               f"{medians['rerun, every item finished']:.2f} s")
    config = {"clip": clip.__dict__, "clips": len(items), "clips_per_label": per_label, "frames_per_video": frames_per_video,
              "crop_size": size, "repeats": repeats, "workers": list(WORKERS), "detector": "auto (YuNet when installed)",
              "opencv_threads_in_process": cv2.getNumThreads(), "clip_render_and_encode_s": round(render_s, 2),
              "sampled_frames": sampled, "crops": crops,
              "control": f"sum(range({len(loop):_}))"}
    return {"config": config, "raw_s": {k: [round(v, 4) for v in vs] for k, vs in timings.items()},
            "median_s": {k: round(v, 4) for k, v in medians.items()},
            "cpu_s": {k: [round(v, 3) for v in vs] for k, vs in cpu_seconds.items()},
            "median_cpu_s": {k: round(v, 3) for k, v in cpu_medians.items()}, "rates": rates, "ratios": ratios,
            "targets": {"workers 2: cores busy": target(busy, WORKERS_CORES_TARGET)}, "summary": summary}


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended (a pool's, once shut down)."""
    import resource

    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
