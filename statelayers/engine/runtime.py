"""Where a run executes: the device and the process group (one CPU, one GPU, or many under torchrun / DDP),
moving batches to the device, mixed precision, and keeping the processes' buffers in step."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["Dist", "setup_distributed", "to_device", "autocast_ctx", "sync_buffers"]


@dataclass
class Dist:
    """This process's place in the run: its rank among `world` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """One process (the GPU when there is one), or the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # NCCL carries the GPU tensors (gradients); the evaluation sums and small bookkeeping are CPU tensors, which
        # NCCL alone cannot reduce: gloo takes those
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def to_device(x, device: torch.device):
    """A tensor, or a dict of tensors (sequence batches), or lists / dicts of those (detection batches), on
    `device`."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x.to(device, non_blocking=True)


def autocast_ctx(cfg, device: torch.device):
    """The autocast context of the run's `amp` setting ("none", "bf16", "fp16") on `device`."""
    if cfg.amp == "none":
        return contextlib.nullcontext()
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a GPU; use amp=bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start
    of each forward pass, so after the last training step each process holds its own statistics; without
    this, evaluation and the checkpoint would depend on the rank and the final weight check would fail."""
    if d.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)
