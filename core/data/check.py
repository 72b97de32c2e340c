"""``python -m core data check D``: a dataset report before anyone trains on it.

- counts per split x label x source, and how each split came to be (declared, carved, 80/10/10);
- every file that cannot be used, counted per reason (files of the class folders and manifest rows the listing left
  out: missing, a folder, not a regular file, unsupported type, listed twice, hidden, see :mod:`core.data.files`;
  files that fail to decode: zero-byte, truncated, corrupt, too small, ...): ``n + skipped`` per split is every
  file and row it was given;
- one-class or badly unbalanced splits;
- the image size distribution;
- videos and identity groups (a video benchmark's people) with samples in two splits;
- **near-duplicates across splits**: the same face image, or a re-encoded or resized copy of it,
  in two splits inflates every accuracy measured on them. Each image gets a perceptual hash
  (``imagehash.phash`` with a 16x16 DCT: 256 bits); two images of different splits whose hashes
  differ in at most :data:`DUPLICATE_THRESHOLD` bits are reported as a pair.

The threshold, measured on the embedded benchmark: exact copies are at distance 0, JPEG
re-encodes at quality 70 at <= 8 bits, 0.9x-1.25x resizes at <= 4 bits; 200 unrelated faces of
the benchmark (19,900 pairs) are at >= 72 bits (median 126). 24 bits leaves 3x the copies' spread
below it and 3x above it to the nearest unrelated pair.

Hashes (and decode failures) are cached per file, keyed by (path, size, mtime), in
``$CORE_CACHE_DIR/image-hashes/``: a second check of the same files decodes nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.data.datasets import LABEL_NAMES, SPLITS, DatasetSplits
from core.data.images import ImageLoadError, load_image
from core.io import DiskCache, load_json, save_json

HASH_SIZE = 16  # phash's DCT side: 16x16 = 256 bits
DUPLICATE_THRESHOLD = 24  # bits of 256 (see the module docstring for the measurement)
MINORITY_SHARE = 0.2  # a split whose smaller class is under 20% of it is flagged as badly unbalanced
MAX_LISTED_PAIRS = 1000  # the report lists at most this many pairs (it always counts them all)
EXAMPLES = 3
SAVE_EVERY = 5000  # new hashes between cache writes, so a killed check keeps most of its work
HASH_CACHE_VERSION = 1


def hash_file(path: str) -> tuple[str | None, int, int, str | None]:
    """``(phash hex, width, height, skip reason)`` of one image file, decoded as training decodes it."""
    import imagehash  # imported when `data check` hashes


    try:
        image = load_image(path)
    except ImageLoadError as error:
        return None, 0, 0, error.reason
    return str(imagehash.phash(image, hash_size=HASH_SIZE)), image.width, image.height, None


def _hash_chunk(paths: list[str]) -> list[tuple[str | None, int, int, str | None]]:
    return [hash_file(path) for path in paths]


class HashCache:
    """Per-file hashes keyed by (path, size, mtime_ns), one JSON entry per dataset root (a :class:`core.io.DiskCache`
    entry, updated as hashing goes and saved every :data:`SAVE_EVERY` files)."""

    def __init__(self, folder: Path, root: Path):
        cache = DiskCache(folder.name, HASH_CACHE_VERSION, ".json", root=folder.parent)
        self.path = cache.path({"root": str(root), "hash_size": HASH_SIZE})
        self.save = lambda: cache.write(self.path, lambda tmp: save_json(tmp, self.entries))
        loaded = cache.read(self.path, load_json)
        self.entries: dict[str, list] = loaded if isinstance(loaded, dict) else {}  # none yet, or damaged: rebuilt

    @staticmethod
    def stamp(path: str) -> list[int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def get(self, path: str, stamp: list[int] | None):
        entry = self.entries.get(path)
        return entry[2:] if entry and stamp is not None and entry[:2] == stamp else None

    def put(self, path: str, stamp: list[int] | None, result) -> None:
        if stamp is not None:
            self.entries[path] = [*stamp, *result]


def _hashes(paths: list[str], cache: HashCache | None, workers: int, progress: bool,
            on_progress=None) -> tuple[list, int]:
    """Per path ``(hash, width, height, reason)``, from the cache where it is current; and how many were hashed."""
    results: list = [None] * len(paths)
    stamps = [HashCache.stamp(p) for p in paths]
    todo = []
    for index, (path, stamp) in enumerate(zip(paths, stamps, strict=True)):
        cached = cache.get(path, stamp) if cache is not None else None
        if cached is not None:
            results[index] = tuple(cached)
        elif stamp is None:
            results[index] = (None, 0, 0, "missing file")
        else:
            todo.append(index)
    chunks = [todo[i:i + 256] for i in range(0, len(todo), 256)]
    bar = tqdm(total=len(todo), desc="hash images", unit="img", disable=not progress or not todo)
    pending = 0

    def collect(chunk: list[int], computed: list) -> None:
        nonlocal pending
        for index, result in zip(chunk, computed, strict=True):
            results[index] = result
            if cache is not None:
                cache.put(paths[index], stamps[index], list(result))
        bar.update(len(chunk))
        if on_progress is not None:
            on_progress(bar.n, len(todo))
        pending += len(chunk)
        if cache is not None and pending >= SAVE_EVERY:
            cache.save()
            pending = 0

    if workers > 1 and len(todo) > 512:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk, computed in zip(chunks, pool.map(_hash_chunk, [[paths[i] for i in c] for c in chunks]), strict=True):
                collect(chunk, computed)
    else:
        for chunk in chunks:
            collect(chunk, _hash_chunk([paths[i] for i in chunk]))
    bar.close()
    if cache is not None and todo:
        cache.save()
    return results, len(todo)


def _as_words(hexes: list[str]) -> np.ndarray:
    """256-bit hex hashes -> ``[N, 4]`` uint64 words, for XOR + popcount."""
    if not hexes:
        return np.zeros((0, 4), dtype=np.uint64)
    return np.array([[int(h[i:i + 16], 16) for i in range(0, 64, 16)] for h in hexes], dtype=np.uint64)


def near_duplicates(words: dict[str, np.ndarray], threshold: int = DUPLICATE_THRESHOLD,
                    budget: int = 8_000_000) -> list[tuple[str, int, str, int, int]]:
    """Pairs ``(split_a, i, split_b, j, distance)`` of hashes in different splits at Hamming distance <= threshold.

    Every cross-split pair is compared. With each hash as a vector of +-1 per bit, the Hamming distance
    is ``(256 - a.b) / 2``: one float32 matrix product per block of ``budget`` distances (exact: the dot
    products are integers under 2**24), 4x faster on 2 cores than XOR + popcount of the words.
    """

    def signs(hashes: np.ndarray) -> torch.Tensor:  # [N, 4] uint64 -> [N, 256] of +-1
        return torch.from_numpy(1.0 - 2.0 * np.unpackbits(hashes.view(np.uint8), axis=1).astype(np.float32))

    found = []
    names = [s for s in words if len(words[s])]
    for position, first in enumerate(names):
        for second in names[position + 1:]:
            a, b = signs(words[first]), signs(words[second])
            bits = a.shape[1]
            block = max(1, budget // len(b))
            for start in range(0, len(a), block):
                distance = ((bits - a[start:start + block] @ b.T) / 2).round().to(torch.int64)
                rows, cols = torch.nonzero(distance <= threshold, as_tuple=True)
                found += [(first, start + int(r), second, int(c), int(distance[r, c]))
                          for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    return sorted(found, key=lambda pair: (pair[4], pair[0], pair[1]))


def shared_across_splits(dataset: DatasetSplits, most: int = MAX_LISTED_PAIRS) -> dict:
    """Videos and identity groups (a video benchmark's people) with samples in more than one split: the same face
    in train and test, whatever the images' hashes say. ``{"videos": n, "groups": n, "listed": [{kind, name, splits}]}``."""
    where: dict[tuple[str, str], set[str]] = {}
    for split in SPLITS:
        for sample in dataset.splits[split]:
            for kind, name in (("video", sample.video_id), ("group", sample.group)):
                if name:
                    where.setdefault((kind, name), set()).add(split)
    shared = sorted((kind, name, sorted(splits, key=SPLITS.index)) for (kind, name), splits in where.items() if len(splits) > 1)
    return {"videos": sum(kind == "video" for kind, _, _ in shared), "groups": sum(kind == "group" for kind, _, _ in shared),
            "listed": [{"kind": kind, "name": name, "splits": splits} for kind, name, splits in shared[:most]]}


def check(dataset: DatasetSplits, cache_folder: Path | None = None, workers: int = 1, progress: bool = True,
          threshold: int = DUPLICATE_THRESHOLD, on_progress=None) -> dict:
    """The report of ``dataset`` (see the module docstring); ``cache_folder`` None: no hash cache;
    ``on_progress(done, total)`` after each chunk of hashed images (the dashboard's progress bar)."""
    started = time.perf_counter()
    entries = [(split, sample) for split in SPLITS for sample in dataset.splits[split]]
    cache = HashCache(cache_folder, dataset.root) if cache_folder is not None else None
    results, hashed = _hashes([sample.path for _, sample in entries], cache, workers, progress, on_progress)

    splits, reasons, examples, sizes = {}, Counter(dataset.dropped_reasons), {}, Counter()
    for reason, paths in dataset.dropped_examples.items():
        examples[reason] = list(paths)
    for split in SPLITS:  # a split's skipped: the files and rows declared in it that the listing left out, and more below
        splits[split] = {"n": 0, "provenance": dataset.provenance[split], "images": dataset.describe(split),
                         "labels": {"real": 0, "fake": 0}, "sources": {}, "skipped": len(dataset.skipped_in(split))}
    usable: dict[str, list[tuple[int, str]]] = {split: [] for split in SPLITS}
    for index, ((split, sample), (digest, width, height, reason)) in enumerate(zip(entries, results, strict=True)):
        record = splits[split]
        if reason is not None:
            record["skipped"] += 1
            reasons[reason] += 1
            examples.setdefault(reason, [])
            if len(examples[reason]) < EXAMPLES:
                examples[reason].append(sample.path)
            continue
        label = LABEL_NAMES[sample.label]
        record["n"] += 1
        record["labels"][label] += 1
        record["sources"].setdefault(sample.source or "-", {"real": 0, "fake": 0})[label] += 1
        sizes[(width, height)] += 1
        usable[split].append((index, digest))

    warnings = []
    for split, record in splits.items():
        if record["n"] == 0:
            continue
        smaller = min(record["labels"].values())
        if smaller == 0:
            present = [name for name, count in record["labels"].items() if count]
            warnings.append(f"{split}: one class only ({present[0]}): a detector can neither learn nor be scored on it")
        elif smaller / record["n"] < MINORITY_SHARE:
            warnings.append(f"{split}: badly unbalanced ({record['labels']['real']} real, {record['labels']['fake']} fake; "
                            f"the smaller class is {smaller / record['n']:.1%}): accuracy then mostly measures the larger one")

    words = {split: _as_words([digest for _, digest in usable[split]]) for split in SPLITS}
    pairs = near_duplicates(words, threshold)
    listed = [{"a": entries[usable[sa][i][0]][1].path, "b": entries[usable[sb][j][0]][1].path, "splits": [sa, sb],
               "distance": d} for sa, i, sb, j, d in pairs[:MAX_LISTED_PAIRS]]
    widths = np.array([w for (w, _), n in sizes.items() for _ in range(n)]) if sizes else np.zeros(0)
    heights = np.array([h for (_, h), n in sizes.items() for _ in range(n)]) if sizes else np.zeros(0)

    def spread(values: np.ndarray) -> dict:
        return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())} if len(values) else {}

    return {
        "name": dataset.name, "root": str(dataset.root), "splits": splits,
        "skipped": {"total": int(sum(reasons.values())), "reasons": dict(reasons), "examples": examples},
        "warnings": warnings,
        "sizes": {"width": spread(widths), "height": spread(heights),
                  "common": [[f"{w}x{h}", n] for (w, h), n in sizes.most_common(5)]},
        "duplicates_across_splits": listed,
        "shared_across_splits": shared_across_splits(dataset),
        "duplicates": {"pairs": len(pairs), "listed": len(listed), "threshold_bits": threshold,
                       "hash": f"imagehash.phash, {HASH_SIZE}x{HASH_SIZE} DCT ({HASH_SIZE * HASH_SIZE} bits)",
                       "per_split_pair": dict(Counter(f"{sa}/{sb}" for sa, _, sb, _, _ in pairs))},
        "images": len(entries), "hashed": hashed, "from_cache": len(entries) - hashed,
        "seconds": round(time.perf_counter() - started, 2),
    }
