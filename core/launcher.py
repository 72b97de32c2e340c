"""Launch, watch and cancel training runs from another process (the dashboard's sidebar).

A launch starts ``python -m core train ...`` as its own process session, so the UI is
never blocked and the run outlives a page reload. Everything the UI shows comes back
from the run directory (``status.json``, ``metrics.jsonl``), so a new browser tab
finds a run again. Between the launch and the run directory's creation (the seconds
it takes to import torch), a marker in ``<runs>/.launches/`` keeps the launch visible.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from core.io import atomic_write_json
from core.runs import Run, _pid_alive, list_runs

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Activity:
    """A training process that is alive: its run directory once it has one."""

    pid: int
    command: list[str]
    started: float
    run: Run | None


def launch(arguments: list[str], runs_dir: str | os.PathLike) -> int:
    """Start ``python -m core train <arguments>`` writing into ``runs_dir``; returns its pid."""
    runs_dir = Path(runs_dir)
    launches = runs_dir / ".launches"
    launches.mkdir(parents=True, exist_ok=True)
    # an argument list, never a shell string: a path typed in the sidebar stays one argument whatever it holds
    command = [sys.executable, "-m", "core", "train", *arguments, "--runs-dir", str(runs_dir), "--quiet", "--json"]
    fd, log_path = tempfile.mkstemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), suffix=".log", dir=launches)  # unique per launch
    log = os.fdopen(fd, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    atomic_write_json(launches / f"{process.pid}.json", {"pid": process.pid, "command": command, "started": time.time(),
                                                         "log": log_path})
    return process.pid


def check_data_path(text: str, kind: str = "dataset") -> Path:
    """A path typed in the sidebar, resolved and checked before a launch; ValueError says what is wrong.

    ``kind``: ``dataset`` (a folder or a ``.csv`` manifest) or ``root`` (a registered dataset's folder).
    ``~`` expands, a relative path is taken from the repository (where the run starts), and the result
    is absolute, so it can never read as a command-line option.
    """
    text = text.strip()
    if not text or "\0" in text:
        raise ValueError("enter a path to a folder" + (" or a .csv file" if kind == "dataset" else ""))
    path = Path(text).expanduser()
    path = (path if path.is_absolute() else REPO / path).resolve()
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if kind == "root" and not path.is_dir():
        raise ValueError(f"{path} is not a folder: give the folder that holds the dataset")
    if kind == "dataset" and not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv")):
        raise ValueError(f"{path} is neither a folder (ImageFolder tree) nor a .csv manifest")
    return path


def activities(runs_dir: str | os.PathLike) -> list[Activity]:
    """Live training processes launched into ``runs_dir`` (and runs whose status says running)."""
    runs_dir = Path(runs_dir)
    by_pid: dict[int, Run] = {}
    for run in list_runs(runs_dir):
        status = run.status()
        if status.get("status") == "running" and status.get("pid"):
            by_pid[int(status["pid"])] = run
    found = {pid: Activity(pid, [], 0.0, run) for pid, run in by_pid.items()}
    for marker in sorted((runs_dir / ".launches").glob("*.json")):
        try:
            info = json.loads(marker.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):  # a damaged marker is not a launch
            continue
        if not _pid_alive(pid) or _is_zombie(pid):
            marker.unlink(missing_ok=True)
            found.pop(pid, None)
            continue
        found[pid] = Activity(pid, info.get("command", []), info.get("started", 0.0), by_pid.get(pid))
    return list(found.values())


def _is_zombie(pid: int) -> bool:
    """A finished child not yet reaped by its parent (e.g. the Streamlit server) still answers kill(0)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def can_launch(runs_dir: str | os.PathLike) -> tuple[bool, str]:
    """One run at a time on a CPU-only machine: a second would halve both."""
    active = activities(runs_dir)
    if active and not torch.cuda.is_available():
        names = ", ".join(a.run.dir.name if a.run else f"pid {a.pid} (starting)" for a in active)
        return False, (f"a training run is already using this CPU-only machine ({names}); two at once would each run at "
                       "half speed. Wait for it or cancel it.")
    return True, ""


def cancel(activity: Activity) -> None:
    """SIGTERM: the engine stops cleanly, marks the run cancelled, and it can be resumed."""
    try:
        os.kill(activity.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def progress(run: Run) -> dict:
    """What a progress bar needs: epoch and step fractions, the latest loss terms and epoch metrics."""
    config = run.config()
    epochs = int(config.get("epochs", 1))
    steps = run.metrics("step")
    epoch_records = run.metrics("epoch")
    last_step = steps[-1] if steps else None
    done_epochs = len(epoch_records)
    step_fraction = (last_step["step"] / last_step["steps"]) if last_step and last_step["epoch"] >= done_epochs else 0.0
    return {
        "status": run.status().get("status"), "epochs": epochs, "epochs_done": done_epochs,
        "fraction": min(1.0, (done_epochs + step_fraction) / max(epochs, 1)), "epoch_fraction": step_fraction,
        "step": last_step, "epoch_records": epoch_records,
    }
