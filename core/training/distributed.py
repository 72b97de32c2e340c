"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m core train ...``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. Each process trains on its
shard of every epoch (a :class:`DistributedSampler` seeded like the single-process
shuffle), DDP averages the gradients, and rank 0 alone writes the run directory,
validates and checkpoints while the others wait. ``--batch-size`` is per process.
Backends: NCCL on CUDA, gloo on CPU. A collective that waits longer than
``$CORE_DIST_TIMEOUT`` seconds (default 1800) fails the job instead of hanging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


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
        timeout = timedelta(seconds=float(os.environ.get("CORE_DIST_TIMEOUT", "1800")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return context, device


def broadcast(value, context: Context):
    """Rank 0's ``value`` on every rank (any picklable object made by this code, never user data)."""
    if not context.enabled:
        return value
    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


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
