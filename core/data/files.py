"""Which files are images to read, and why every other one is left out.

Every file given to ``predict``, ``evaluate`` or ``data check`` (each file of a folder, recursively; each row of
a manifest) ends up either used or skipped with a true reason, so that ``n + skipped`` equals what was given:

- ``hidden file`` / ``hidden folder`` (a name starting with ``.``; a hidden folder counts once, unread);
- ``a folder, not a file`` (a manifest row naming a folder);
- ``not a regular file`` (a FIFO, a socket, a device, or a link to one);
- ``missing file`` (nothing there, or a link to nothing);
- ``unsupported type .gif`` (an extension outside :data:`IMAGE_EXTENSIONS`);
- ``link to a folder (not followed)`` (links inside a folder are not followed: no loops, no escapes);
- ``listed twice`` (the same file named again: it is used once).

Decoding is the image loader's job (:func:`core.data.images.load_image`): a file that passes here can still be
skipped there as corrupt, truncated, too small or too large.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

HIDDEN_FILE, HIDDEN_FOLDER = "hidden file", "hidden folder"
A_FOLDER = "a folder, not a file"
NOT_REGULAR = "not a regular file"
MISSING = "missing file"
FOLDER_LINK = "link to a folder (not followed)"
LISTED_TWICE = "listed twice"
EMPTY_FOLDER = "empty folder"


@dataclass(frozen=True)
class Skipped:
    """One input left out: its path, why, and the split it was declared in (None: no split, or not a dataset)."""

    path: str
    reason: str
    split: str | None = None


def unsupported_type(path: str | os.PathLike) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return f"unsupported type {suffix}" if suffix else "unsupported type (no extension)"


def has_image_extension(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def why_not_read(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a regular file with an image extension; else why it is left out (one of the reasons
    above). Follows a link named directly, as opening it would."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return MISSING  # nothing there, a dangling link, or a link loop
    if stat.S_ISDIR(mode):
        return A_FOLDER
    if not stat.S_ISREG(mode):
        return NOT_REGULAR
    return None if has_image_extension(path) else unsupported_type(path)


def walk_images(folder: str | os.PathLike, split: str | None = None) -> tuple[list[Path], list[Skipped]]:
    """``(images, skipped)`` under ``folder``, recursively and sorted: every entry is one or the other (a hidden
    folder or a link to a folder counts once, unread; links to files are read through)."""
    images: list[Path] = []
    skipped: list[Skipped] = []
    pending = [Path(folder)]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            skipped.append(Skipped(str(current), f"unreadable folder ({error.strerror or error})", split))
            continue
        folders = []
        for entry in entries:
            path = Path(entry.path)
            hidden = entry.name.startswith(".")
            if entry.is_dir(follow_symlinks=False):
                if hidden:
                    skipped.append(Skipped(str(path), HIDDEN_FOLDER, split))
                else:
                    folders.append(path)
                continue
            if hidden:
                skipped.append(Skipped(str(path), HIDDEN_FILE, split))
                continue
            reason = why_not_read(path)
            if reason == A_FOLDER:  # a link to a folder: os.stat followed it
                reason = FOLDER_LINK
            if reason is None:
                images.append(path)
            else:
                skipped.append(Skipped(str(path), reason, split))
        pending.extend(reversed(folders))  # depth first, in name order
    return sorted(images), skipped


def once(paths: Iterable[Path]) -> tuple[list[Path], list[Skipped]]:
    """``paths`` without repeats (the first naming of a file is used; compared by where it really is)."""
    seen: set[str] = set()
    kept, repeats = [], []
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            repeats.append(Skipped(str(path), LISTED_TWICE))
        else:
            seen.add(key)
            kept.append(path)
    return kept, repeats


def reason_counts(skipped: Iterable[Skipped]) -> dict[str, int]:
    return dict(Counter(item.reason for item in skipped))


def reason_examples(skipped: Iterable[Skipped], most: int) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for item in skipped:
        listed = examples.setdefault(item.reason, [])
        if len(listed) < most:
            listed.append(item.path)
    return examples
