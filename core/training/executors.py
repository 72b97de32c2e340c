"""Grids of runs through a job engine (submitit): every job its own process, on this machine or on Slurm.

``train --executor local|slurm`` and ``reproduce --executor local|slurm`` hand their runs to :func:`run_jobs`:

- ``local``: each job is a process of ``submitit.LocalExecutor``, as many at once as there are free GPUs (one GPU
  each), one after another on a machine without a free GPU;
- ``slurm``: each job is a Slurm job, the jobs of one call one job array, with ``ExecutorSettings``'s partition,
  GPUs, CPUs and time limit.

A job (:class:`TrainJob`) trains one config, or a chain of them in order (lth rounds, taylor steps), each through
:func:`core.training.engine.train_once`: a finished run of the same config is reused, a killed, cancelled or failed
one resumed from its last checkpoint. So the same command run again finishes what a kill left and retrains nothing.

Pre-emption and time limits: submitit asks Slurm for ``--signal=USR2@90``, SIGUSR2 90 s before the time limit (and on
pre-emption, where the cluster sends it). Its handler calls :meth:`TrainJob.checkpoint` (the same job, to run again),
requeues the job (``scontrol requeue``) and exits: the run stops with its last epoch's checkpoint and the requeued
job's ``train_once`` resumes it. SIGTERM (Slurm's kill on pre-emption, on a requeue, on ``scancel``) is the engine's
``Cancelled``: the run is recorded cancelled, and the job then leaves without a result rather than with an error, so
that a requeued job (pre-emption with ``PreemptMode=REQUEUE``) runs again and resumes instead of being reported as
failed; after a ``scancel`` the grid reports the job unfinished, and the same command resumes it.

Job folders (submission pickles, each job's stdout and stderr) go to ``<runs_dir>/.submitit/<job id>``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from tqdm.auto import tqdm

from core.config import TrainConfig
from core.training.drivers import DRIVERS
from core.training.engine import Cancelled, TrainResult, finished_result, train_once
from core.training.gpus import assign_devices, busy_gpus, visible_gpus

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm")
SLURM_CLUSTER = "slurm"  # the submitit cluster of ``--executor slurm``; the tests use "debug" (the same jobs, in-process)
JOBS_FOLDER = ".submitit"  # under the runs directory
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the core package (not pip-installed)
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # submitit's local jobs are killed after 2 minutes unless told otherwise
SLURM_TIME_MIN = 24 * 60  # the default --slurm-time
MAX_REQUEUES = 10  # a job that reaches its time limit more often than this stops; the same command resumes it
POLL_SECONDS = 1.0


@dataclasses.dataclass
class ExecutorSettings:
    """Where and how a grid's jobs run (the ``--executor`` flags)."""

    kind: str  # local | slurm
    folder: Path  # submitit's job folders
    slurm_partition: str | None = None
    slurm_gpus: int = 1  # per job; one process trains on one of them
    slurm_time: int = SLURM_TIME_MIN  # minutes
    slurm_cpus: int | None = None  # per job (default: the partition's)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.slurm_gpus < 0 or self.slurm_time < 1 or (self.slurm_cpus is not None and self.slurm_cpus < 1):
            raise ValueError(f"--slurm-gpus >= 0, --slurm-time >= 1 minute and --slurm-cpus >= 1, got {self.slurm_gpus}, "
                             f"{self.slurm_time}, {self.slurm_cpus}")


def slurm_minutes(text: str) -> int:
    """``--slurm-time``: minutes (``90``) or ``HH:MM:SS`` (``1:30:00``), rounded up to whole minutes."""
    try:
        if ":" not in text:
            return int(text)
        hours, minutes, seconds = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"--slurm-time takes minutes (90) or HH:MM:SS (1:30:00), got {text!r}") from None
    return math.ceil(hours * 60 + minutes + seconds / 60)


class TrainJob(submitit.helpers.Checkpointable):
    """One job of a grid: ``config`` trained once, or the chain it starts (``driver``: lth rounds, taylor steps)."""

    def __init__(self, config: TrainConfig, driver: str | None = None, one_shot: bool = False):
        self.config, self.driver, self.one_shot = config, driver, one_shot

    def __repr__(self) -> str:
        return f"{self.config.method} seed {self.config.seed}" + (f" ({self.driver} chain)" if self.driver else "")

    def run(self, train_fn: Callable[[TrainConfig], TrainResult]) -> list[TrainResult]:
        """The job's runs in order, each trained by ``train_fn`` in this process."""
        if self.driver is None:
            return [train_fn(self.config)]
        return DRIVERS[self.driver](self.config, one_shot=self.one_shot, train_fn=train_fn)

    def __call__(self) -> list[TrainResult]:
        """What the job's process does: every run of the job once (a finished one reused, a killed one resumed)."""
        try:
            return self.run(lambda config: train_once(config, progress=False))
        except Cancelled as error:
            if "SLURM_JOB_ID" in os.environ:  # pre-empted, requeued or scancel-ed: no result, so a requeue runs again
                raise SystemExit(f"{error}: the run is cancelled with its last checkpoint; a requeued job resumes it") from error
            raise

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on pre-emption or near the time limit: this job again, whose ``train_once`` finds the
        interrupted run and resumes it from its last epoch (its finished runs are reused)."""
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.driver, self.one_shot))


def run_jobs(jobs: list[TrainJob], settings: ExecutorSettings, progress: bool = True) -> list[list[TrainResult]]:
    """Every job through the job engine, then each job's runs, in the jobs' order; ``progress``: a bar of jobs ended.

    All jobs are waited for; if some did not finish (a failure, a kill), the error names them, and the same
    command finishes them (the finished runs are reused).
    """
    if not jobs:
        return []
    # a job of one config whose run is finished needs no process (a rerun of a grid starts only what is left)
    done = {index: [result] for index, job in enumerate(jobs)
            if job.driver is None and (result := finished_result(job.config)) is not None}
    pending = [job for index, job in enumerate(jobs) if index not in done]
    settings.folder.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(pending), desc=f"{settings.kind} jobs", unit="job", disable=not progress or not pending) as bar:
        run = _run_local if settings.kind == "local" else _run_slurm
        submitted = run(pending, settings, bar) if pending else []
    handles = iter(submitted)
    results, unfinished = [], []
    for index, job in enumerate(jobs):
        if index in done:
            results.append(done[index])
            continue
        handle = next(handles)
        try:
            if settings.kind == "local" and not handle.paths.result_pickle.exists():  # no shared disk to wait for
                raise UncompletedJobError("its process ended without a result (killed?)")
            results.append(handle.result())
        except (FailedJobError, UncompletedJobError) as error:
            unfinished.append(f"{job} (job {handle.job_id}: {_reason(error)}; log {handle.paths.stderr})")
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} of {len(jobs)} jobs did not finish: {'; '.join(unfinished)}. Run the same "
                           "command again: finished runs are reused, the others resume from their last checkpoint")
    return results


def _run_local(jobs: list[TrainJob], settings: ExecutorSettings, bar: tqdm) -> list:
    """One process per job, at most one per free GPU at a time (one at a time without a free GPU)."""
    executor = submitit.LocalExecutor(folder=settings.folder / "%j")
    slots = free_gpus(jobs[0].config.device)  # none: each job sees what this process sees, one at a time
    submitted: list = [None] * len(jobs)
    running: dict[int | None, int] = {}  # slot (None: the CPU) -> index of the job running there
    waiting = list(range(len(jobs)))
    try:
        while waiting or running:
            while waiting and (chosen := assign_devices("one", len(slots), set(running))) is not None:
                slot = chosen[0] if chosen else None
                index = waiting.pop(0)
                executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN,
                                           setup=_job_setup(None if slot is None else slots[slot]))
                submitted[index] = executor.submit(jobs[index])
                running[slot] = index
                log.info("job %d/%d (%s) started: %s%s", index + 1, len(jobs), jobs[index], submitted[index].paths.folder,
                         "" if slot is None else f", GPU {slots[slot]}")
            time.sleep(POLL_SECONDS)
            for slot, index in list(running.items()):
                if submitted[index].done():
                    del running[slot]
                    log.info("job %d/%d (%s) ended", index + 1, len(jobs), jobs[index])
                    bar.update()
    except BaseException:  # Ctrl-C: the local jobs stop too (their runs are recorded cancelled, and resume)
        for index in running.values():
            submitted[index].cancel(check=False)
        raise
    return submitted


def slurm_executor(settings: ExecutorSettings, cluster: str | None = None) -> submitit.AutoExecutor:
    """The submitit executor of ``--executor slurm``: one task per job, with the settings' partition, GPUs, CPUs and
    time limit (``cluster`` "debug" runs the same jobs in this process)."""
    executor = submitit.AutoExecutor(folder=settings.folder / "%j", cluster=cluster or SLURM_CLUSTER,
                                     slurm_max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(name="core-train", timeout_min=settings.slurm_time, tasks_per_node=1, nodes=1,
                               gpus_per_node=settings.slurm_gpus or None, cpus_per_task=settings.slurm_cpus,
                               slurm_partition=settings.slurm_partition, slurm_setup=_job_setup(None)[:1])
    return executor


def _run_slurm(jobs: list[TrainJob], settings: ExecutorSettings, bar: tqdm) -> list:
    executor = slurm_executor(settings)
    with executor.batch():  # one job array
        submitted = [executor.submit(job) for job in jobs]
    log.info("submitted %d Slurm job(s) %s; logs in %s", len(jobs), ", ".join(handle.job_id for handle in submitted),
             settings.folder)
    for index, handle in enumerate(submitted):
        handle.wait()
        log.info("job %d/%d (%s) ended", index + 1, len(jobs), jobs[index])
        bar.update()
    return submitted


def _job_setup(gpu: str | None) -> list[str]:
    """Shell lines run before a job: this source tree on its PYTHONPATH (core is not pip-installed), then which GPU
    a local job sees (submitit's local executor otherwise hides them all)."""
    lines = [f"export PYTHONPATH={shlex.quote(str(SOURCE_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    visible = gpu if gpu is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    lines.append("unset CUDA_VISIBLE_DEVICES" if visible is None else f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}")
    return lines


def free_gpus(device: str | None = "auto") -> list[str]:
    """The GPUs a local grid spreads its jobs over (:mod:`core.training.gpus`): those this process may use, less those
    another process computes on."""
    busy = busy_gpus()
    return [entry for entry in visible_gpus(device) if entry not in busy]


def _reason(error: Exception) -> str:
    """One line of why a job ended without a result."""
    if isinstance(error, FailedJobError):  # its message holds the job's traceback between two dashed lines
        trace = str(error).split("-" * 22)[1].strip().splitlines()
        return trace[-1] if trace else "failed"
    return " ".join(str(error).splitlines()[:2])
