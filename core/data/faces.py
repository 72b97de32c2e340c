"""Face detection and cropping: PIL image in, face boxes ``(x, y, w, h)`` in full-resolution pixels out.

Detection uses OpenCV's bundled frontal-face Haar cascade (shipped in
opencv-python-headless 4.x under ``cv2.data``; OpenCV 5 drops it). It is fast on a
CPU and needs no model download. It runs on a grey copy rescaled so its longest
side is between :data:`DETECTION_MIN_SIDE` and :data:`DETECTION_MAX_SIDE`: a 12 MP
photo is searched in a few milliseconds, and a 64 px benchmark image is enlarged
so that its face is well above the cascade's 24 px window.

The detectors were trained on whole frames in which the face fills about half the
width, so :func:`crop_face` keeps a generous margin around the detected face and
falls back to the centred square of the image when no face is found.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the full-resolution image

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 320  # a face smaller than 1/13 of the image side is not what a deepfake check is about
DETECTION_MIN_SIDE = 128  # doubles a 64 px image: the cascade finds twice as many of the benchmark's faces
HAAR_SCALE_FACTOR = 1.1  # pyramid step between window sizes
HAAR_MIN_NEIGHBORS = 5  # overlapping hits needed to accept a face; fewer gives false faces in textured backgrounds
HAAR_MIN_FACE = 24  # the cascade's own window, in detection-copy pixels
FACE_MARGIN = 0.4  # added on every side, as a fraction of the face's longer side: crop side = 1.8 x face


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
    """Factor from full resolution to the detection copy (longest side clamped to [MIN_SIDE, MAX_SIDE])."""
    longest = max(size)
    return min(DETECTION_MAX_SIDE, max(DETECTION_MIN_SIDE, longest)) / longest


def detect_faces(image: Image.Image, scale_factor: float = HAAR_SCALE_FACTOR, min_neighbors: int = HAAR_MIN_NEIGHBORS) -> list[Box]:
    """Frontal faces in ``image``, largest first, as ``(x, y, w, h)`` in the image's own pixels.

    ``scale_factor`` and ``min_neighbors`` are the cascade's: larger values find fewer false faces (and fewer faces).
    """
    scale = detection_scale(image.size)
    small_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # BILINEAR on the grey copy: LANCZOS costs ~10x more on a large photo and the cascade does not need it
    grey = np.asarray(image.convert("L").resize(small_size, Image.Resampling.BILINEAR))
    found = face_cascade().detectMultiScale(
        grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE))
    boxes = [scale_box(tuple(int(v) for v in box), 1 / scale, image.size) for box in found]
    return sorted(boxes, key=lambda box: box[2] * box[3], reverse=True)


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


def crop_face(image: Image.Image, margin: float = FACE_MARGIN) -> tuple[Image.Image, Box | None]:
    """``(square crop around the largest face, that face's box)``, or ``(centre square, None)`` when no face is found."""
    faces = detect_faces(image)
    if not faces:
        return crop_box(image, centre_square(image.size)), None
    return crop_box(image, square_around(faces[0], image.size, margin)), faces[0]


def draw_boxes(image: Image.Image, boxes: list[Box], colour: str = "#00e676") -> Image.Image:
    """A copy of ``image`` with ``boxes`` outlined (line width grows with the image)."""
    drawn = image.convert("RGB")  # always a copy
    width = max(1, round(max(image.size) / 200))
    draw = ImageDraw.Draw(drawn)
    for x, y, w, h in boxes:
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=width)
    return drawn
