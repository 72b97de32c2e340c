"""Face detectors side by side: YuNet (the default) against OpenCV's Haar cascade (:mod:`core.data.faces`).

Both detectors, at the library's defaults (:func:`core.data.faces.face_detector`), take turns on every image in one
process (round-robin, the order alternating per image), with OpenCV and torch at :data:`THREADS` threads. Offline
data only, all deterministic:

- **recall** (share of images whose true face is found): ``skimage.data.astronaut()``; ``lfw_subset``'s 100 faces
  enlarged to 100 px (RGB), and the same faces at 50 px pasted into 640x480 clutter; four 640x360 clips of the
  astronaut's head over a panning clutter background, with the true face box known per frame (moving; scaled 0.6-1.4;
  rotated -20 to +20 degrees; darker, gamma 2.2 and brightness x0.35 in turn); the embedded benchmark's first 200
  faceswap test images (64 px, half real, half fake), rendered exactly as ``data synth`` writes them.
- **false positives** (share of face-free images with any box): 640x480 clutter frames, lfw's 100 non-faces (100 px),
  ``coffee()`` and ``chelsea()`` (a cat).
- **latency**: milliseconds per 640x480 frame with the astronaut's head pasted (a ~100x125 px face: YuNet's coarse
  pass finds it) and with a small one (~35x44 px: YuNet needs its fine pass), and the YuNet / Haar ratio.

A face counts as found when a box overlaps the true face (IoU >= :data:`IOU_HIT`, or each box holds the other's
centre); on lfw's enlarged crops when a box holds the face centre and is at most 9x the face's area; on the
embedded benchmark (whose images are a face and its surroundings) when there is any box at all.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench import register_benchmark, target
from core.data.faces import iou

DETECTOR_NAMES = ("yunet", "haar")
THREADS = 2  # cv2 and torch, set for the run and restored after it
IOU_HIT = 0.3
CENTRE_MAX_AREA = 9  # lfw crops: a box holding the face centre counts unless it is this many times the face's area
CLIP_KINDS = ("moving", "scaled", "rotated", "darker")
CLIP_SIZE = (640, 360)
FRAME_SIZE = (640, 480)
SMALL_FACE_SCALE = 0.35  # the astronaut's head at this scale: a ~35x44 px face in a 640x480 frame

ASTRONAUT_FACE = (175, 55, 100, 125)  # forehead to chin, in skimage.data.astronaut() pixels
ASTRONAUT_HEAD = (222, 108, 85, 100)  # centre x, y and half-axes of the head ellipse that is pasted

CLIP_RECALL_TARGET = 0.95  # YuNet over the four astronaut clips together
CROP_LATENCY_TARGET_MS = 10.0  # YuNet on a 640x480 frame with a face (the crop before a prediction), 2 threads


def _clutter(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A face-free cluttered RGB frame: three octaves of colour noise, random boxes, discs and lines, grain."""
    import cv2

    image = sum(cv2.resize(rng.random((octave, max(2, octave * width // height), 3), dtype=np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC) for octave in (4, 12, 40)) * (255 / 3)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y, kind = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(10, width // 3)), y + int(rng.integers(10, height // 3))), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), int(rng.integers(5, height // 5)), colour, -1)
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, width)), int(rng.integers(0, height))), colour, int(rng.integers(1, 6)))
    image = cv2.GaussianBlur(image, (3, 3), 0).astype(np.float32) + rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _paste_head(canvas: np.ndarray, centre: tuple[float, float], scale: float = 1.0, angle: float = 0.0):
    """``canvas`` with the astronaut's head (feathered ellipse) centred at ``centre``, scaled and rotated, and the true
    face box: the scaled face's size around the transformed face centre."""
    import cv2
    import skimage.data

    cx, cy, ax, ay = ASTRONAUT_HEAD
    x0, y0 = cx - ax - 10, max(0, cy - ay - 10)
    patch = skimage.data.astronaut()[y0:cy + ay + 10, x0:cx + ax + 10]
    mask = np.zeros(patch.shape[:2], np.float32)
    cv2.ellipse(mask, (cx - x0, cy - y0), (ax, ay), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (21, 21), 0)
    matrix = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), angle, scale)
    matrix[:, 2] += (centre[0] - patch.shape[1] / 2, centre[1] - patch.shape[0] / 2)
    size = (canvas.shape[1], canvas.shape[0])
    alpha = cv2.warpAffine(mask, matrix, size)[..., None]
    frame = canvas * (1 - alpha) + cv2.warpAffine(patch, matrix, size).astype(np.float32) * alpha
    fx, fy, fw, fh = ASTRONAUT_FACE
    face_x, face_y = matrix @ np.array([fx - x0 + fw / 2, fy - y0 + fh / 2, 1.0])
    box = (face_x - fw * scale / 2, face_y - fh * scale / 2, fw * scale, fh * scale)
    return frame.astype(np.uint8), box


def _clip(kind: str, frames: int, seed: int) -> list[tuple[np.ndarray, tuple]]:
    """``frames`` 640x360 frames of the astronaut's head moving over a panning background, varying one thing."""
    rng = np.random.default_rng(seed)
    width, height = CLIP_SIZE
    background = _clutter(rng, width + 40, height + 40)
    phase = rng.uniform(0, 2 * np.pi, 2)
    out = []
    for t in range(frames):
        u = t / max(1, frames - 1)  # 0 -> 1 over the clip: ramps reach both ends even in a 4-frame smoke clip
        pan_x, pan_y = int(20 + 20 * np.sin(7 * u)), int(20 + 20 * np.cos(5 * u))
        canvas = background[pan_y:pan_y + height, pan_x:pan_x + width].astype(np.float32)
        scale = 0.6 + 0.8 * u if kind == "scaled" else 1.0
        angle = -20 + 40 * u if kind == "rotated" else 0.0
        cx = width / 2 + (width / 2 - 110 * scale) * np.sin(2 * np.pi * u + phase[0])
        cy = height / 2 + max(0.0, height / 2 - 120 * scale) * np.sin(4 * np.pi * u + phase[1])
        frame, box = _paste_head(canvas, (cx, cy), scale, angle)
        frame = frame.astype(np.float32)
        if kind == "darker":
            frame = 255 * (frame / 255) ** 2.2 if t % 2 == 0 else frame * 0.35
        frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        out.append((frame, box))
    return out


def _lfw_rgb(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    grey = cv2.resize((image * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    return np.repeat(grey[..., None], 3, axis=2)


def _datasets(smoke: bool) -> tuple[dict[str, list], dict[str, list]]:
    """(recall sets: name -> [(RGB image, true box or None, rule)], false-positive sets: name -> [RGB image])."""
    import skimage.data

    from core.data.synthetic import SOURCES, SPLITS, SynthConfig, render_image

    lfw_count, clip_frames, synthetic_count, clutter_count = (4, 4, 10, 4) if smoke else (100, 100, 200, 100)
    lfw = skimage.data.lfw_subset()
    rng = np.random.default_rng(1)
    small = []
    for index in range(lfw_count):
        frame = _clutter(rng, *FRAME_SIZE)
        x, y = int(rng.integers(0, FRAME_SIZE[0] - 50)), int(rng.integers(0, FRAME_SIZE[1] - 50))
        frame[y:y + 50, x:x + 50] = _lfw_rgb(lfw[index], 50)
        small.append((frame, (x, y, 50, 50), "centre"))
    recall = {
        "astronaut photo": [(skimage.data.astronaut(), ASTRONAUT_FACE, "iou")],
        "LFW faces 100 px": [(_lfw_rgb(lfw[i], 100), (0, 0, 100, 100), "centre") for i in range(lfw_count)],
        "LFW faces 50 px in 640x480": small,
    }
    for seed, kind in enumerate(CLIP_KINDS, start=2):
        recall[f"clip {kind}"] = [(frame, box, "iou") for frame, box in _clip(kind, clip_frames, seed)]
    config, source = SynthConfig(image_size=64), "faceswap"  # the images `data synth` writes to faceswap/test/
    recall["embedded benchmark 64 px"] = [
        (render_image(config, source, index % 2, np.random.default_rng(np.random.SeedSequence(
            [config.seed, SOURCES.index(source), SPLITS.index("test"), index]))), None, "any")
        for index in range(synthetic_count)]
    rng = np.random.default_rng(3)
    negatives = {
        "clutter 640x480": [_clutter(rng, *FRAME_SIZE) for _ in range(clutter_count)],
        "LFW non-faces 100 px": [_lfw_rgb(lfw[100 + i], 100) for i in range(lfw_count)],
        "photos (coffee, chelsea)": [skimage.data.coffee(), skimage.data.chelsea()],
    }
    return recall, negatives


def _hit(boxes: list[tuple], truth: tuple | None, rule: str) -> bool:
    if rule == "any":
        return bool(boxes)
    tx, ty, tw, th = truth
    centre = (tx + tw / 2, ty + th / 2)

    def holds(box, point) -> bool:
        return box[0] <= point[0] <= box[0] + box[2] and box[1] <= point[1] <= box[1] + box[3]

    for box in boxes:
        x, y, w, h = box
        if rule == "centre":
            if holds(box, centre) and w * h <= CENTRE_MAX_AREA * tw * th:
                return True
            continue
        if iou(box, truth) >= IOU_HIT or (holds(box, centre) and holds(truth, (x + w / 2, y + h / 2))):
            return True
    return False


def _round_robin(detectors: dict, images: list[np.ndarray], repeats: int = 1) -> tuple[dict, dict]:
    """(faces per detector per image of the last repeat, seconds per detector per call): the detectors take turns on
    every image, the first one alternating."""
    from PIL import Image

    faces = {name: [] for name in detectors}
    seconds = {name: [] for name in detectors}
    turn = 0
    for repeat in range(repeats):
        for image in images:
            pil = Image.fromarray(image)
            order = list(detectors) if turn % 2 == 0 else list(reversed(detectors))
            turn += 1
            for name in order:
                started = time.perf_counter()
                found = detectors[name](pil)
                seconds[name].append(time.perf_counter() - started)
                if repeat == repeats - 1:
                    faces[name].append(found)
    return faces, seconds


@register_benchmark("faces", "face detectors side by side: YuNet vs Haar, recall and latency on real photographs, clips and "
                             "the embedded benchmark")
def bench_faces(smoke: bool) -> dict:
    import cv2
    import torch

    from core.data import faces as face_module

    previous = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(THREADS)
    torch.set_num_threads(THREADS)
    try:
        detectors = {name: face_module.face_detector(name) for name in DETECTOR_NAMES}
        started = time.perf_counter()
        recall_sets, negative_sets = _datasets(smoke)
        latency_count, repeats = (2, 2) if smoke else (20, 3)
        rng = np.random.default_rng(4)
        latency_sets = {}
        for label, scale in (("face 640x480", 1.0), ("small face 640x480", SMALL_FACE_SCALE)):
            latency_sets[label] = [_paste_head(_clutter(rng, *FRAME_SIZE).astype(np.float32),
                                               (float(rng.uniform(150, 490)), float(rng.uniform(140, 340))), scale)
                                   for _ in range(latency_count)]
        data_s = time.perf_counter() - started
        _round_robin(detectors, [latency_sets["face 640x480"][0][0]])  # warm-up: model load, first allocations

        recall, found, set_ms, confidences, haar_confidences = {}, {}, {}, [], set()
        for name, samples in {**recall_sets, **latency_sets}.items():
            boxes, seconds = _round_robin(detectors, [sample[0] for sample in samples])
            hits = {d: [_hit([f.box for f in boxes[d][i]], sample[1], sample[2] if len(sample) == 3 else "iou")
                        for i, sample in enumerate(samples)] for d in detectors}
            confidences += [f.confidence for i, faces in enumerate(boxes["yunet"]) if hits["yunet"][i] for f in faces[:1]]
            haar_confidences |= {f.confidence for faces in boxes["haar"] for f in faces}
            found[name] = {"n": len(samples), **{d: sum(h) for d, h in hits.items()}}
            recall[name] = {d: round(sum(h) / len(samples), 4) for d, h in hits.items()}
            set_ms[name] = {d: round(1000 * statistics.median(s), 3) for d, s in seconds.items()}
            if name in latency_sets:
                del recall[name]  # their hits stay in `found`: the timed frames' faces were found
        false_positives = {}
        for name, images in negative_sets.items():
            boxes, seconds = _round_robin(detectors, images)
            false_positives[name] = {d: round(sum(bool(b) for b in boxes[d]) / len(images), 4) for d in detectors}
            found[name] = {"n": len(images), **{d: sum(bool(b) for b in boxes[d]) for d in detectors}}
            set_ms[name] = {d: round(1000 * statistics.median(s), 3) for d, s in seconds.items()}
        _, raw = zip(*(_round_robin(detectors, [frame for frame, _ in frames], repeats) for frames in latency_sets.values()),
                     strict=True)
        raw_s = {label: {d: [round(s, 6) for s in timing[d]] for d in detectors} for label, timing in zip(latency_sets, raw, strict=True)}
    finally:
        cv2.setNumThreads(previous[0])
        torch.set_num_threads(previous[1])

    median_ms = {label: {d: round(1000 * statistics.median(times), 3) for d, times in timing.items()} for label, timing in raw_s.items()}
    ratios = {f"{label}: yunet / haar": round(ms["yunet"] / ms["haar"], 3) for label, ms in median_ms.items()}
    clip_sets = [f"clip {kind}" for kind in CLIP_KINDS]
    clips = {d: round(sum(found[s][d] for s in clip_sets) / sum(found[s]["n"] for s in clip_sets), 4) for d in DETECTOR_NAMES}
    table = ([{"detector": d, "set": s, "measure": "recall", "n": found[s]["n"], "value": r[d]}
              for s, r in recall.items() for d in DETECTOR_NAMES]
             + [{"detector": d, "set": s, "measure": "false positives", "n": found[s]["n"], "value": r[d]}
                for s, r in false_positives.items() for d in DETECTOR_NAMES]
             + [{"detector": d, "set": s, "measure": "median ms", "n": len(raw_s[s][d]), "value": ms[d]}
                for s, ms in median_ms.items() for d in DETECTOR_NAMES])
    clutter = false_positives["clutter 640x480"]
    summary = (f"faces: YuNet vs Haar recall, astronaut clips {clips['yunet']:.2f} vs {clips['haar']:.2f} (rotated "
               f"{recall['clip rotated']['yunet']:.2f} vs {recall['clip rotated']['haar']:.2f}), LFW 50 px in 640x480 "
               f"{recall['LFW faces 50 px in 640x480']['yunet']:.2f} vs {recall['LFW faces 50 px in 640x480']['haar']:.2f}, "
               f"embedded benchmark {recall['embedded benchmark 64 px']['yunet']:.2f} vs "
               f"{recall['embedded benchmark 64 px']['haar']:.2f}; false faces on clutter {clutter['yunet']:.2f} vs "
               f"{clutter['haar']:.2f}; 640x480 frame {median_ms['face 640x480']['yunet']:.1f} vs "
               f"{median_ms['face 640x480']['haar']:.1f} ms (x{ratios['face 640x480: yunet / haar']:.2f}), small face "
               f"{median_ms['small face 640x480']['yunet']:.1f} vs {median_ms['small face 640x480']['haar']:.1f} ms "
               f"(x{ratios['small face 640x480: yunet / haar']:.2f}); {THREADS} threads")
    yunet, haar = detectors["yunet"], detectors["haar"]
    return {
        "config": {"detectors": {"yunet": {"score_threshold": yunet.score_threshold, "coarse_side": yunet.coarse_side,
                                           "max_side": yunet.max_side, "min_side": yunet.min_side,
                                           "model": face_module.YUNET_FILE, "sha256": face_module.YUNET_SHA256},
                                 "haar": {"scale_factor": haar.scale_factor, "min_neighbors": haar.min_neighbors,
                                          "min_face": face_module.HAAR_MIN_FACE, "max_side": face_module.DETECTION_MAX_SIDE,
                                          "min_side": face_module.DETECTION_MIN_SIDE}},
                   "threads": {"cv2": THREADS, "torch": THREADS}, "iou_hit": IOU_HIT, "centre_max_area": CENTRE_MAX_AREA,
                   "images": {name: value["n"] for name, value in found.items()}, "latency_repeats": repeats,
                   "clip_size": list(CLIP_SIZE), "small_face_scale": SMALL_FACE_SCALE, "data_seconds": round(data_s, 1)},
        "recall": recall, "false_positives": false_positives, "found": found,
        "recall_astronaut_clips": clips,
        "confidence": {"yunet": {"median": round(statistics.median(confidences), 4), "min": round(min(confidences), 4)}
                       if confidences else None, "haar": None if haar_confidences == {None} else sorted(map(repr, haar_confidences))},
        "raw_s": raw_s, "median_ms": median_ms, "median_ms_per_set": set_ms, "ratios": ratios, "table": table,
        "targets": {"yunet recall, astronaut clips": target(clips["yunet"], CLIP_RECALL_TARGET),
                    "yunet ms, 640x480 frame with a face": target(median_ms["face 640x480"]["yunet"], CROP_LATENCY_TARGET_MS,
                                                                  higher_is_better=False)},
        "summary": summary,
    }
