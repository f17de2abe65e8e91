"""Multi-process training through torch.distributed, launched by torchrun.

``edgeseg train --nproc-per-node N ...`` re-executes itself under ``torch.distributed.run`` (torchrun's
module) as ``torchrun --standalone --nproc-per-node N -m edgeseg train ...``; several machines use
torchrun directly (``torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT -m edgeseg train ...``).
Inside, :func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and starts the
process group: NCCL on CUDA, gloo on CPU. Only rank 0 writes artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from edgeseg.core.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: ``nccl``/``gloo`` when torchrun launched this process (even as its only process), else None
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group is running: DDP, sharded validation and the collectives go through it."""
        return self.backend is not None


def setup(device_name: str) -> tuple[DistContext, torch.device]:
    """The process's rank and device; starts the process group when torchrun launched it. One process under
    torchrun (``--nproc-per-node 1``) also gets a process group and DDP: the same code path as N processes,
    which is how a one-GPU machine checks that NCCL works before a multi-GPU job."""
    from edgeseg.core.device import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ:
        if world > 1:
            raise UsageError(f"WORLD_SIZE={world} but no RANK: start several processes with torchrun "
                             f"(edgeseg train --nproc-per-node N)")
        return DistContext(), pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local, str(dist.get_backend())), device


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place); a no-op in one process."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(ctx: DistContext, obj):
    """Rank 0's ``obj`` on every rank (e.g. an error message, so all ranks stop together)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def per_rank_batch(global_batch: int, world: int) -> int:
    if global_batch % world:
        raise UsageError(f"--batch-size {global_batch} does not divide across {world} processes; use a multiple "
                         f"of {world} (the batch size is the global batch over all processes)")
    return global_batch // world


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run ``edgeseg`` with ``argv`` under torchrun with ``nproc`` processes on this machine."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "edgeseg", *argv]
    return subprocess.call(cmd)


def relaunch(nproc: int, argv: Sequence[str], global_batch: int) -> int:
    """``edgeseg train ... --nproc-per-node N``: the same command line without that flag, under torchrun with
    ``nproc`` processes; a batch that does not divide across them is refused before any process starts."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {nproc}")
    per_rank_batch(global_batch, nproc)
    argv = list(argv)
    i = next(k for k, v in enumerate(argv) if v.startswith("--nproc-per-node"))
    del argv[i: i + (1 if "=" in argv[i] else 2)]
    return launch(nproc, argv)
