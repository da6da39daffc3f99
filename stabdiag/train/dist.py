"""torchrun support: detect the environment, init the process group, gather per-rank metrics.

Under torchrun (WORLD_SIZE > 1) we use gloo on CPU and nccl on CUDA, each rank on its own
device, and gather every rank's metric rows to rank 0, which writes them with a rank column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def teardown(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def gather_rows(info: DistInfo, rows: torch.Tensor) -> list[torch.Tensor]:
    """rows (k, M) on every rank -> [rows of rank 0, rank 1, ...] on CPU (one collective)."""
    if not info.enabled:
        return [rows.cpu()]
    out = [torch.empty_like(rows) for _ in range(info.world_size)]
    tdist.all_gather(out, rows)
    return [t.cpu() for t in out]


def any_rank(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True if the flag is set on any rank (so all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())
