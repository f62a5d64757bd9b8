"""Data-parallel training on `torch.distributed`, launched the standard way:

    torchrun --standalone --nproc_per_node=N -m tinylm pretrain ...        (one machine)
    torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT -m tinylm ...

Every rank reads the same seeded order and takes its own part of each global batch (`batch_size` is the
global batch: per-rank micro-batches × ranks × accumulation); gradients are summed across ranks with an
all-reduce, so that a run's result does not depend on how many processes ran it, beyond floating-point
reduction order. Rank 0 alone writes (checkpoints, metrics, results); every rank resumes from the same
checkpoint. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tinylm.process import die_with_parent


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The rank's own GPU when training on CUDA with several ranks on a node."""
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return device


def init() -> Dist:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK), once."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker (in a process group of its own)
        die_with_parent()  # a killed launcher must not leave it training on
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
        atexit.register(_leave)
    return Dist(rank, world, local)


def _leave() -> None:
    """Destroy the process group while the interpreter is still whole: a gloo group left to the
    interpreter's teardown can abort the rank ("terminate called without an active exception",
    pytorch/pytorch#190489; it failed a 2-rank CI test once)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_(tensors: list[torch.Tensor], d: Dist) -> None:
    """Sum tensors across ranks in place, in one flat buffer per call."""
    if d.world <= 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
