"""Verdicts on image files: ``python -m core predict PATH... --checkpoint CKPT``.

Files are listed (named files and folders' files recursively; every file given is used or skipped with its reason,
see :mod:`core.data.files`), each is decoded and checked
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

from core.data.datasets import FAKE, LABEL_NAMES, REAL
from core.data.faces import FACE_MARGIN, crop_face
from core.data.files import EMPTY_FOLDER, Skipped, once, walk_images, why_not_read
from core.data.images import ImageLoadError, load_image
from core.evaluation.ood import UNRELIABLE, OODModel, Scorer

COLUMNS = ("path", "face", "face_confidence", "p_fake", "label", "in_distribution", "ood_score")


def list_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """``(files, skipped)``: named files as they are, folders' files recursively (sorted); every file given ends up in
    one or the other, a skipped one with its reason (:mod:`core.data.files`: hidden, unsupported type, not a regular
    file, missing, listed twice), so the predictions and the skipped add up to the files given."""
    files, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, left_out = walk_images(path)
            if not found and not left_out:
                skipped.append(Skipped(str(path), EMPTY_FOLDER))
            files.extend(found)
            skipped.extend(left_out)
            continue
        reason = why_not_read(path)
        if reason is None:
            files.append(path)
        else:
            skipped.append(Skipped(str(path), reason))
    files, repeats = once(files)
    return files, [{"path": item.path, "reason": item.reason} for item in [*skipped, *repeats]]


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
