"""Which samples each rank sees: a resumable training order and an exact evaluation split.

Training: the order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, cut into global batches of the
effective batch size (the last incomplete one dropped, as ``drop_last=True``); each rank takes its contiguous
share of every global batch, which the DataLoader cuts into micro-batches. The order therefore does not depend on
how many epochs ran in this process, and a resumed epoch starts at any optimiser step without reading the batches
before it. Evaluation: rank ``r`` of ``W`` takes samples ``r, r + W, ...`` with no padding, so every sample is
counted exactly once whatever the world size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Sampler

from geopeft.errors import CellFailed, ConfigError


@dataclass(frozen=True)
class BatchLayout:
    """How one optimiser step's samples are spread: ranks x accumulation steps x micro-batch.

    Args:
        batch_size: the effective batch (``train.batch_size``): every rank and accumulation step together.
        world_size: number of ranks.
        micro_batch: samples per forward pass on one rank.
    """

    batch_size: int
    world_size: int
    micro_batch: int

    def __post_init__(self) -> None:
        if self.batch_size % self.world_size:
            raise ConfigError(
                f"train.batch_size {self.batch_size} is not divisible by the world size {self.world_size}; "
                "choose a batch size that is a multiple of the number of ranks"
            )
        if self.micro_batch < 1 or self.per_rank % self.micro_batch:
            raise ConfigError(
                f"micro-batch {self.micro_batch} does not divide the per-rank batch {self.per_rank} "
                f"(batch_size {self.batch_size} over {self.world_size} ranks)"
            )

    @classmethod
    def full(cls, batch_size: int, world_size: int) -> BatchLayout:
        """No accumulation: each rank's micro-batch is its whole share."""
        return cls(batch_size, world_size, batch_size // max(world_size, 1))

    @property
    def per_rank(self) -> int:
        """Samples per rank per optimiser step."""
        return self.batch_size // self.world_size

    @property
    def accumulation(self) -> int:
        """Micro-batches accumulated per optimiser step."""
        return self.per_rank // self.micro_batch

    def halved(self) -> BatchLayout:
        """Half the micro-batch, twice the accumulation, the same effective batch (after an out-of-memory error).

        Raises:
            CellFailed: (class ``oom``) the micro-batch is 1 or odd, so it cannot be halved.
        """
        if self.micro_batch < 2 or self.micro_batch % 2:
            raise CellFailed(
                f"out of memory with micro-batch {self.micro_batch}, which cannot be halved further; "
                "use a smaller model or a GPU with more memory",
                reason="oom",
            )
        return replace(self, micro_batch=self.micro_batch // 2)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order, a function of (seed, epoch) only."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % 2**63


class TrainSampler(Sampler[int]):
    """This rank's training indices for one epoch, starting at a given optimiser step.

    Args:
        n: samples in the split.
        layout: the batch layout.
        rank: this rank.
        seed: the cell's seed.
    """

    def __init__(self, n: int, layout: BatchLayout, rank: int, seed: int) -> None:
        if n < layout.batch_size:
            raise ConfigError(
                f"the train split has {n} samples, fewer than batch_size {layout.batch_size}; lower train.batch_size"
            )
        self.n, self.layout, self.rank, self.seed = n, layout, rank, seed
        self.epoch, self.start_step = 1, 0

    @property
    def steps(self) -> int:
        """Optimiser steps per epoch (incomplete global batches are dropped)."""
        return self.n // self.layout.batch_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Choose the epoch (1-based) and the optimiser step to start at."""
        if not 0 <= start_step <= self.steps:
            raise CellFailed(f"resume step {start_step} lies outside epoch {epoch}'s {self.steps} steps")
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
        size, share = self.layout.batch_size, self.layout.per_rank
        for step in range(self.start_step, self.steps):
            first = step * size + self.rank * share
            yield from order[first : first + share].tolist()

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.layout.per_rank


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: an exact split of ``range(n)`` with no padding."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
