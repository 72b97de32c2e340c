"""The embedded synthetic deepfake benchmark.

Real deepfake datasets cannot be downloaded on the project's machines, so the
toolkit renders its own: procedurally drawn face-like images ("real") and the same
kind of faces passed through the artefacts that real generators leave ("fake").
Five *sources* each carry one dominant signature, and a share of every source's
fakes carries a weak secondary signature of another source, so that detectors
transfer across sources partly but not perfectly.

Everything is deterministic from ``seed``: each image draws from its own
``numpy.random.SeedSequence([seed, source, split, index])``, so the result does not
depend on the number of worker processes. The tree is the ImageFolder layout of
real data, ``root/<source>/{train,val,test}/{real,fake}/*.png``, with a
``manifest.json`` at the root that says how it was made.

Signatures (see README, "The embedded benchmark"):

- ``upconv``: the image is rendered at half size and upsampled by a transposed
  convolution whose four phase kernels have unequal gains: a period-2
  checkerboard (spectral peaks at Nyquist) and lost fine detail.
- ``faceswap``: the inner face is replaced by a donor face of another identity and
  skin tone, slightly resampled and pasted through a feathered mask: a blending
  boundary, ghosted features and a colour mismatch inside the face.
- ``gan``: over-smoothed, plastic skin (the 1/f skin texture and the sensor noise
  are filtered away inside the face) plus a faint periodic high-frequency
  fingerprint and a saturation shift.
- ``warp``: the face region is zoomed and resampled through a smooth random
  displacement field with bilinear interpolation, then re-sharpened: resampling
  traces, halos and amplified noise.
- ``jpeg2``: the image is JPEG-compressed at low quality, shifted so the 8x8 block
  grids do not align, then compressed again like every other image: double-JPEG
  blocking traces.

The difficulty knob (0 = easy, 1 = hard) makes artefacts weaker (more fakes near
zero strength), the final JPEG harsher and the sensor noise stronger.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from core.io import data_dir

SOURCES: tuple[str, ...] = ("upconv", "faceswap", "gan", "warp", "jpeg2")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
CLASSES: tuple[str, ...] = ("real", "fake")
GENERATOR_VERSION = 5
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the pixels of the benchmark."""

    image_size: int = 64
    per_source: int = 2400  # images per source over all splits, half real, half fake
    seed: int = 0
    difficulty: float = 0.5
    secondary_probability: float = 0.35  # share of fakes with a weak second signature
    secondary_strength: float = 0.35  # its strength relative to the dominant one
    sources: tuple[str, ...] = SOURCES
    version: int = GENERATOR_VERSION

    def split_sizes(self) -> dict[str, int]:
        """Images per split for one source (even numbers, so classes balance)."""
        return {s: 2 * round(self.per_source * f / 2) for s, f in SPLIT_FRACTIONS.items()}


# ----------------------------------------------------------------------------
# Small image operations on float arrays in [0, 1], shape (H, W, 3).


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")  # (yy, xx)


def _pink_noise(rng: np.random.Generator, size: int, beta: float, channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f^beta amplitude spectrum (natural-image-like)."""
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    radius[0, 0] = 1.0
    amplitude = radius ** (-beta)
    amplitude[0, 0] = 0.0
    white = rng.standard_normal((channels, size, size))
    field = np.fft.ifft2(np.fft.fft2(white) * amplitude).real
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
    return np.moveaxis(field, 0, -1).astype(np.float32)


def _soft_ellipse(yy, xx, cy, cx, ry, rx, angle=0.0, edge=0.8) -> np.ndarray:
    """Anti-aliased ellipse mask in [0, 1]; ``edge`` is the transition width in pixels."""
    cos, sin = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * cos + dy * sin) / rx
    v = (-dx * sin + dy * cos) / ry
    radius = np.sqrt(u * u + v * v)
    # distance to the boundary in pixels, approximately
    distance = (1.0 - radius) * min(rx, ry)
    return np.clip(distance / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    return image * (1 - mask[..., None]) + mask[..., None] * np.asarray(colour, np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflect padding."""
    if sigma <= 0:
        return image
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[i : i + image.shape[0]] for i, k in enumerate(kernel))
    return sum(k * rows[:, i : i + image.shape[1]] for i, k in enumerate(kernel)).astype(np.float32)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _bilinear_sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``image`` at fractional pixel coordinates (pixel centres at integers)."""
    h, w = image.shape[:2]
    ys = np.clip(ys, 0, h - 1.001)
    xs = np.clip(xs, 0, w - 1.001)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _resize_bilinear(image: np.ndarray, out_size: int) -> np.ndarray:
    h = image.shape[0]
    centres = (np.arange(out_size, dtype=np.float32) + 0.5) * h / out_size - 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return _bilinear_sample(image, ys, xs)


# ----------------------------------------------------------------------------
# The face renderer.

SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.91, 0.71, 0.58], [0.80, 0.60, 0.46], [0.66, 0.47, 0.34],
     [0.50, 0.35, 0.25], [0.36, 0.25, 0.18], [0.93, 0.76, 0.62]],
    dtype=np.float32,
)
IRIS_COLOURS = np.array([[0.35, 0.22, 0.12], [0.25, 0.40, 0.60], [0.30, 0.45, 0.25], [0.15, 0.10, 0.08]], np.float32)
HAIR_COLOURS = np.array([[0.10, 0.07, 0.05], [0.35, 0.22, 0.12], [0.75, 0.60, 0.35], [0.45, 0.20, 0.10], [0.55, 0.55, 0.55]], np.float32)


def _face_params(rng: np.random.Generator, size: int) -> dict:
    """Random geometry, identity and lighting of one face."""
    return {
        "cy": size * (0.52 + rng.uniform(-0.05, 0.05)),
        "cx": size * (0.50 + rng.uniform(-0.06, 0.06)),
        "ry": size * rng.uniform(0.30, 0.38),
        "rx": size * rng.uniform(0.22, 0.28),
        "angle": rng.uniform(-0.25, 0.25),
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.08, 3).astype(np.float32),
        "iris": IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        "light": np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.3), 1.0], np.float32),
        "ambient": rng.uniform(0.35, 0.55),
        "texture_beta": rng.uniform(1.0, 1.6),
        "texture_amount": rng.uniform(0.03, 0.07),
        "eye_dy": rng.uniform(-0.22, -0.10),
        "eye_dx": rng.uniform(0.32, 0.42),
        "mouth_dy": rng.uniform(0.38, 0.52),
        "mouth_w": rng.uniform(0.28, 0.42),
        "hairline": rng.uniform(0.45, 0.75),
        "lips": np.array([0.65, 0.28, 0.28], np.float32) * rng.uniform(0.8, 1.1),
    }


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Clutter: coloured 1/f noise plus a few soft blobs and bars."""
    grey = rng.uniform(0.2, 0.8)
    base = (grey + rng.uniform(-0.15, 0.15, 3)).astype(np.float32)
    # mostly luminance clutter with a little chroma, as in indoor/outdoor photos
    noise = _pink_noise(rng, size, beta=rng.uniform(1.6, 2.2), channels=4)
    image = base + 0.12 * noise[..., :1] + 0.04 * noise[..., 1:]
    yy, xx = _grid(size)
    for _ in range(rng.integers(3, 7)):
        colour = np.clip(rng.uniform(0.1, 0.9) + rng.uniform(-0.2, 0.2, 3), 0, 1)
        if rng.random() < 0.5:
            mask = _soft_ellipse(yy, xx, rng.uniform(0, size), rng.uniform(0, size),
                                 rng.uniform(3, size / 3), rng.uniform(3, size / 3), rng.uniform(0, np.pi), edge=2.0)
        else:
            y0, x0 = rng.uniform(0, size, 2)
            mask = ((yy > y0) & (yy < y0 + rng.uniform(4, size / 2)) & (xx > x0) & (xx < x0 + rng.uniform(2, size / 4)))
            mask = mask.astype(np.float32)
        image = _paint(image, mask * rng.uniform(0.4, 0.9), colour)
    return np.clip(image, 0, 1)


def _render_face(rng: np.random.Generator, size: int, p: dict, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw one shaded, textured face over ``background``; return (image, face mask)."""
    yy, xx = _grid(size)
    cy, cx, ry, rx, angle = p["cy"], p["cx"], p["ry"], p["rx"], p["angle"]
    cos, sin = np.cos(angle), np.sin(angle)
    # face-local coordinates: u across, v down, in units of the radii
    u = ((xx - cx) * cos + (yy - cy) * sin) / rx
    v = (-(xx - cx) * sin + (yy - cy) * cos) / ry

    face_mask = _soft_ellipse(yy, xx, cy, cx, ry, rx, angle, edge=1.0)
    # Lambertian shading of an ellipsoid: n = (u, v, sqrt(1 - u^2 - v^2))
    z = np.sqrt(np.clip(1 - u * u - v * v, 0.0, 1.0))
    normal = np.stack([u, v, z], -1) / np.sqrt(u * u + v * v + z * z + 1e-6)[..., None]
    light = p["light"] / np.linalg.norm(p["light"])
    diffuse = np.clip(normal @ light, 0.0, 1.0)
    shading = p["ambient"] + (1 - p["ambient"]) * diffuse
    texture = 1 + p["texture_amount"] * _pink_noise(rng, size, beta=p["texture_beta"])[..., 0]
    skin = p["skin"][None, None, :] * (shading * texture)[..., None]

    image = background * (1 - face_mask[..., None]) + skin * face_mask[..., None]

    # hair: the top of a slightly larger ellipse
    hair_mask = _soft_ellipse(yy, xx, cy - 0.06 * ry, cx, ry * 1.08, rx * 1.12, angle, edge=1.0)
    hair_mask *= np.clip((-v - p["hairline"]) * ry / 1.5 + 0.5, 0, 1)
    hair_texture = 1 + 0.15 * _pink_noise(rng, size, beta=0.8)[..., 0]
    hair = p["hair"][None, None, :] * (0.6 + 0.4 * shading * hair_texture)[..., None]
    image = image * (1 - hair_mask[..., None]) + hair * hair_mask[..., None]

    def at(du: float, dv: float) -> tuple[float, float]:
        """Image coordinates (y, x) of a face-local point."""
        return cy + du * rx * sin + dv * ry * cos, cx + du * rx * cos - dv * ry * sin

    for side in (-1, 1):
        ey, ex = at(side * p["eye_dx"], p["eye_dy"])
        brow_y, brow_x = at(side * p["eye_dx"], p["eye_dy"] - 0.16)
        brow = _soft_ellipse(yy, xx, brow_y, brow_x, 0.04 * ry + 0.4, 0.22 * rx, angle)
        image = _paint(image, brow * 0.8, p["hair"] * 0.8)
        sclera = _soft_ellipse(yy, xx, ey, ex, 0.075 * ry + 0.3, 0.2 * rx, angle)
        image = _paint(image, sclera, (0.92, 0.9, 0.88))
        iris = _soft_ellipse(yy, xx, ey, ex + side * rng.uniform(-0.03, 0.03) * rx, 0.07 * ry + 0.2, 0.085 * rx)
        image = _paint(image, iris, p["iris"])
        pupil = _soft_ellipse(yy, xx, ey, ex, 0.03 * ry + 0.2, 0.035 * rx + 0.2)
        image = _paint(image, pupil, (0.03, 0.03, 0.03))

    ny, nx = at(0.0, 0.18)
    nose = _soft_ellipse(yy, xx, ny, nx, 0.16 * ry, 0.07 * rx, angle, edge=1.5)
    image = image * (1 - 0.25 * nose[..., None])
    my, mx = at(0.0, p["mouth_dy"])
    mouth = _soft_ellipse(yy, xx, my, mx, 0.05 * ry + 0.4, p["mouth_w"] * rx, angle)
    image = _paint(image, mouth, p["lips"] * (0.6 + 0.4 * p["ambient"]))
    return np.clip(image, 0, 1).astype(np.float32), face_mask


def _camera(rng: np.random.Generator, image: np.ndarray, difficulty: float) -> np.ndarray:
    """Optics and sensor: a little blur, then shot/read noise."""
    image = _blur(image, rng.uniform(0.3, 1.0))  # focus varies: blur alone must not mean "fake"
    sigma = rng.uniform(1.0, 2.0 + 4.0 * difficulty) / 255.0
    noise = rng.standard_normal(image.shape).astype(np.float32) * sigma
    return np.clip(image + noise * (0.5 + image), 0, 1)


# ----------------------------------------------------------------------------
# Generator signatures. Each takes the camera image and a strength in [0, 1].


def _upconv(rng, image, strength, face_mask, ctx):
    size = image.shape[0]
    half = image.reshape(size // 2, 2, size // 2, 2, 3).mean(axis=(1, 3))
    # 4x4 stride-2 transposed-conv kernel: bilinear, with unequal phase gains
    base = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]).astype(np.float32)
    kernel = base * (1 + strength * rng.uniform(0.25, 0.6) * rng.choice([-1, 1], (4, 4)))
    out = np.zeros((size + 2, size + 2, 3), np.float32)
    for i in range(4):
        for j in range(4):
            out[i : i + size : 2, j : j + size : 2] += kernel[i, j] * half
    out = np.clip(out[1 : 1 + size, 1 : 1 + size], 0, 1)
    blend = 0.3 + 0.7 * strength  # weak fakes keep some of the camera's detail
    return image * (1 - blend) + out * blend


def _faceswap(rng, image, strength, face_mask, ctx):
    p = ctx["params"]
    donor_params = _face_params(rng, image.shape[0])
    for key in ("cy", "cx", "ry", "rx", "angle", "light", "ambient"):
        donor_params[key] = p[key]  # aligned to the target's pose and lighting, another identity
    tone_shift = (0.3 + 0.7 * strength) * rng.normal(0, 0.15, 3).astype(np.float32)
    donor_params["skin"] = np.clip(donor_params["skin"] + tone_shift, 0.05, 1.0)
    donor, _ = _render_face(rng, image.shape[0], donor_params, ctx["background"])
    size = image.shape[0]
    scale = rng.uniform(0.7, 0.9)  # the swapper's crop is resampled
    donor = _resize_bilinear(_resize_bilinear(donor, max(8, int(size * scale))), size)
    yy, xx = _grid(size)
    inner = _soft_ellipse(yy, xx, p["cy"] + 0.08 * p["ry"], p["cx"], p["ry"] * 0.72, p["rx"] * 0.82, p["angle"], edge=1.0)
    inner = _blur(inner[..., None], rng.uniform(0.3, 1.0))
    alpha = inner * (0.7 + 0.3 * strength)
    return image * (1 - alpha) + donor * alpha


def _gan(rng, image, strength, face_mask, ctx):
    size = image.shape[0]
    smooth = _blur(image, 0.6 + 1.0 * strength)
    mask = np.clip(face_mask * (0.5 + 0.5 * strength) + 0.25 * strength, 0, 1)[..., None]
    out = image * (1 - mask) + smooth * mask
    yy, xx = _grid(size)
    period = rng.choice([3.0, 4.0, 5.0])
    theta = rng.uniform(0, np.pi)
    wave = np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    wave += np.cos(2 * np.pi * (xx * np.cos(theta + 1.2) + yy * np.sin(theta + 1.2)) / period)
    out = out + (0.012 + 0.02 * strength) * wave[..., None] * rng.uniform(0.5, 1.0, 3)
    grey = out.mean(-1, keepdims=True)
    out = grey + (out - grey) * (1 + 0.25 * strength)
    return np.clip(out, 0, 1)


def _warp(rng, image, strength, face_mask, ctx):
    size = image.shape[0]
    yy, xx = _grid(size)
    # reenactment-style geometry: a zoom and a smooth displacement field, bilinear resampling
    zoom = 1 + strength * rng.uniform(0.1, 0.25)
    displacement = (1.0 + 3.0 * strength) * _pink_noise(rng, size, beta=2.5, channels=2)
    centre = size / 2
    ys = centre + (yy - centre) / zoom - 0.5 + displacement[..., 0]
    xs = centre + (xx - centre) / zoom - 0.5 + displacement[..., 1]
    warped = _bilinear_sample(image, ys, xs)
    # the pipeline re-sharpens its output: halos and amplified noise, not smooth skin
    warped = warped + (1.5 + 2.0 * strength) * (warped - _blur(warped, 0.8))
    mask = _blur(face_mask[..., None], 1.0) * (0.6 + 0.4 * strength)
    return np.clip(image * (1 - mask) + warped * mask, 0, 1)


def _jpeg2(rng, image, strength, face_mask, ctx):
    quality = int(round(35 - 25 * strength + rng.uniform(-5, 5)))
    # compress on a grid shifted by (dy, dx), so its 8x8 blocks miss the final JPEG's grid
    shift = tuple(int(d) for d in rng.integers(1, 8, 2))
    first = np.roll(_jpeg(np.roll(image, shift, axis=(0, 1)), quality), (-shift[0], -shift[1]), axis=(0, 1))
    blend = 0.8 + 0.2 * strength  # a weak first compression stays weaker
    return image * (1 - blend) + first * blend


SIGNATURES: dict[str, Callable] = {
    "upconv": _upconv,
    "faceswap": _faceswap,
    "gan": _gan,
    "warp": _warp,
    "jpeg2": _jpeg2,
}


# ----------------------------------------------------------------------------
# One image and the whole benchmark.


def render_image(config: SynthConfig, source: str, label: int, rng: np.random.Generator) -> np.ndarray:
    """Render one real (label 0) or fake (label 1) image of ``source`` as uint8 RGB."""
    size = config.image_size
    background = _background(rng, size)
    params = _face_params(rng, size)
    face, face_mask = _render_face(rng, size, params, background)
    image = _camera(rng, face, config.difficulty)
    if label == 1:
        ctx = {"params": params, "background": background}
        # more fakes near zero strength as difficulty grows: s = u^(0.5 + 0.6 d)
        strength = float(rng.uniform() ** (0.5 + 0.6 * config.difficulty))
        image = SIGNATURES[source](rng, image, strength, face_mask, ctx)
        if rng.random() < config.secondary_probability:
            others = [s for s in SIGNATURES if s != source]
            other = others[rng.integers(len(others))]
            image = SIGNATURES[other](rng, image, strength * config.secondary_strength, face_mask, ctx)
    quality = int(rng.uniform(95 - 25 * config.difficulty, 98 - 8 * config.difficulty))
    return _to_uint8(_jpeg(image, quality))


def render_split_image(config: SynthConfig, source: str, split: str, index: int) -> tuple[np.ndarray, int]:
    """``(pixels, label)`` of image ``index`` of ``split`` of ``source``: exactly the file the benchmark holds (before
    its PNG encoding, which is lossless), without generating the benchmark."""
    label = index % 2  # alternate real / fake: balanced classes
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, config.sources.index(source), SPLITS.index(split), index]))
    return render_image(config, source, label, rng), label


def _render_chunk(config: SynthConfig, source: str, split: str, indices: list[int], out_dir: str) -> int:
    for index in indices:
        pixels, label = render_split_image(config, source, split, index)
        path = Path(out_dir) / source / split / CLASSES[label] / f"{source}_{split}_{index:06d}.png"
        Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
    return len(indices)


def generate_benchmark(
    out: Path,
    config: SynthConfig = SynthConfig(),
    workers: int | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the benchmark to ``out`` atomically (a temp folder renamed at the end).

    ``on_progress(done, total)`` is called as images are written (e.g. a dashboard
    progress bar). Returns the manifest: the config, the counts and the timing.
    """
    if config.image_size % 2 or config.image_size < 16:
        raise ValueError(f"image size must be an even number >= 16, got {config.image_size}")
    if config.per_source < 20:
        raise ValueError(f"per-source must be at least 20 images, got {config.per_source}")
    unknown = set(config.sources) - set(SIGNATURES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; choose from {list(SIGNATURES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    sizes = config.split_sizes()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    jobs = []
    chunk = 64
    for source in config.sources:
        counts[source] = {}
        for split in SPLITS:
            for cls in CLASSES:
                (staging / source / split / cls).mkdir(parents=True, exist_ok=True)
            n = sizes[split]
            counts[source][split] = {"real": n - n // 2, "fake": n // 2}
            for start in range(0, n, chunk):
                jobs.append((source, split, list(range(start, min(n, start + chunk)))))
    workers = workers or min(os.cpu_count() or 1, 8)
    started = time.perf_counter()
    total = sum(len(j[2]) for j in jobs)
    try:
        with tqdm(total=total, desc="synthetic benchmark", unit="img", disable=not progress) as bar:

            def advance(count: int) -> None:
                bar.update(count)
                if on_progress is not None:
                    on_progress(bar.n, total)

            if workers == 1:
                for source, split, indices in jobs:
                    advance(_render_chunk(config, source, split, indices, str(staging)))
            else:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(_render_chunk, config, s, sp, idx, str(staging)) for s, sp, idx in jobs]
                    for future in as_completed(futures):
                        advance(future.result())
        manifest = {
            "generator": "core.data.synthetic",
            "config": {**asdict(config), "sources": list(config.sources)},
            "counts": counts,
            "images": total,
            "seconds": round(time.perf_counter() - started, 2),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def split_totals(manifest: dict) -> dict[str, dict[str, int]]:
    """Images per source and split (real + fake) from a manifest, for summaries."""
    return {source: {split: sum(c.values()) for split, c in splits.items()} for source, splits in manifest["counts"].items()}


def read_manifest(root: Path) -> dict | None:
    """The manifest of a generated benchmark, or None if ``root`` holds none."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def default_root() -> Path:
    """Where the benchmark lives: ``$CORE_DATA_DIR/synthetic`` or ``<repo>/data/synthetic``."""
    return data_dir() / "synthetic"


def ensure_benchmark(
    root: Path | None = None,
    config: SynthConfig = SynthConfig(),
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Return the benchmark root, generating it first if it is missing or incomplete.

    An existing benchmark made with other settings (e.g. ``data synth --image-size
    96``) is kept as it is: the user chose it.
    """
    root = Path(root) if root is not None else default_root()
    if _is_current(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # one generator at a time: concurrent launches wait, then find it made
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current(root):
            generate_benchmark(root, config, progress=progress, on_progress=on_progress)
    return root


def _is_current(root: Path) -> bool:
    manifest = read_manifest(root)
    return manifest is not None and manifest.get("config", {}).get("version") == GENERATOR_VERSION
