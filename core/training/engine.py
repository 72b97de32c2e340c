"""The one training engine every method shares. It reads top to bottom:

resolve data -> statistics -> model -> optimiser -> (resume) -> epochs of
[train steps -> validation -> checkpoints] -> test of the best checkpoint.

Determinism: every epoch reseeds all RNGs (and the data order) from
``(seed, epoch)``, so a run resumed at an epoch boundary replays exactly what an
unbroken run does. Checkpoints are written at every epoch end.

Faults: a non-finite loss stops the run or skips the step (``config.nonfinite``, see
:class:`NonFiniteGuard`); a failed write (disk full, read-only folder) fails the run with
the previous checkpoint intact; SIGTERM cancels. Each ending is recorded in ``status.json``.

A method supplies the model, its loss and its schedules (:class:`core.methods.Method`);
the engine trains ``model`` and checkpoints ``method.deployable(model)`` (for
students: the masked student without its decoders or teacher). Under ``torchrun``
the model is wrapped in DistributedDataParallel (:mod:`core.training.distributed`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from core.checkpoint import (
    TRAINER_STATE,
    load_checkpoint,
    load_state_into,
    load_trainer_state,
    save_checkpoint,
    save_trainer_state,
)
from core.config import OPTIMIZERS, TrainConfig, check_domains
from core.data.datasets import DatasetSplits, Sample, resolve_dataset, subsample
from core.data.images import (
    ImageDataset,
    add_reasons,
    collate_skipping,
    dataset_statistics,
    eval_transform,
    train_transform,
)
from core.evaluation import ood as ood_module
from core.evaluation.evaluate import store_predictions
from core.evaluation.metrics import classification_metrics, per_source_accuracy, predict
from core.evaluation.report import build_report
from core.io import WriteError, cache_dir, pause_point
from core.methods import Method, create_method
from core.models.registry import ARCHITECTURES
from core.pruning.flops import profile_model
from core.runs import Run, RunBusy, default_runs_dir, find_run, history_entry
from core.training import distributed
from core.training.distributed import default_device
from core.training.events import EventLog

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    status: str
    test: dict
    stopped_early: int | None = None  # the last epoch trained, when early stopping ended the run
    already_finished: bool = False  # a resume that found the run finished: nothing was trained or written


class Cancelled(Exception):
    """Raised inside the loop when the run receives SIGTERM (the dashboard's Cancel)."""


NO_STEP = 2**62  # the device-side marker's "no non-finite loss since the last check"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or Inf; the message says where and what was kept."""


class NonFiniteGuard:
    """Watches the training loss for NaN/Inf (``config.nonfinite``).

    - ``stop``: the step of the first non-finite loss is kept *on the device* and read at log
      steps and at the end of each epoch, before validation and checkpoints, so it adds no
      host sync per step on a GPU. The run then stops with its last good checkpoint on disk;
      the few steps after the bad one change only in-memory weights, which are never saved.
    - ``skip``: the flag must be known before the update, so it is read every step (one host
      sync; under AMP the GradScaler already syncs once per step), and that step makes no
      update. ``nonfinite_max_skips`` such steps in a row stop the run.

    Under DDP the flags are reduced over the ranks, so every rank skips or stops together.
    """

    def __init__(self, config: TrainConfig, device: torch.device, context: distributed.Context, consecutive: int = 0):
        self.mode, self.max_skips, self.context = config.nonfinite, config.nonfinite_max_skips, context
        self.first_bad = torch.full((), NO_STEP, dtype=torch.long, device=device)
        self.consecutive = consecutive  # non-finite steps in a row (skip), carried across epochs and resumes
        self.skipped = 0  # steps skipped in the current epoch

    def skip_step(self, loss: torch.Tensor, epoch: int, step: int) -> bool:
        """Whether the step (1-based) that gave ``loss`` must make no update; in stop mode it is only noted."""
        finite = torch.isfinite(loss.detach())
        if self.mode == "stop":
            self.first_bad = torch.minimum(self.first_bad, torch.where(finite, NO_STEP, step))
            return False
        if bool(distributed.all_min(finite.long(), self.context)):
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive > self.max_skips:
            raise NonFiniteLoss(f"non-finite loss in {self.consecutive} steps in a row (the last at epoch {epoch + 1} "
                                f"step {step}): the run stopped; {self._kept(epoch)}")
        return True

    def check(self, epoch: int) -> None:
        """Stop mode: raise if a step since the last check had a non-finite loss (every rank calls this together)."""
        if self.mode != "stop":
            return
        first = int(distributed.all_min(self.first_bad, self.context))
        if first != NO_STEP:
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1} step {first}: the run stopped; {self._kept(epoch)}; "
                                "lower the learning rate, or train with --nonfinite skip to skip such steps")

    @staticmethod
    def _kept(epoch: int) -> str:
        # checkpoints are written at every epoch end, so the last good one is that of the previous epoch
        return f"its last good checkpoint (epoch {epoch}) is kept" if epoch else "no epoch had finished, so there is no checkpoint"




def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed python, numpy and torch for ``epoch``; return the data-order generator."""
    epoch_seed = seed * 100_003 + epoch
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    torch.manual_seed(epoch_seed)
    return torch.Generator().manual_seed(epoch_seed)


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)


def make_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    """The configured optimiser, as one fused kernel per step.

    PyTorch's default per-parameter loop costs a ResNet-50's Adam step 86 ms on one CPU
    thread (15% of a 64 px training step); the fused kernel 14 ms (SGD: 18 -> 9 ms), the
    same update up to float rounding.
    """
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    if config.optimizer == "adamax":  # the Pearson authors' code's, with its eps (no fused kernel: foreach)
        return torch.optim.Adamax(parameters, lr=config.lr, weight_decay=config.weight_decay, eps=1e-7, foreach=True)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True)
    raise ValueError(f"unknown optimizer '{config.optimizer}'; choose from {', '.join(OPTIMIZERS)}")


def make_scheduler(config: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs))
    if config.scheduler == "warmup-cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: warmup_cosine(epoch, config.warmup_epochs, config.epochs))
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=0.1)
    if config.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"unknown scheduler '{config.scheduler}'; choose cosine, warmup-cosine, step or none")


def warmup_cosine(epoch: int, warmup: int, epochs: int) -> float:
    """The lr factor of epoch ``e``: ``(e+1)/(W+1)`` for ``e < W``, then ``(1 + cos(pi (e-W)/(E-W))) / 2``.

    The ramp never trains at lr 0 and reaches the full lr at epoch ``W``; with ``W = 0``
    this is exactly CosineAnnealingLR(T_max=E).
    """
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))


def _num_workers(config: TrainConfig, device: torch.device) -> int:
    if config.num_workers >= 0:
        return config.num_workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 1


def _raise_cancelled(signum, frame):
    raise Cancelled(f"received signal {signum}")


def _check_config(config: TrainConfig, method: Method) -> DatasetSplits:
    """Fail on bad input before any work (and, for new runs, before a run directory exists)."""
    check_domains(config)
    ARCHITECTURES.lookup(config.arch)  # an unknown one is refused, with the choices
    dataset = resolve_dataset(config.data, config.data_root)
    for split in ("train", "val"):  # a test split is optional: without one the run ends without a test
        dataset.split(split)
    if dataset.splits["test"]:
        dataset.split("test")  # one declared with a single class is refused now, not after training
    method.check(config)
    return dataset


def train(config: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          method: Method | None = None) -> TrainResult:
    """Train ``config`` in a new run directory, or continue the run at ``resume``.

    ``method``: the run's method object (default: :func:`core.methods.create_method` of the config),
    its options bound and checked once.

    The run is claimed (:meth:`core.runs.Run.claim`) before its status is read and held until the end: a second
    process resuming it is refused (:class:`core.runs.RunBusy`), and resuming a finished run changes nothing.
    """
    if resume is not None:
        config = TrainConfig.from_dict(Run.open(resume).config())
    assert config is not None, "train() needs a config or a run to resume"
    method = method or create_method(config)
    if method.config is not config or method.name != config.method:
        raise ValueError(f"the {method.name} method object was made for another config than this {config.method} run's")
    dataset = _check_config(config, method) if resume is None else None  # a new run: refused before anything is written
    context, device = distributed.setup(default_device(config.device))
    run = None
    try:
        # "finished" is final, so it is read before the claim too: two resumes of a finished run both say so
        finished = _finished(Run.open(resume), context) if resume is not None else None
        if finished is None:
            run = _claimed_run(config, resume, context)
            finished = _finished(run, context) if resume is not None else None
        if finished is not None:
            log.info("%s has already finished: nothing to resume (its best checkpoint: %s)", finished.run_dir,
                     finished.checkpoint)
            return finished
        if dataset is None:
            dataset = _check_config(config, method)
        return _train_guarded(run, config, method, dataset, resume is not None, progress, context, device)
    finally:
        if run is not None:
            run.release()
        distributed.cleanup(context)


def _finished(run: Run, context: distributed.Context) -> TrainResult | None:
    """Rank 0's answer to "has this run finished?", on every rank, as the result of a resume that changes nothing."""
    finished = distributed.broadcast(_reused(run) if context.is_main else None, context)
    if finished is not None:
        finished.already_finished = True
    return finished


def _claimed_run(config: TrainConfig, resume: str | Path | None, context: distributed.Context) -> Run:
    """The run this process trains, claimed by rank 0 (the other ranks follow it): the one at ``resume``, or a new
    one. Every rank raises :class:`core.runs.RunBusy` when another process holds it."""
    refusal, run_dir = None, None
    if context.is_main:
        run = Run.open(resume) if resume is not None else Run.create(config.runs_dir or default_runs_dir(), config.method,
                                                                      config.data)
        try:
            run.claim()
            if resume is None:
                run.write_config(config.to_dict())
        except RunBusy as error:
            refusal = str(error)
        run_dir = run.dir
    refusal, run_dir = distributed.broadcast((refusal, run_dir), context)
    if refusal is not None:
        raise RunBusy(refusal)
    return run if context.is_main else Run.open(run_dir)


def train_once(config: TrainConfig, progress: bool = True) -> TrainResult:
    """``config`` trained exactly once under its runs directory: a finished run of the same config is
    reused, an interrupted, cancelled or failed one is resumed, else a new run starts.

    The config is completed first as ``train`` would (e.g. a student's default teacher), so it
    compares equal to the ``config.json`` of the run it wrote. A run of it still going in another
    process is an error, not a second copy.
    """
    completed, method, run = _earlier_run(config)
    if run is None:
        return train(completed, progress=progress, method=method)
    finished = _reused(run)
    if finished is not None:
        log.info("reusing the finished run %s", run.dir)
        return finished
    log.info("resuming the %s run %s", run.status().get("status"), run.dir)
    return train(resume=run.dir, progress=progress)  # claims it: a run another process trains is refused there


def finished_result(config: TrainConfig) -> TrainResult | None:
    """The result of the finished run of ``config`` that :func:`train_once` would reuse, or None: a job engine skips
    such a config instead of starting a process only to find it done."""
    _, _, run = _earlier_run(config)
    return None if run is None else _reused(run)


def _earlier_run(config: TrainConfig) -> tuple[TrainConfig, Method, Run | None]:
    """``config`` completed and checked as ``train`` would, its method object, and the newest run of it (or None)."""

    completed = copy.deepcopy(config)
    method = create_method(completed)
    _check_config(completed, method)
    return completed, method, find_run(completed.runs_dir or default_runs_dir(), completed.to_dict())


def _reused(run: Run) -> TrainResult | None:
    status = run.status()
    if status.get("status") == "finished" and run.best_checkpoint.is_file():
        return TrainResult(run.dir, run.best_checkpoint, "finished", status.get("test", {}), status.get("stopped_early"))
    return None


def _train_guarded(run: Run, config: TrainConfig, method: Method, dataset: DatasetSplits, resuming: bool, progress: bool,
                   context: distributed.Context, device: torch.device) -> TrainResult:
    """``_train`` with the run's status kept: running, then finished, cancelled or failed (rank 0 writes)."""
    # SIGTERM (the dashboard's Cancel) ends the run cleanly; handlers exist only in the main thread
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _raise_cancelled) if in_main_thread else None
    main = context.is_main
    if main:
        run.set_status("running")
    try:
        result = _train(run, config, method, dataset, resuming, progress and main, context, device)
    except (Cancelled, KeyboardInterrupt, SystemExit) as error:  # SystemExit: a job engine's pre-emption handler
        if main:
            _record_end(run, "cancelled", f"cancelled: {error or type(error).__name__}")
        raise
    except WriteError as error:  # disk full, read-only folder: say how to go on
        failure = WriteError(error.errno, f"{error}; free space (or make the folder writable), then continue with "
                                          f"`python -m core train --resume {run.dir}`")
        if main:
            _record_end(run, "failed", f"failed: {failure}", error=f"WriteError: {failure}")
        raise failure from error
    except BaseException as error:
        if context.enabled and distributed.is_peer_failure(error):  # another rank died or hung: say so, and how to go on
            detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            failure = distributed.PeerFailure(
                f"rank {context.rank}: another process of this {context.world_size}-process job died or stopped answering "
                f"(within $CORE_DIST_TIMEOUT = {distributed.timeout_seconds():g} s): {detail}; continue with "
                f"`torchrun --nproc_per_node={context.world_size} -m core train --resume {run.dir}`")
            if main:
                _record_end(run, "failed", f"failed: {failure}", error=f"PeerFailure: {failure}")
            raise failure from error
        if main:
            _record_end(run, "failed", f"failed: {type(error).__name__}: {error}", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
    if main:
        run.set_status("finished", test=result.test, **({"stopped_early": result.stopped_early} if result.stopped_early else {}))
    return result


def _record_end(run: Run, status: str, message: str, **extra) -> None:
    """Record and log how a run ended; when the disk refuses even that, the error itself must still reach the user."""
    try:
        run.set_status(status, **extra)
    except OSError as error:
        print(f"warning: could not record status {status!r} in {run.dir} ({error})", file=sys.stderr)
    try:
        run.log(message)
    except OSError:
        pass  # the status (or the warning above) already says it


def _train(run: Run, config: TrainConfig, method: Method, dataset: DatasetSplits, resuming: bool, progress: bool,
           context: distributed.Context, device: torch.device) -> TrainResult:
    """The loop, top to bottom: set up (data, model, optimiser, the resume point), then each epoch's steps, then
    (rank 0) its validation and checkpoints, then the test of the best checkpoint. Under torchrun every rank trains;
    rank 0 alone validates, writes and tests, and the others wait for it (:mod:`core.training.distributed`)."""
    loop = _Loop(run, config, method, dataset, resuming, progress, context, device)
    for epoch in range(loop.start_epoch, config.epochs if loop.stopped_early is None else loop.start_epoch):
        trained = loop.train_epoch(epoch)
        if context.is_main:
            loop.validate_and_checkpoint(epoch, trained)
        distributed.barrier(context)  # the other ranks wait for rank 0's checkpoints
        if _stop_early(config, loop.stale_epochs if context.is_main else None, context):
            loop.stop_early(epoch)
            break
    if not context.is_main:  # rank 0 tests the best checkpoint and shares the result
        return TrainResult(run.dir, run.best_checkpoint, "finished", distributed.broadcast(None, context))
    test_record = loop.final_test()
    distributed.broadcast(test_record, context)
    return TrainResult(run.dir, run.best_checkpoint, "finished", test_record, loop.stopped_early)


@dataclass
class _EpochTrained:
    """What one epoch's steps leave for its record: images seen, the loss and each loss term summed (on the device),
    the seconds it took, and whether the DDP replicas still agree."""

    seen: int
    loss_sum: torch.Tensor
    loss_count: int
    term_sums: dict[str, torch.Tensor]
    seconds: float
    in_sync: bool


class _Loop:
    """One run's training state, built in the order a run needs it (data, statistics, model, optimiser, resume), and
    the loop's phases: :meth:`train_epoch`, :meth:`validate_and_checkpoint`, :meth:`final_test`."""

    def __init__(self, run: Run, config: TrainConfig, method: Method, dataset: DatasetSplits, resuming: bool,
                 progress: bool, context: distributed.Context, device: torch.device) -> None:
        self.run, self.config, self.method, self.dataset = run, config, method, dataset
        self.progress, self.context, self.device, self.main = progress, context, device, context.is_main
        if self.main:
            run.write_environment(str(device) + (f" x {context.world_size} processes" if context.enabled else ""))
            run.log(f"{'resuming' if resuming else 'starting'} {config.method} on {config.data} ({device}); "
                    + "; ".join(dataset.describe(split) for split in ("train", "val", "test"))
                    + "".join(f"; left out: {count} {reason}" for reason, count in dataset.dropped_reasons.items()))
        self._data()
        self._model()
        self.start_epoch, self.best_accuracy, self.best_val_loss = 0, -1.0, math.inf
        self.stale_epochs, self.stopped_early = 0, None  # epochs since the watched validation metric last improved
        nonfinite_in_a_row = self._resume(resuming)
        self.history = []  # the per-epoch records every checkpoint header carries (the Training curves page reads them)
        if self.main:
            run.truncate_metrics(from_epoch=self.start_epoch)
            self.history = [history_entry(record) for record in run.metrics("epoch")]
        # DDP broadcasts rank 0's weights here, so every rank starts (and stays) identical
        self.trained = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None) \
            if context.enabled else self.model
        self.header = {
            "method": config.method, "model": method.model_spec(config, self.model), "image_size": config.image_size,
            "normalization": {"mean": list(self.normalization.mean), "std": list(self.normalization.std)},
            "dataset": dataset.name, "data_root": config.data_root, "params": self.cost["params"],
            "macs": self.cost["macs"], "config": config.to_dict(),
        }
        self.shard = DistributedSampler(self.train_set, context.world_size, context.rank, shuffle=True,
                                        seed=config.seed) if context.enabled else None
        self.steps_per_epoch = -(-len(self.train_set) // (config.batch_size * context.world_size))
        self.skipped_total, self.skipped_reasons = 0, {}
        self.guard = NonFiniteGuard(config, device, context, nonfinite_in_a_row)
        self.events = EventLog(run.dir, self.steps_per_epoch, purge_epoch=self.start_epoch) if self.main else None

    def _data(self) -> None:
        """The splits (each subsampled as the config says), the normalisation and the transforms."""
        config, dataset = self.config, self.dataset
        self.train_samples = subsample(dataset.split("train"), config.max_train_samples)
        self.val_samples = subsample(dataset.split("val"), config.max_eval_samples)
        self.test_samples = subsample(dataset.splits["test"], config.max_eval_samples)
        normalization = self.method.normalization(config)  # a transfer keeps its source's; else the train split's own
        if normalization is None:
            if self.main:  # rank 0 computes (and caches) the statistics; the others then read the cache
                dataset_statistics(dataset.split("train"), config.image_size, cache_dir(), self.progress)
            distributed.barrier(self.context)
            normalization = dataset_statistics(dataset.split("train"), config.image_size, cache_dir(), self.progress)
        self.normalization = normalization
        self.train_set = ImageDataset(self.train_samples, train_transform(config.image_size, normalization, config.augment))
        self.evaluation = eval_transform(config.image_size, normalization)
        self.workers = _num_workers(config, self.device)

    def _model(self) -> None:
        """The method's model (seeded), its cost, and the optimiser, schedule and gradient scaler."""
        config, device = self.config, self.device
        torch.manual_seed(config.seed)
        model = self.method.build(config)
        self.cost = profile_model(self.method.deployable(model), config.image_size)
        model = model.to(device)
        self.use_amp = config.amp and device.type == "cuda"
        if config.channels_last:  # NHWC: faster on CUDA and on the CPU alike (bench train-step)
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = make_optimizer(config, self.method.parameter_groups(model, config))
        self.scheduler = make_scheduler(config, self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def _resume(self, resuming: bool) -> int:
        """Continue from the trainer state of a killed run (weights, optimiser, schedule, the loop's counters);
        returns the non-finite steps in a row it had seen."""
        run = self.run
        if resuming and self.main:
            removed = run.remove_temporaries()  # a kill mid-write leaves its temporary behind
            if removed:
                run.log(f"removed {len(removed)} unfinished temporary file(s) of the killed process")
        if not (resuming and (run.dir / TRAINER_STATE).is_file()):
            return 0
        trainer = load_trainer_state(run.dir / TRAINER_STATE)
        load_state_into(self.model, trainer["model"], str(run.dir / TRAINER_STATE))
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.scaler.load_state_dict(trainer["scaler"])
        self.start_epoch, self.best_accuracy = int(trainer["epoch"]), float(trainer["best_accuracy"])
        self.best_val_loss = float(trainer.get("best_val_loss", math.inf))
        self.stale_epochs = int(trainer.get("stale_epochs", 0))
        if self.main:
            run.log(f"resumed after epoch {self.start_epoch}")
        if self.start_epoch and _stop_early(self.config, self.stale_epochs, self.context):
            self.stopped_early = self.start_epoch  # killed between the last checkpoint and the stop: straight to the test
        return int(trainer.get("nonfinite_in_a_row", 0))

    def log(self, record: dict) -> None:
        """A metrics record into metrics.jsonl (its one home) and into the TensorBoard events."""
        self.run.append_metrics(record)
        if self.events is not None:
            self.events.record(record)

    def train_epoch(self, epoch: int) -> _EpochTrained:
        """One epoch's steps (every rank), reseeded from ``(seed, epoch)``; then the non-finite check and the
        schedule's step."""
        config, device, guard = self.config, self.device, self.guard
        generator = seed_epoch(config.seed, epoch)
        guard.skipped = 0
        self.method.on_epoch_start(self.model, epoch, config)
        if self.shard is not None:
            self.shard.set_epoch(epoch)
        loader = DataLoader(self.train_set, batch_size=config.batch_size, shuffle=self.shard is None, sampler=self.shard,
                            generator=generator, num_workers=self.workers, collate_fn=collate_skipping,
                            worker_init_fn=_seed_worker, drop_last=False, pin_memory=device.type == "cuda")
        self.model.train()
        started, seen, loss_sum, loss_count = time.perf_counter(), 0, torch.zeros((), device=device), 0
        term_sums: dict[str, torch.Tensor] = {}  # each loss term summed over the epoch, on the device (no sync per step)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not self.progress, leave=False)
        for step, batch in enumerate(bar):
            self.skipped_total += batch["skipped"]
            add_reasons(self.skipped_reasons, batch["skipped_reasons"])
            if batch["images"] is None:
                continue
            loss, terms, labels = self._step(batch, epoch, step)
            if loss is None:
                continue
            seen += len(labels) * self.context.world_size
            loss_sum += loss.detach() * len(labels)
            for name, value in terms.items():
                term_sums[name] = term_sums.get(name, 0) + torch.as_tensor(value).detach().float() * len(labels)
            loss_count += len(labels)
            log_step = (step + 1) % config.log_every == 0 or step + 1 == self.steps_per_epoch
            if log_step:
                guard.check(epoch)  # before the loss is logged; every rank takes part
            if self.main and log_step:
                record = {"type": "step", "epoch": epoch, "step": step + 1, "steps": self.steps_per_epoch,
                          "loss": float(loss.detach()), **{k: float(v) for k, v in terms.items()},
                          "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": seen / (time.perf_counter() - started)}
                self.log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
        guard.check(epoch)  # before validation and checkpoints: weights a non-finite loss touched are never saved
        self.scheduler.step()
        seconds = time.perf_counter() - started
        in_sync = distributed.replicas_identical(self.model, self.context)  # a collective: every rank takes part
        return _EpochTrained(seen, loss_sum, loss_count, term_sums, seconds, in_sync)

    def _step(self, batch: dict, epoch: int, step: int) -> tuple[torch.Tensor | None, dict, torch.Tensor]:
        """One optimiser step on ``batch``: ``(loss, terms, labels)``, the loss None when the step was skipped."""
        images = batch["images"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, terms = self.method.loss(self.trained, images, labels)
        if self.guard.skip_step(loss, epoch, step + 1):
            return None, terms, labels
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        pause_point("step")
        return loss, terms, labels

    def validate_and_checkpoint(self, epoch: int, trained: _EpochTrained) -> None:
        """Rank 0: validate, record the epoch, and write last (and best) and the trainer state, in that order."""
        config, method, run = self.config, self.method, self.run
        deployable = method.deployable(self.model)
        val = predict(deployable, self.val_samples, self.evaluation, config.batch_size * 2, self.device, self.workers,
                      self.progress, method.predict_logits, desc="validate")
        val_metrics = classification_metrics(val.labels, val.probabilities)
        pause_point("validation")
        epoch_record = self._epoch_record(epoch, trained, val, val_metrics)
        summary = method.epoch_summary(self.model)
        epoch_record.update(summary)
        self.header.update(method.header_extras(self.model, config, summary))
        self.history.append(history_entry(epoch_record))
        self.header["history"] = self.history
        self.events.keep_probabilities(method.keep_probability_by_stage(self.model), epoch)
        improved = val_metrics["accuracy"] > self.best_accuracy  # the best checkpoint is the best validation accuracy's
        if improved:
            self.best_accuracy = val_metrics["accuracy"]
        watched_improved = improved if config.early_stopping_metric == "accuracy" else val.loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val.loss)
        self.stale_epochs = 0 if watched_improved else self.stale_epochs + 1
        epoch_metrics = {"epoch": epoch + 1, "val_accuracy": val_metrics["accuracy"], "val_auc": val_metrics["auc"]}
        # The trainer state holds the weights too: one atomic file, written last, is the consistent resume
        # point, so a kill anywhere before it repeats this epoch (its metrics records are dropped on resume).
        self.log(epoch_record)
        save_checkpoint(run.last_checkpoint, deployable, {**self.header, "metrics": epoch_metrics})
        if improved:
            save_checkpoint(run.best_checkpoint, deployable, {**self.header, "metrics": epoch_metrics})
        save_trainer_state(run.dir / TRAINER_STATE, {
            "epoch": epoch + 1, "best_accuracy": self.best_accuracy, "best_val_loss": self.best_val_loss,
            "stale_epochs": self.stale_epochs, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "nonfinite_in_a_row": self.guard.consecutive,
        })
        run.log(f"epoch {epoch + 1}/{config.epochs}: train loss {epoch_record['train_loss']:.4f}, "
                f"val acc {val_metrics['accuracy']:.4f}, val auc {val_metrics['auc']:.4f}, "
                f"{epoch_record['images_per_s']:.1f} img/s")
        if self.progress:
            pruned = f" active filters {summary['active_fraction']:.3f}" if "active_fraction" in summary else ""
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {epoch_record['train_loss']:.4f} "
                       f"val acc {val_metrics['accuracy']:.4f} auc {val_metrics['auc']:.4f}{pruned}", file=sys.stderr)

    def _epoch_record(self, epoch: int, trained: _EpochTrained, val, val_metrics: dict) -> dict:
        """The epoch's metrics record: the training loss and terms, validation, throughput, what was skipped."""
        count = max(trained.loss_count, 1)
        record = {
            "type": "epoch", "epoch": epoch, "epochs": self.config.epochs,
            "train_loss": float(trained.loss_sum) / count,
            **{f"train_{name}": float(total) / count for name, total in trained.term_sums.items()
               if name not in ("loss", "seconds")},
            "val_loss": val.loss, "val_accuracy": val_metrics["accuracy"], "val_auc": val_metrics["auc"],
            "train_seconds": round(trained.seconds, 2), "images_per_s": trained.seen / max(trained.seconds, 1e-9),
            "skipped": self.skipped_total + val.skipped,
            "skipped_reasons": add_reasons(dict(self.skipped_reasons), val.skipped_reasons),
            **({"nonfinite_skipped": self.guard.skipped} if self.config.nonfinite == "skip" else {}),
        }
        if self.context.enabled:
            record["replicas_identical"] = trained.in_sync
            if not trained.in_sync:
                self.run.log("warning: DDP replicas diverged (parameters differ between ranks)")
        return record

    def stop_early(self, epoch: int) -> None:
        self.stopped_early = epoch + 1
        if self.main:
            self.run.log(f"early stopping after epoch {epoch + 1}: no better validation {self.config.early_stopping_metric} "
                         f"for {self.stale_epochs} epochs")

    def final_test(self) -> dict:
        """Rank 0: the best checkpoint's out-of-distribution model, then its test; the checkpoint rewritten with
        both, the run's report written. Returns the test record."""
        run, config, dataset = self.run, self.config, self.dataset
        state, best_header = load_checkpoint(run.best_checkpoint)
        deployable = self.method.deployable(self.model)
        load_state_into(deployable, state, str(run.best_checkpoint))
        ood = _fit_ood(run, self.method, deployable, self.train_samples, self.val_samples, self.test_samples,
                       self.evaluation, self.device, self.progress)
        ood_header, ood_tensors = ({}, None) if ood is None else ({"ood": ood.record()}, ood.tensors())
        if not self.test_samples:  # the data declares no test split: nothing to test on, and the run says so
            test_record = {"type": "test", "split": "test", "n": 0, "skipped": 0, "skipped_reasons": {},
                           "accuracy": None, "auc": None, "eer": None, "note": dataset.describe("test")}
            self.log(test_record)
            self.events.close()
            run.log(f"no test: {dataset.describe('test')}")
            save_checkpoint(run.best_checkpoint, deployable, {**best_header, **ood_header, "history": self.history},
                            extra=ood_tensors)
            return test_record
        test = predict(deployable, self.test_samples, self.evaluation, config.batch_size * 2, self.device, self.workers,
                       self.progress, self.method.predict_logits, desc="test")
        test_metrics = classification_metrics(test.labels, test.probabilities)
        test_record = {
            "type": "test", "split": "test", "skipped": test.skipped, "skipped_reasons": test.skipped_reasons,
            "images": dataset.describe("test"), **{k: v for k, v in test_metrics.items() if k != "confusion"},
            "confusion": test_metrics["confusion"], "per_source": per_source_accuracy(self.test_samples, test),
            **({"stopped_early": self.stopped_early} if self.stopped_early else {}),
        }
        final_metrics = {**best_header["metrics"], "test_accuracy": test_metrics["accuracy"],
                         "test_auc": test_metrics["auc"], "test_eer": test_metrics["eer"]}
        if ood is not None:
            test_record["ood_test_in_distribution"] = ood.info.get("test_in_distribution")
        self.log(test_record)
        self.events.final_images(test.labels, test.probabilities, best_header.get("pruning"))
        self.events.close()
        save_checkpoint(run.best_checkpoint, deployable,
                        {**best_header, "metrics": final_metrics, **ood_header, "history": self.history}, extra=ood_tensors)
        _report(run, dataset, self.test_samples, test)
        run.log(f"test accuracy {test_metrics['accuracy']:.4f}, auc {test_metrics['auc']:.4f}")
        return test_record


def _fit_ood(run: Run, method: Method, deployable: torch.nn.Module, train_samples: list[Sample], val_samples: list[Sample],
             test_samples: list[Sample], transform, device, progress: bool):
    """The best checkpoint's out-of-distribution model (:mod:`core.evaluation.ood`): fitted on training images,
    calibrated on validation ones, and the share of test images it calls in distribution; None (logged) when the run
    has too few images for it."""

    forward = method.predict_logits
    try:
        ood = ood_module.fit(deployable, train_samples, val_samples, transform, device=str(device), forward=forward,
                             progress=progress)
    except (ValueError, RuntimeError) as error:
        run.log(f"no out-of-distribution model: {error}")
        return None
    if test_samples:
        statistics = ood_module.collect(deployable, subsample(test_samples, ood_module.CALIBRATION_IMAGES), transform,
                                        device=str(device), forward=forward, progress=progress, desc="ood test")
        ood.info["test_in_distribution"] = round(float((ood.score(statistics) <= 1).float().mean()), 4)
    run.log(f"out-of-distribution model: {len(ood.stages)} stages, threshold {ood.threshold:.3g}"
            + (f", test in distribution {ood.info['test_in_distribution']:.3f}" if "test_in_distribution" in ood.info else ""))
    return ood


def _stop_early(config: TrainConfig, stale_epochs: int | None, context: distributed.Context) -> bool:
    """Whether the patience is spent: rank 0 decides (it alone validates) and every rank follows."""
    if config.early_stopping_patience is None:
        return False
    return bool(distributed.broadcast(stale_epochs is not None and stale_epochs >= config.early_stopping_patience, context))


def _report(run: Run, dataset: DatasetSplits, test_samples: list[Sample], test) -> None:
    """Seed the prediction cache with the final test and write the run's own report (``<run>/report``)."""

    try:
        if len(test_samples) == len(dataset.split("test")):
            store_predictions(run.best_checkpoint, test_samples, "test", test, dataset.name)
        build_report([run.dir], run.dir / "report", latency=False, progress=False, png=False)
    except Exception as error:  # noqa: BLE001 - a report must never fail a finished training run
        run.log(f"report skipped: {type(error).__name__}: {error}")
