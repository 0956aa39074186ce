"""Shared test helpers (offline, CPU)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from geopeft.data.normalisation import resolve
from geopeft.data.registry import get_dataset
from geopeft.train.loaders import Batched, as_batch
from geopeft.train.preprocess import BatchPreprocess


def preprocessed(
    ds: Any, *, batch_size: int, num_workers: int = 2, kind: str = "train_split"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch of a cache split through the cells' loader (workers, stored dtype) and device preprocessing.

    Returns the concatenated float32 images and int64 masks, scaled, standardised with ``kind`` statistics and
    padded as a cell sees them.
    """
    info = get_dataset(str(ds.header.attrs["dataset"]))
    norm = resolve(
        kind, info.name, ds.bands, scale=info.scale, study=info.study_stats, train_split=ds.header.train_stats()
    )
    prep = BatchPreprocess(norm, pad_to=info.pad_to, ignore_index=info.ignore_index)
    loader = DataLoader(Batched(ds), batch_size=batch_size, num_workers=num_workers, collate_fn=as_batch)
    batches = [prep(b) for b in loader]
    return torch.cat([b["image"] for b in batches]), torch.cat([b["mask"] for b in batches])


def sgd_step(model: nn.Module, seed: int = 1, *, train: bool = True) -> set[str]:
    """One SGD step on random 6-band 32² input with 3 classes; return the names of the parameters it changed.

    ``train=False`` runs the step with the model in eval mode (BatchNorm on its running statistics).
    """
    torch.manual_seed(seed)
    model.train(train)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(2, 6, 32, 32), torch.randint(0, 3, (2, 32, 32))
    nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


#: Narrow decoder widths for shape tests; the number of blocks, levels and pool scales stay the paper's.
NARROW_DECODERS: dict[str, dict[str, object]] = {
    "linear": {},
    "fcn": {"channels": 8},
    "upernet": {"channels": 8},
    "unet": {"channels": (16, 8, 8, 8)},
}
