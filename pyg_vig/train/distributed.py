"""Data-parallel helpers: process-group set-up from ``torchrun``'s environment, and a sampler
whose position inside an epoch can be restored after a crash.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistInfo", "ResumableSampler", "cleanup_distributed", "init_distributed"]


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by ``torchrun``'s variables, if any.

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; without them this is a single process. The backend is NCCL on CUDA and gloo
    on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(Sampler[int]):
    """Shuffled indices for one rank, reproducible per epoch and restartable mid-epoch.

    Every epoch draws one permutation from ``seed + epoch``, truncated to a whole number of
    global batches; rank ``r`` of ``world_size`` takes every ``world_size``-th index starting at
    ``r``. With a per-rank batch of ``global_batch / world_size``, global batch ``i`` is then
    ``perm[i * global_batch : (i + 1) * global_batch]`` whatever the number of processes, so a
    data-parallel run sees exactly the batches of a single-process run. :meth:`set_epoch` with
    ``start`` skips the samples already consumed in that epoch (for ``--resume``).

    Args:
        num_samples (int): dataset length.
        global_batch (int): samples per optimisation step over all ranks.
        rank (int): this process's rank (default: :obj:`0`).
        world_size (int): number of processes (default: :obj:`1`).
        shuffle (bool): permute each epoch (default: :obj:`True`).
        seed (int): base seed (default: :obj:`0`).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if global_batch % world_size != 0:
            raise ValueError(f"batch size {global_batch} not divisible by {world_size} processes")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start = 0, 0
        self.steps_per_epoch = num_samples // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset of {num_samples} samples is smaller than one batch")

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_step`` batches."""
        self.epoch, self.start = epoch, start_step * (self.global_batch // self.world_size)

    def _indices(self) -> list[int]:
        n = self.steps_per_epoch * self.global_batch
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.num_samples, generator=g)[:n]
        else:
            perm = torch.arange(n)
        return perm[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.steps_per_epoch * self.global_batch // self.world_size - self.start
