"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m core train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. Each process trains on its
shard of every epoch (a :class:`DistributedSampler` seeded like the single-process
shuffle), DDP averages the gradients, and rank 0 alone writes the run directory,
validates and checkpoints while the others wait. ``--batch-size`` is per process.
Backends: NCCL on CUDA, gloo on CPU. A collective that waits longer than
``$CORE_DIST_TIMEOUT`` seconds (default 1800) fails the job instead of hanging; when a
rank dies, the others fail at their next collective (gloo: at once, connection reset;
NCCL: at the timeout, with ``TORCH_NCCL_ASYNC_ERROR_HANDLING``, on by default) with a
:class:`PeerFailure`, and the run can be resumed (rank 0 checkpoints every epoch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 1800
# what a broken collective says when another rank died (connection reset) or stopped answering (timed out)
PEER_FAILURE_SIGNS = ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe", "Timed out", "timed out")


class PeerFailure(RuntimeError):
    """Another process of the job died or stopped answering: this one gives up instead of hanging."""


def is_peer_failure(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and any(
        sign in str(error) for sign in PEER_FAILURE_SIGNS))


def timeout_seconds() -> float:
    """``$CORE_DIST_TIMEOUT``: how long a collective may wait for the other ranks."""
    return float(os.environ.get("CORE_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S)))


@dataclass(frozen=True)
class Context:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(), device
    context = Context(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_seconds())
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return context, device


def broadcast(value, context: Context):
    """Rank 0's ``value`` on every rank (any picklable object made by this code, never user data)."""
    if not context.enabled:
        return value
    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_min(value: torch.Tensor, context: Context) -> torch.Tensor:
    """The elementwise minimum of ``value`` over all ranks (a collective: every rank calls it)."""
    if not context.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


def cleanup(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def replicas_identical(model: torch.nn.Module, context: Context) -> bool:
    """Whether every rank holds bit-identical parameters (masks included): one sum per tensor, gathered."""
    if not context.enabled:
        return True
    fingerprint = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.empty_like(fingerprint) for _ in range(context.world_size)]
    dist.all_gather(gathered, fingerprint)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def default_device(requested: str | None = None) -> torch.device:
    """cuda, then mps, then cpu, unless ``requested`` (or, when it is None or "auto", $CORE_DEVICE) names one."""
    if requested in (None, "auto"):  # the config's default is "auto": $CORE_DEVICE still pins the run (as free_gpus reads it)
        requested = os.environ.get("CORE_DEVICE")
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
