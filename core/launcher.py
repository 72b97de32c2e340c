"""Launch, queue, watch and cancel training runs from another process (the dashboard's sidebar).

A launch starts ``python -m core train ...`` as its own process session, so the UI is
never blocked and the run outlives a page reload. Everything the UI shows comes back
from the run directory (``status.json``, ``metrics.jsonl``), so a new browser tab
finds a run again. Between the launch and the run directory's creation (the seconds
it takes to import torch), a marker in ``<runs>/.launches/<pid>.json`` keeps the launch visible.

A launch that finds no free slot waits in a queue of files, ``<runs>/.queue/<time_ns>-<id>.json``,
started in order, strictly first in first out. A slot is the CPU (one run at a time: a second
would halve both), one free GPU each, or every GPU at once for a ``torchrun`` DDP job. The queue is
served by a detached dispatcher process (``python -m core.launcher --runs-dir DIR``), one per runs
folder (``flock`` on ``.queue/dispatcher.lock``), so queued launches start without a browser and
survive a dashboard restart; it exits once the queue is empty and nothing it started still runs.

A launch may name its ``user`` (the dashboard's signed-in identity): the queue entry and the launch marker keep it,
the run's process gets it as ``$CORE_LAUNCHED_BY`` (its ``env.json`` records ``launched_by``), and ``max_per_user``
refuses a launch while that user already has that many queued or running (:func:`queued_or_running_by`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.io import REPO, atomic_write_json, resolve_user_path
from core.runs import LAUNCHED_BY, Run, list_runs, pid_alive
from core.training.gpus import assign_devices, gpu_count, visible_gpus
from core.training.requests import command_line

LAUNCHES, QUEUE = ".launches", ".queue"
QUEUE_LOCK, DISPATCHER_LOCK, DISPATCHER_LOG = "queue.lock", "dispatcher.lock", "dispatcher.log"
GPU_REQUESTS = {"one": "one free GPU", "all": "all GPUs (torchrun DDP)"}  # what a launch may ask for on a GPU machine
DISPATCH_EVERY_S = 0.5  # how often the dispatcher looks for a freed slot
ENVIRONMENT_PREFIX = "CORE_"  # the launcher's settings a queued run keeps (data, cache, device), whoever starts it


@dataclass
class Activity:
    """A training process that is alive: its run directory once it has one, the GPUs it holds."""

    pid: int
    command: list[str]
    started: float
    run: Run | None
    gpus: tuple[int, ...] = ()
    user: str | None = None  # who launched it: the launch's user, else the run's env.json (a CLI run: none)


@dataclass(frozen=True)
class QueuedLaunch:
    """A launch waiting for a slot: ``position`` 1 starts next."""

    id: str
    request: dict  # the train request, by name (core.training.requests)
    arguments: list[str]  # its command line, rendered from it when it was queued
    created: float
    gpus: str
    position: int
    path: Path
    user: str | None = None  # who queued it (the dashboard's identity), None for an anonymous launch

    def describe(self) -> str:
        """``<method> on <data>`` (and the GPU request where it matters), for a one-line listing."""
        text = f"{self.request.get('method', '?')} on {self.request.get('data', '?')}"
        return text + (f", {GPU_REQUESTS[self.gpus]}" if self.gpus == "all" else "")


@dataclass(frozen=True)
class Launched:
    """What :func:`launch` did: started now (``pid``) or queued (``position``, 1 = next)."""

    id: str
    pid: int | None = None
    position: int | None = None

    @property
    def started(self) -> bool:
        return self.pid is not None


def launch(request: dict, runs_dir: str | os.PathLike, gpus: str = "one", user: str | None = None,
           max_per_user: int | None = None) -> Launched:
    """Queue the train ``request`` (its values by name: ``{"method": "teacher", "data": "synthetic", "epochs": 2}``;
    its command line rendered by :func:`core.training.requests.command_line`) writing into ``runs_dir``, and start it
    now if a slot is free.

    ``gpus`` matters on a machine with GPUs: ``one`` (the next free GPU) or ``all`` (one ``torchrun`` DDP
    job over every GPU, once all are free). A launch that has to wait is started by the dispatcher.
    ``user``: who launches (kept in the queue entry, passed to the run as ``$CORE_LAUNCHED_BY``); with
    ``max_per_user``, ValueError when that user already has that many launches queued or running.
    """
    if gpus not in GPU_REQUESTS:
        raise ValueError(f"gpus must be one of {', '.join(GPU_REQUESTS)}, got {gpus!r}")
    if max_per_user is not None and (not user or isinstance(max_per_user, bool) or not isinstance(max_per_user, int)
                                     or max_per_user < 1):
        raise ValueError(f"max_per_user must be a whole number >= 1 with a user, got {max_per_user!r} for {user!r}")
    runs_dir = Path(runs_dir)
    arguments = command_line("train", request)[1:]  # an unknown name is refused here, before anything is queued
    launch_id = secrets.token_hex(4)
    # the process's settings travel with the entry: the dispatcher that starts it may have been started by another
    environment = {k: v for k, v in os.environ.items() if k.startswith(ENVIRONMENT_PREFIX) and k != LAUNCHED_BY}
    if user:
        environment[LAUNCHED_BY] = user
    with _queue_lock(runs_dir):
        if max_per_user is not None and (count := queued_or_running_by(runs_dir, user)) >= max_per_user:
            raise ValueError(f"{user} already has {count} launch{'es' if count != 1 else ''} queued or running (at most "
                             f"{max_per_user} a user): wait for one to end, or cancel one")
        atomic_write_json(runs_dir / QUEUE / f"{time.time_ns():020d}-{launch_id}.json",
                          {"id": launch_id, "request": request, "arguments": arguments, "created": time.time(), "gpus": gpus,
                           "user": user or None, "env": environment})
        started = dict(_start_ready(runs_dir))
        position = next((entry.position for entry in queued(runs_dir) if entry.id == launch_id), None)
        if position is not None:
            _ensure_dispatcher(runs_dir)
    return Launched(launch_id, pid=started.get(launch_id), position=position)


def queued(runs_dir: str | os.PathLike) -> list[QueuedLaunch]:
    """The launches waiting in ``runs_dir``'s queue, in the order they will start (read from disk every call)."""
    entries = []
    for path in sorted((Path(runs_dir) / QUEUE).glob("*.json")):
        try:
            info = json.loads(path.read_text())
            entries.append(QueuedLaunch(str(info["id"]), dict(info.get("request") or {}), [str(a) for a in info["arguments"]],
                                        float(info["created"]),
                                        str(info.get("gpus", "one")), len(entries) + 1, path,
                                        str(info["user"]) if info.get("user") else None))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged entry (or one just started) is no launch
            continue
    return entries


def queued_or_running_by(runs_dir: str | os.PathLike, user: str) -> int:
    """How many launches ``user`` has in ``runs_dir``: queued entries, plus live training processes launched by that user
    (from the launch marker, or from the run's ``env.json``: a run started by ``CORE_LAUNCHED_BY=user python -m core
    train`` counts too). Read from disk every call."""
    waiting = sum(entry.user == user for entry in queued(runs_dir))
    return waiting + sum(activity.user == user for activity in activities(runs_dir))


def cancel_queued(runs_dir: str | os.PathLike, launch_id: str) -> bool:
    """Remove a queued launch before it starts; False when it is no longer queued (started or already removed)."""
    with _queue_lock(runs_dir):
        for entry in queued(runs_dir):
            if entry.id == launch_id:
                entry.path.unlink(missing_ok=True)
                return True
    return False


def dispatch(runs_dir: str | os.PathLike) -> list[tuple[str, int]]:
    """Start the queued launches that fit now, ``(id, pid)`` each, and make sure a dispatcher serves the rest.

    Cheap when nothing waits (the dashboard's live panel calls it every 2 s); the queue never depends on it.
    """
    runs_dir = Path(runs_dir)
    if not (runs_dir / QUEUE).is_dir():
        return []
    with _queue_lock(runs_dir):
        started = _start_ready(runs_dir)
        if queued(runs_dir):
            _ensure_dispatcher(runs_dir)
    return started


def train_command(arguments: list[str], runs_dir: str | os.PathLike, processes: int = 1) -> list[str]:
    """The command a launch runs: ``python -m core train ...``, or under torchrun with ``processes`` > 1."""
    # an argument list, never a shell string: a path typed in the sidebar stays one argument whatever it holds
    train = ["-m", "core", "train", *arguments, "--runs-dir", str(runs_dir), "--quiet", "--json"]
    if processes > 1:  # torchrun is torch.distributed.run: one DDP process per GPU, a free rendezvous port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *train]
    return [sys.executable, *train]


def check_data_path(text: str, kind: str = "dataset") -> Path:
    """A path typed in the sidebar, resolved and checked before a launch; ValueError says what is wrong.

    ``kind``: ``dataset`` (a folder or a ``.csv`` manifest) or ``root`` (a registered dataset's folder).
    ``~`` expands, a relative path is taken from the repository (where the run starts), and the result
    is absolute, so it can never read as a command-line option.
    """
    if not text.strip() or "\0" in text:
        raise ValueError("enter a path to a folder" + (" or a .csv file" if kind == "dataset" else ""))
    path = resolve_user_path(text)
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
    ending: dict[int, Run] = {}  # runs whose status is written (finished, failed, ...) while their process exits
    for run in list_runs(runs_dir):
        status = run.status()
        if status.get("pid"):
            (by_pid if status.get("status") == "running" else ending)[int(status["pid"])] = run
    found = {pid: Activity(pid, [], 0.0, run, user=run.environment().get("launched_by")) for pid, run in by_pid.items()}
    for marker in sorted((runs_dir / LAUNCHES).glob("*.json")):
        try:
            info = json.loads(marker.read_text())
            pid = int(info["pid"])
            gpus = tuple(int(index) for index in info.get("gpus", ()))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged marker is not a launch
            continue
        if not pid_alive(pid) or _is_zombie(pid):
            marker.unlink(missing_ok=True)
            found.pop(pid, None)
            continue
        found[pid] = Activity(pid, info.get("command", []), info.get("started", 0.0), by_pid.get(pid) or ending.get(pid), gpus,
                              info.get("user") or None)
    for pid, run in by_pid.items():  # under torchrun the run's pid is rank 0, a child of the launched process
        parent = _parent_pid(pid)
        if parent in found and parent != pid and found[parent].run is None:
            found[parent].run = run
            rank_zero = found.pop(pid, None)
            found[parent].user = found[parent].user or (rank_zero.user if rank_zero else None)
    return list(found.values())


def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); empty when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _is_zombie(pid: int) -> bool:
    """A finished child not yet reaped by its parent (e.g. the Streamlit server) still answers kill(0)."""
    return _proc_stat(pid)[:1] == ["Z"]


def _parent_pid(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def cancel(activity: Activity) -> None:
    """SIGTERM: the engine stops cleanly, marks the run cancelled, and it can be resumed."""
    try:
        os.kill(activity.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def progress(run: Run) -> dict:
    """What a progress bar needs: epoch and step fractions, the latest loss terms and epoch metrics, and the
    loss and validation-accuracy histories (the live panel's sparklines)."""
    config = run.config()
    epochs = int(config.get("epochs", 1))
    records = run.metrics()  # one read of metrics.jsonl every 2 s per running run
    steps = [r for r in records if r.get("type") == "step"]
    epoch_records = [r for r in records if r.get("type") == "epoch"]
    last_step = steps[-1] if steps else None
    done_epochs = len(epoch_records)
    step_fraction = (last_step["step"] / last_step["steps"]) if last_step and last_step["epoch"] >= done_epochs else 0.0
    return {
        "status": run.status().get("status"), "epochs": epochs, "epochs_done": done_epochs,
        "fraction": min(1.0, (done_epochs + step_fraction) / max(epochs, 1)), "epoch_fraction": step_fraction,
        "step": last_step, "epoch_records": epoch_records,
        "losses": [r["loss"] for r in steps if "loss" in r],
        "val_accuracies": [r["val_accuracy"] for r in epoch_records if "val_accuracy" in r],
    }


# --- the dispatcher ---------------------------------------------------------------------------------------


def dispatcher_pid(runs_dir: str | os.PathLike) -> int | None:
    """The pid of the dispatcher serving ``runs_dir`` (0 while it is still writing it), None when none runs."""
    path = Path(runs_dir) / QUEUE / DISPATCHER_LOCK
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # held for an instant: a starting dispatcher retries
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() and _is_dispatcher(int(text)) else 0
    return None


def _is_dispatcher(pid: int) -> bool:
    """Whether ``pid`` is a dispatcher (not a stale pid a new process now wears)."""
    try:
        return b"core.launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_dispatcher(runs_dir: str | os.PathLike, timeout: float = 30.0) -> bool:
    """Ask the dispatcher to exit (SIGTERM) and wait for it; queued entries stay queued, started runs go on.

    True when no dispatcher runs afterwards.
    """
    deadline = time.monotonic() + timeout
    while (pid := dispatcher_pid(runs_dir)) is not None:
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def serve(runs_dir: str | os.PathLike, every: float = DISPATCH_EVERY_S) -> int:
    """The dispatcher's loop: start queued launches as slots free; return when the queue is empty and nothing it
    started still runs, or on SIGTERM. Returns at once (1) when another dispatcher serves ``runs_dir``."""
    runs_dir = Path(runs_dir)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    (runs_dir / QUEUE).mkdir(parents=True, exist_ok=True)
    lock = open(runs_dir / QUEUE / DISPATCHER_LOCK, "a+")  # noqa: SIM115 - held for the dispatcher's lifetime
    deadline = time.monotonic() + 2.0  # dispatcher_pid() holds the lock shared for an instant: not a dispatcher
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if dispatcher_pid(runs_dir) or time.monotonic() > deadline:
                lock.close()
                return 1
            time.sleep(0.05)
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    children: dict[int, subprocess.Popen] = {}
    try:
        while not stopping:
            with _queue_lock(runs_dir):
                for launch_id, pid in _start_ready(runs_dir, children):
                    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} started {launch_id} as pid {pid}", flush=True)
                children = {pid: child for pid, child in children.items() if child.poll() is None}  # reaps the ended
                if not children and not queued(runs_dir):
                    # let go of the dispatcher lock under the queue lock: a launch either saw this dispatcher
                    # (and its entry was seen above) or sees none and starts a new one
                    _release(lock)
                    return 0
            time.sleep(every)
    finally:
        if not lock.closed:
            _release(lock)
    return 0


def _release(lock) -> None:
    lock.truncate(0)  # no stale pid for the next reader
    lock.close()


@contextmanager
def _queue_lock(runs_dir: str | os.PathLike) -> Iterator[None]:
    """Exclusive access to the queue and the slots: read the queue, start what fits, write its marker."""
    folder = Path(runs_dir) / QUEUE
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / QUEUE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _start_ready(runs_dir: Path, children: dict[int, subprocess.Popen] | None = None) -> list[tuple[str, int]]:
    """Under the queue lock: start queue heads while a slot is free (strict order: the head waits, so do the rest)."""
    started = []
    entries = queued(runs_dir)
    count = gpu_count() if entries else 0
    for entry in entries:
        running = activities(runs_dir)
        busy = {index for activity in running for index in activity.gpus} if count else {a.pid for a in running}
        devices = assign_devices(entry.gpus, count, busy)
        if devices is None:
            break
        try:
            info = json.loads(entry.path.read_text())
        except (OSError, ValueError):
            continue
        process = _start(entry.arguments, runs_dir, devices, info.get("env", {}))
        entry.path.unlink(missing_ok=True)
        if children is not None:
            children[process.pid] = process
        started.append((entry.id, process.pid))
    return started


def _start(arguments: list[str], runs_dir: Path, devices: tuple[int, ...], environment: dict) -> subprocess.Popen:
    """Start one launch in its own session, logging to ``.launches/``, and write its marker."""
    launches = runs_dir / LAUNCHES
    launches.mkdir(parents=True, exist_ok=True)
    command = train_command(arguments, runs_dir, len(devices))
    # the launch's own user or none: never the one of whoever started the dashboard or the dispatcher
    env = {**{k: v for k, v in os.environ.items() if k != LAUNCHED_BY}, **environment, "PYTHONUNBUFFERED": "1"}
    if devices:  # slots index the usable GPUs: this process's own CUDA_VISIBLE_DEVICES entries, or the indices
        usable = visible_gpus()
        env["CUDA_VISIBLE_DEVICES"] = ",".join(usable[index] if index < len(usable) else str(index) for index in devices)
    fd, log_path = tempfile.mkstemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), suffix=".log", dir=launches)  # unique per launch
    log = os.fdopen(fd, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               start_new_session=True, env=env)
    log.close()
    atomic_write_json(launches / f"{process.pid}.json", {"pid": process.pid, "command": command, "started": time.time(),
                                                         "log": log_path, "gpus": list(devices),
                                                         "user": environment.get(LAUNCHED_BY)})
    return process


def _ensure_dispatcher(runs_dir: Path) -> None:
    """Under the queue lock: start a detached dispatcher unless one holds the dispatcher lock."""
    if dispatcher_pid(runs_dir) is not None:
        return
    log = open(runs_dir / QUEUE / DISPATCHER_LOG, "ab")  # noqa: SIM115 - the dispatcher owns it
    # its own session: it outlives the dashboard that started it; a second one started in a race exits at once
    subprocess.Popen([sys.executable, "-m", "core.launcher", "--runs-dir", str(runs_dir)], cwd=REPO, stdout=log,
                     stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.launcher",
                                     description="Serve the launch queue of a runs folder until it is empty.")
    parser.add_argument("--runs-dir", required=True, help="the runs folder whose .queue/ to serve")
    return serve(parser.parse_args(argv).runs_dir)


if __name__ == "__main__":
    sys.exit(main())
