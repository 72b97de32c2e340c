"""Atomic file writes: a reader never sees a half-written file.

Every write goes to a temporary file in the same folder, is flushed to disk, and is
then renamed over the target (``os.replace`` is atomic on POSIX and Windows). A write
that fails (disk full, read-only folder) raises :class:`WriteError` and leaves the
previous version of the file untouched.

:func:`pause_point` is a test hook: it lets the reliability tests stop a process at
an exact point (mid-epoch, mid-checkpoint-write, during validation) to kill it there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # the repository: relative paths typed by a person start here, as runs do
FILE_MODE = 0o644
TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporaries: ".<name>.<random>.tmp" next to the target
PAUSE_AT, PAUSE_FILE = "CORE_TEST_PAUSE_AT", "CORE_TEST_PAUSE_FILE"
T = TypeVar("T")
# what reading a damaged cache entry can raise (np.load of a cut .npz: BadZipFile or EOFError); such entries are recomputed
DAMAGED_CACHE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
_pauses_seen: dict[str, int] = {}


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, ...); its previous version is intact."""

    def __str__(self) -> str:  # the message already names the path and the reason; no "[Errno 28]" prefix
        return self.strerror or super().__str__()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``.

    ``write`` should raise OSError when the disk refuses the bytes (write through a Python
    file object: some libraries' own writers turn ENOSPC into opaque errors).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        write(tmp)
        pause_point(f"write:{path.name}")  # complete temporary, target not yet replaced
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600 (and some writers recreate the file): results are shared files
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(error.errno, f"cannot write {path}: {error.strerror or error}; "
                                          "its previous version, if any, is intact") from error
        raise


def write_bytes_to(tmp: str, data: bytes) -> None:
    """Write ``data`` through a Python file object, so a full disk raises OSError(ENOSPC)."""
    with open(tmp, "wb") as handle:
        handle.write(data)


def pause_point(name: str) -> None:
    """Test hook, inert unless ``$CORE_TEST_PAUSE_AT`` is ``<name>@<n>``.

    The n-th time this process reaches ``name``, it creates ``$CORE_TEST_PAUSE_FILE`` and
    waits while that file exists: a test then SIGKILLs it at exactly this point, or changes
    the world (fills the disk) and deletes the file to let it go on. Points: ``step`` (after
    an optimiser step), ``validation`` (validation done, nothing recorded yet) and
    ``write:<file name>`` (a complete temporary, the target not yet replaced).
    """
    wanted = os.environ.get(PAUSE_AT)
    if not wanted:
        return
    point, _, nth = wanted.rpartition("@")
    if point != name:
        return
    _pauses_seen[name] = _pauses_seen.get(name, 0) + 1
    if _pauses_seen[name] != int(nth):
        return
    ready = Path(os.environ[PAUSE_FILE])
    ready.write_text(str(os.getpid()))
    while ready.exists():
        time.sleep(0.01)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict, lock: bool = False) -> None:
    """Append one JSON line in a single write (see :func:`append_text`); readers skip a torn last line."""
    append_text(path, json.dumps(record, sort_keys=True, default=str) + "\n", lock=lock)


def append_text(path: str | os.PathLike, text: str, lock: bool = False) -> None:
    """Append ``text`` with one ``write`` on an ``O_APPEND`` descriptor (logs); a full disk or read-only folder raises
    WriteError.

    ``O_APPEND`` puts each write at the end of the file, whoever else appends, so lines of concurrent writers never
    overwrite each other; ``lock`` also holds an exclusive ``flock`` around the write, for a log several processes
    share (the audit log), where a file system without atomic appends (NFS) could otherwise interleave them.
    """
    data = text.encode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            if lock:
                fcntl.flock(descriptor, fcntl.LOCK_EX)  # released by the close below
            written = os.write(descriptor, data)
            while written < len(data):  # a short write (a signal, the last free block): finish it, or raise ENOSPC
                written += os.write(descriptor, data[written:])
        finally:
            os.close(descriptor)
    except OSError as error:
        raise WriteError(error.errno, f"cannot append to {path}: {error.strerror or error}") from error


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete records of a JSON-lines file (a torn trailing line is ignored)."""
    records = []
    try:
        with open(path) as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return records


def cache_dir() -> Path:
    """Where computed artefacts (dataset statistics, predictions) live: ``$CORE_CACHE_DIR`` or ``<repo>/cache``."""
    return Path(os.environ.get("CORE_CACHE_DIR") or REPO / "cache")


@dataclass(frozen=True)
class DiskCache:
    """One on-disk cache; every cache of the library is one of these (the dataset statistics, predictions,
    embeddings, image hashes, serving exports and deploy exports).

    An entry's file is named by a content key: what the value depends on (a checkpoint's SHA-256, a sample list's
    digest, settings), hashed together with the cache's ``version``, so a new version misses every older entry. A
    missing or damaged entry reads as a miss (:data:`DAMAGED_CACHE_ERRORS`) and is recomputed and replaced; every
    write is atomic (:func:`atomic_write`). Entries live in ``<root>/<name>/`` (root: :func:`cache_dir` at call time).
    """

    name: str
    version: int
    suffix: str  # ".npz", ".json", ".onnx", ...
    root: Path | None = None

    def path(self, key: dict | str, prefix: str = "") -> Path:
        """The entry's file: ``[prefix-]<32 hex digits of the key>.suffix`` (``prefix``: a name a person can read)."""
        text = json.dumps({"version": self.version, "key": key}, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        return (self.root or cache_dir()) / self.name / f"{prefix + '-' if prefix else ''}{digest}{self.suffix}"

    def read(self, path: Path, load: Callable[[Path], T]) -> T | None:
        """``load(path)``, or None when the entry is missing or damaged."""
        if not path.is_file():
            return None
        try:
            return load(path)
        except DAMAGED_CACHE_ERRORS + (TypeError,):
            return None  # a damaged entry is recomputed and replaced

    def write(self, path: Path, save: Callable[[str], None]) -> Path:
        """``save(temporary)`` then an atomic rename onto ``path``."""
        atomic_write(path, save)
        return path

    def get(self, key: dict | str, compute: Callable[[], T], load: Callable[[Path], T], save: Callable[[str, T], None],
            use: bool = True) -> T:
        """The cached value of ``key``, else ``compute()`` (stored unless ``use`` is False, which also skips the read)."""
        path = self.path(key)
        if use:
            cached = self.read(path, load)
            if cached is not None:
                return cached
        value = compute()
        if use:
            self.write(path, lambda tmp: save(tmp, value))
        return value


def load_npz(path: Path) -> dict:
    """Every array of an ``.npz`` cache entry, read into memory."""

    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def save_npz(tmp: str, arrays: dict) -> None:

    with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the temporary name
        np.savez(handle, **arrays)


def load_json(path: Path):
    return json.loads(Path(path).read_text())


def save_json(tmp: str, value) -> None:
    write_bytes_to(tmp, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


def data_dir() -> Path:
    """Where datasets live by default (the synthetic benchmark among them): ``$CORE_DATA_DIR`` or ``<repo>/data``."""
    return Path(os.environ.get("CORE_DATA_DIR") or REPO / "data")


def resolve_user_path(text: str) -> Path:
    """A path a person typed, made absolute: ``~`` expanded, a relative path taken from the repository (where runs
    start), every symlink followed (``os.path.realpath``: the path a reader would really open). Nothing is read but
    the links on the way; whether it exists is the caller's question. ValueError for an empty text or a NUL byte."""
    text = text.strip()
    if not text or "\0" in text:
        raise ValueError("enter a path")
    try:
        path = Path(text).expanduser()
    except RuntimeError as error:  # ~someone who has no home folder here
        raise ValueError(f"{text}: {error}") from None
    return Path(os.path.realpath(path if path.is_absolute() else REPO / path))
