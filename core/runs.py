"""Run directories: the self-describing record of one training run.

    runs/<time>-<method>-<data>-<suffix>/
      config.json        resolved TrainConfig
      env.json           versions, device, host, launched_by (who launched it from the dashboard)
      status.json        running | finished | failed | cancelled (+ pid, error, summary)
      metrics.jsonl      one record per logged step ("step") and per epoch ("epoch"), then "test"
      log.txt            human log
      best.safetensors   best checkpoint by validation accuracy
      last.safetensors   latest epoch's checkpoint
      trainer_state.pt   weights + optimiser/scheduler/counters: the one atomic resume point
      .claim             the lock its one writer holds (Run.claim), with that process's pid and host

Every file except the two logs is replaced atomically; the logs are append-only
and readers skip a torn last line. One process at a time writes a run: it holds an
exclusive ``flock`` on ``.claim`` from before it reads the status until it ends, so a
second trainer of the same run (a second ``--resume``, a requeued job, the launcher)
is refused with the holder's pid, and a killed holder's lock goes with its process.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
import torchvision

from core.checkpoint import BEST, LAST
from core.io import TEMPORARY_SUFFIX, append_jsonl, append_text, atomic_write_json, atomic_write_text, read_jsonl

STATUSES = ("running", "finished", "failed", "cancelled", "interrupted")
CLAIM = ".claim"
LAUNCHED_BY = "CORE_LAUNCHED_BY"  # the identity whose launch (core.launcher) started this process; env.json keeps it


class RunBusy(RuntimeError):
    """Another process holds the run (see :meth:`Run.claim`)."""


def default_runs_dir() -> Path:
    """``$CORE_RUNS_DIR`` or ``<repo>/runs``: where the CLI and the dashboard look by default."""
    return Path(os.environ.get("CORE_RUNS_DIR") or Path(__file__).resolve().parents[1] / "runs")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "data"


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -1, 0) would ask about a whole process group, not one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    dir: Path
    _claim: object = field(default=None, repr=False, compare=False)  # the open, locked .claim while this process holds it

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, method: str, data: str) -> Run:
        """A new, uniquely named run directory (safe against concurrent launches)."""
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:
            path = runs_dir / f"{stamp}-{_slug(method)}-{_slug(data)}-{secrets.token_hex(2)}"
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a run directory (no config.json)")
        return cls(path)

    # --- the one writer -------------------------------------------------------
    def claim(self) -> None:
        """Become the run's only writer until :meth:`release` or the end of this process: an exclusive, non-blocking
        ``flock`` on ``.claim``. The kernel drops it with the process, however it ends, so a killed run can be claimed
        at once; whoever checks the status after claiming sees what no other process can change meanwhile.

        Raises :class:`RunBusy`, naming the holder, when another process (or another claim in this one) holds it."""
        if self._claim is not None:
            return
        path = self.dir / CLAIM
        with open(path, "a"):  # created if missing, never replaced: every claimant locks the same file
            pass
        # the lock is held through a read-only descriptor: a process holding a file open for writing would stop its
        # file system from being remounted read-only (an administrator's answer to a failing disk)
        handle = open(path)  # noqa: SIM115 - held open for the run's lifetime, closed by release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip()
            handle.close()
            raise RunBusy(f"{self.dir} is being trained by {_describe_holder(holder)}: only one process trains a run; "
                          "wait for it to end, or stop it (the run then resumes from its last checkpoint)") from None
        self._claim = handle
        self._write_claim(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}))

    def release(self) -> None:
        """Give the run up (the holder's record is cleared first: no stale pid for the next reader)."""
        if self._claim is None:
            return
        handle, self._claim = self._claim, None
        self._write_claim("")
        handle.close()

    def _write_claim(self, record: str) -> None:
        """The holder's record, rewritten in place (the same file: its lock stays), as a courtesy to the next
        claimant's message; a full or read-only disk only loses the courtesy."""
        try:
            with open(self.dir / CLAIM, "r+") as handle:
                handle.truncate()
                handle.write(record)
        except OSError:
            pass

    # --- files ---------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def best_checkpoint(self) -> Path:
        return self.dir / BEST

    @property
    def last_checkpoint(self) -> Path:
        return self.dir / LAST

    def config(self) -> dict:
        config = json.loads((self.dir / "config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{self.dir / 'config.json'}: damaged (not a JSON object)")
        return config

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.dir / "config.json", config)

    def write_environment(self, device: str) -> None:

        atomic_write_json(self.dir / "env.json", {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "host": socket.gethostname(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "device": device,
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "launched_by": os.environ.get(LAUNCHED_BY) or None,  # the process that last trained it (a resume's, too)
        })

    def environment(self) -> dict:
        """``env.json`` as written by :meth:`write_environment`; empty when missing or damaged (not yet started)."""
        try:
            environment = json.loads((self.dir / "env.json").read_text())
        except (OSError, ValueError):
            return {}
        return environment if isinstance(environment, dict) else {}

    def set_status(self, status: str, **extra) -> None:
        assert status in STATUSES, status
        path = self.dir / "status.json"
        record = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(), **extra}
        try:
            atomic_write_json(path, record)
        except OSError:
            if status == "running" or not path.is_file():
                raise
            # a full disk: rewrite the existing file in place (its block is already allocated), so why the run
            # ended is still recorded; a reader that catches it half-written sees "damaged", never a wrong status
            with open(path, "r+") as handle:
                handle.write(json.dumps(record, sort_keys=True, default=str))
                handle.truncate()

    def status(self) -> dict:
        """The recorded status; a "running" run whose process is gone reads "interrupted"; an unreadable
        status.json "damaged" (with the reason in ``error``); none at all "unknown"."""
        path = self.dir / "status.json"
        if not path.is_file():
            return {"status": "unknown"}
        try:
            status = json.loads(path.read_text())
            if not isinstance(status, dict) or status.get("status") not in STATUSES:
                raise ValueError(f"no status among {', '.join(STATUSES)}")
            if status.get("status") == "running" and status.get("host", socket.gethostname()) == socket.gethostname():
                if not pid_alive(int(status.get("pid", -1))):
                    status["status"] = "interrupted"
        except (OSError, ValueError, TypeError, AttributeError) as error:
            return {"status": "damaged", "error": f"status.json: {type(error).__name__}: {error}"}
        return status

    def append_metrics(self, record: dict) -> None:
        append_jsonl(self.metrics_path, {"time": round(time.time(), 3), **record})

    def metrics(self, kind: str | None = None) -> list[dict]:
        records = read_jsonl(self.metrics_path)
        return [r for r in records if kind is None or r.get("type") == kind]

    def truncate_metrics(self, from_epoch: int) -> None:
        """Drop records of epochs >= ``from_epoch`` (work a killed run lost), atomically."""
        kept = [r for r in read_jsonl(self.metrics_path) if r.get("epoch", -1) < from_epoch and r.get("type") != "test"]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def remove_temporaries(self) -> list[str]:
        """Delete the temporaries of atomic writes a killed process left behind (never read: they were not renamed)."""
        removed = []
        for path in self.dir.rglob(f".*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def log(self, message: str) -> None:
        append_text(self.dir / "log.txt", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def summary(self) -> dict:
        """One row for run tables: config and status (:func:`core.catalog.run_rows` adds its best checkpoint's
        columns)."""
        config = self.config()
        status = self.status()
        return {"run": self.dir.name, "path": str(self.dir), "method": config.get("method"), "data": config.get("data"),
                "status": status.get("status"), "launched_by": self.environment().get("launched_by"),
                **({"error": status["error"]} if "error" in status else {})}


def _describe_holder(record: str) -> str:
    """``process 1234 on host-a (since 14:05:31)`` from a ``.claim`` record (just claimed: not yet written)."""
    try:
        holder = json.loads(record)
        since = time.strftime("%H:%M:%S", time.localtime(holder["since"]))
        return f"process {holder['pid']} on {holder['host']} (since {since})"
    except (ValueError, KeyError, TypeError):
        return "another process (it has just claimed the run)"


def history_entry(record: dict) -> dict:
    """An epoch record of ``metrics.jsonl`` as one entry of a checkpoint header's ``history``: its numbers only
    (losses, validation metrics, τ, active fraction, reductions, lr, images/s), not the per-layer lists."""
    return {key: value for key, value in record.items()
            if key not in ("type", "time", "epochs") and isinstance(value, int | float) and not isinstance(value, bool)}


def list_runs(runs_dir: str | os.PathLike) -> list[Run]:
    """Every run directory under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [Run(p) for p in runs_dir.iterdir() if (p / "config.json").is_file()]
    return sorted(runs, key=lambda r: r.dir.name, reverse=True)


# config keys that name where or how a run executes, not what it computes
EXECUTION_KEYS = ("runs_dir", "device", "num_workers")


def comparable_config(config: dict) -> dict:
    """A config as ``config.json`` stores it (JSON types), without the execution-only keys."""
    normalized = json.loads(json.dumps(config, sort_keys=True, default=str))
    return {k: v for k, v in normalized.items() if k not in EXECUTION_KEYS}


def find_run(runs_dir: str | os.PathLike, config: dict) -> Run | None:
    """The newest run under ``runs_dir`` whose config equals ``config`` (execution keys aside), if any."""
    wanted = comparable_config(config)
    for run in list_runs(runs_dir):
        try:
            if comparable_config(run.config()) == wanted:
                return run
        except (OSError, ValueError):
            continue  # a damaged config.json is no match
    return None
