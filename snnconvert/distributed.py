"""Multi-process runs under ``torchrun``: one process per device, gloo on CPU, NCCL on GPU.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is the identity of a world of one,
so callers never branch on it. Data is sharded by rank (``indices[rank::world]``), counts are
summed with :func:`all_reduce`, and only rank 0 writes files.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init(device: str) -> str:
    """Join the process group when launched by torchrun; return this process's device.

    CPU runs use gloo; ``cuda`` runs use NCCL with one GPU per local rank (``cuda:LOCAL_RANK``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun job)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` summed (or max-ed) over every process, in place; returned for chaining."""
    if world_size() > 1:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def all_gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (picklable objects, e.g. CPU tensors)."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(indices: list[int]) -> list[int]:
    """This process's share of ``indices``: every ``world``-th element from ``rank``."""
    return indices[rank()::world_size()]


def wrap(model: nn.Module) -> nn.Module:
    """``model`` under DistributedDataParallel when there are several processes (gradients averaged)."""
    if world_size() == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
