"""Verdicts on image files: ``python -m core predict PATH... --checkpoint CKPT``.

Files are listed (folders recursively, image suffixes only; named files always tried), each is decoded and checked
as an upload is (:func:`core.data.images.load_image`: empty, truncated, non-image, tiny and bomb-sized files are
skipped with their reason, never fatal), its largest face is cropped (:mod:`core.data.faces`; or the whole image with
``face_crop=False``), and the crops go through the model in batches of ``batch_size`` together with the
out-of-distribution score (:mod:`core.evaluation.ood`): one forward pass gives both. Decoding and face detection of
the next files overlap nothing; they are timed apart from the model so the report says where the time goes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from core.data.datasets import FAKE, IMAGE_EXTENSIONS, LABEL_NAMES, REAL
from core.data.faces import FACE_MARGIN, crop_face
from core.data.images import ImageLoadError, load_image
from core.evaluation.ood import UNRELIABLE, OODModel, Scorer

COLUMNS = ("path", "face", "face_confidence", "p_fake", "label", "in_distribution", "ood_score")


def list_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """``(files, skipped)``: named files as they are, folders' image files recursively (sorted, hidden ones skipped);
    a missing path is skipped with its reason."""
    files, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                skipped.append({"path": str(path), "reason": "folder without images"})
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            skipped.append({"path": str(path), "reason": "missing file"})
    return files, skipped


def predict_files(model: nn.Module, paths: Iterable[str | os.PathLike], ood: OODModel | None = None,
                  face_crop: bool = True, threshold: float = 0.5, batch_size: int = 32, margin: float = FACE_MARGIN,
                  detector: str = "auto", progress: bool = True,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """``{"predictions": [...], "skipped": [...], "timing": {...}, "images_per_s", "ood"}`` for the images at ``paths``.

    Each prediction has :data:`COLUMNS`: ``face`` ``[x, y, w, h]`` or None (no face found: the centre square was
    judged; or cropping off), ``p_fake`` = sigmoid(logit), ``label`` fake when ``p_fake > threshold``,
    ``in_distribution``/``ood_score`` (None without an ood model; ``ood_score`` <= 1 is in distribution) and, for an
    input out of distribution, ``note`` saying the verdict is unreliable.
    """
    if batch_size < 1:
        raise ValueError("batch size must be >= 1")
    files, skipped = list_images(paths)
    scorer = Scorer(model, ood)
    predictions: list[dict] = []
    timing = {"decode_s": 0.0, "face_s": 0.0, "model_s": 0.0}
    pending: list[tuple[dict, Image.Image]] = []
    started = time.perf_counter()

    def flush() -> None:
        if not pending:
            return
        clock = time.perf_counter()
        batch = torch.stack([model.preprocess(crop) for _, crop in pending])
        logits, scores = scorer(batch)
        probabilities = torch.sigmoid(logits.float()).tolist()
        timing["model_s"] += time.perf_counter() - clock
        for index, (record, _) in enumerate(pending):
            record["p_fake"] = round(probabilities[index], 6)
            record["label"] = LABEL_NAMES[FAKE if probabilities[index] > threshold else REAL]
            if scores is not None:
                record["ood_score"] = round(float(scores[index]), 4)
                record["in_distribution"] = bool(scores[index] <= 1)
                if not record["in_distribution"]:
                    record["note"] = UNRELIABLE
            predictions.append(record)
        pending.clear()

    with tqdm(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
        for done, path in enumerate(files):
            clock = time.perf_counter()
            try:
                image = load_image(path)
            except ImageLoadError as error:
                skipped.append({"path": str(path), "reason": error.reason, "error": str(error)})
                image = None
            timing["decode_s"] += time.perf_counter() - clock
            if image is not None:
                clock = time.perf_counter()
                crop, face = crop_face(image, margin, detector) if face_crop else (image, None)
                timing["face_s"] += time.perf_counter() - clock
                pending.append(({"path": str(path), "face": None if face is None else list(face.box),
                                 "face_confidence": None if face is None else face.confidence, "p_fake": None,
                                 "label": None, "in_distribution": None, "ood_score": None}, crop))
                if len(pending) >= batch_size:
                    flush()
            bar.update()
            if on_progress is not None:
                on_progress(done + 1, len(files))
        flush()
    total = time.perf_counter() - started
    return {"predictions": predictions, "skipped": skipped,
            "timing": {**{k: round(v, 3) for k, v in timing.items()}, "total_s": round(total, 3)},
            "images_per_s": round(len(predictions) / total, 2) if total > 0 and predictions else None,
            "ood": None if ood is None else {"method": ood.record()["method"], "threshold": 1.0,
                                              "trained_on": ood.info.get("data")}}
