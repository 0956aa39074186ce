"""DataLoaders of a cell: the resumable training loader of one rank and exact evaluation loaders.

Every random choice of the input pipeline is a function of the cell's seed and the epoch: the order
(:class:`~geopeft.train.sampling.TrainSampler`), the D4 element of each sample
(:meth:`geopeft.cache.reader.CacheDataset.set_epoch`), and the base seed of the workers, drawn from the loader's
own generator rather than from torch's global RNG, so that starting an epoch's iterator mid-epoch (a resume) leaves
the global RNG, which dropout uses, exactly where an uninterrupted run has it. Workers seed python's and numpy's
RNGs from their torch seed (:func:`seed_worker`).

Workers read whole batches in the stored dtype (:meth:`~geopeft.cache.reader.CacheDataset.read_batch`, through
:class:`Batched`), so nothing is collated; on CUDA the batches come in pinned memory for a non-blocking copy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geopeft.cache.reader import CacheDataset
from geopeft.train.sampling import BatchLayout, ShardSampler, TrainSampler, epoch_seed

Loader = DataLoader[dict[str, Any]]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed python and numpy from the worker's torch seed (set from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class Batched(Dataset[dict[str, Any]]):
    """A cache split whose DataLoader fetches each batch with one ``read_batch`` call (torch's ``__getitems__``).

    Args:
        ds: the split.
    """

    def __init__(self, ds: CacheDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[i]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        return self.ds.read_batch(indices)


def as_batch(batch: Any) -> Any:
    """``collate_fn`` of :class:`Batched` loaders: what ``read_batch`` returned is already the batch."""
    return batch


def pin_memory(device: torch.device) -> bool:
    """Whether loaders for ``device`` should hand over pinned batches (CUDA only)."""
    return device.type == "cuda"


class TrainLoader:
    """The training micro-batches of one rank, epoch by epoch.

    Args:
        ds: the training split (with augmentation).
        layout: the batch layout (micro-batch size, per-rank share).
        rank: this rank.
        seed: the cell's seed.
        num_workers: DataLoader workers (not persistent: each epoch's workers copy the dataset's epoch).
        pin: hand over pinned batches (:func:`pin_memory`).
    """

    def __init__(
        self, ds: CacheDataset, layout: BatchLayout, rank: int, seed: int, num_workers: int, pin: bool = False
    ) -> None:
        self.ds, self.seed = ds, seed
        self.sampler = TrainSampler(len(ds), layout, rank, seed)
        self.generator = torch.Generator()
        self.loader: Loader = DataLoader(
            Batched(ds),
            batch_size=layout.micro_batch,
            sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=as_batch,
            pin_memory=pin,
            worker_init_fn=seed_worker,
            generator=self.generator,
        )

    @property
    def steps(self) -> int:
        """Optimiser steps per epoch."""
        return self.sampler.steps

    def epoch(self, epoch: int, start_step: int = 0) -> Loader:
        """The loader positioned at ``start_step`` of ``epoch`` (earlier batches are never read)."""
        self.sampler.set_epoch(epoch, start_step)
        self.ds.set_epoch(self.seed, epoch)
        self.generator.manual_seed(epoch_seed(self.seed, epoch))
        return self.loader


def eval_loader(
    ds: CacheDataset, batch_size: int, rank: int, world_size: int, num_workers: int, pin: bool = False
) -> Loader:
    """This rank's exact share of ``ds`` (no sample twice, none left out), in batches of ``batch_size``."""
    return DataLoader(
        Batched(ds),
        batch_size=batch_size,
        sampler=ShardSampler(len(ds), rank, world_size),
        num_workers=num_workers,
        collate_fn=as_batch,
        pin_memory=pin,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(0),  # keeps the global RNG out of the workers' base seed
        persistent_workers=num_workers > 0,
    )
