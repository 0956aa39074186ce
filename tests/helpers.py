"""Shared test helpers (offline, CPU)."""

from __future__ import annotations

import torch
from torch import nn


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
