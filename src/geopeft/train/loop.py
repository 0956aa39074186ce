"""The inner loops: one training epoch of optimiser steps across ranks, and exact evaluation of a split.

A training step is ``accumulation`` micro-batches on every rank, then one all-reduce of two flags (a non-finite
loss on some rank; a preemption request on some rank), then the optimiser step. All ranks therefore fail together
on a NaN (class ``nan``) and stop together, after the same step, on SIGUSR2.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from geopeft.errors import CellFailed
from geopeft.result import RegionMetrics
from geopeft.train import faults
from geopeft.train.distributed import any_rank
from geopeft.train.metrics import SplitMetrics
from geopeft.train.preprocess import BatchPreprocess
from geopeft.train.sampling import BatchLayout
from geopeft.train.strategy import Strategy

Batch = dict[str, Any]
#: Called with (next step, loss sum, samples) when the ranks agreed to stop; it writes the checkpoint.
OnPreempt = Callable[[int, float, int], None]


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = -1) -> tuple[torch.Tensor, int]:
    """Cross-entropy averaged over labelled pixels; returns (loss, labelled pixel count).

    A batch without labelled pixels gives a zero loss that still carries the graph, where
    ``F.cross_entropy(reduction="mean")`` would return NaN.
    """
    total = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="sum")
    count = int((mask != ignore_index).sum())
    return total / max(count, 1), count


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"``, else nothing (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` on ``device``: a tensor, or every tensor of a (nested) dict such as a batch and its ``metadata``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def nan_failure(loss: float, epoch: int, step: int) -> CellFailed:
    """The failure (class ``nan``) for a non-finite loss."""
    where = f"step {step}" if step >= 0 else "validation"
    return CellFailed(
        f"loss is {loss} at epoch {epoch}, {where}; lower the learning rate or use fp32 (train.precision)",
        reason="nan",
    )


@dataclass(frozen=True)
class EpochTotals:
    """What one rank's :func:`train_epoch` adds up.

    Args:
        loss_sum: training loss summed over samples.
        seen: samples trained on.
        wait_s: seconds spent waiting for the loader's next micro-batch.
        step_s: seconds of the optimiser steps, waits included.
    """

    loss_sum: float
    seen: int
    wait_s: float
    step_s: float


def superseded(where: str) -> CellFailed:
    """The failure (class ``superseded``) of a process whose cell another process took over (:mod:`geopeft.lease`)."""
    return CellFailed(
        f"stopped at {where}: another process took this cell over after this one's heartbeat expired; it writes the "
        "cell's files from now on",
        reason="superseded",
    )


def train_epoch(
    strategy: Strategy,
    loader: DataLoader[Batch],
    layout: BatchLayout,
    *,
    prep: BatchPreprocess,
    steps: tuple[int, int],
    epoch: int,
    device: torch.device,
    precision: str,
    preemption: faults.Preemption,
    on_preempt: OnPreempt,
    is_main: bool,
    owner_lost: Callable[[], bool] = lambda: False,
    cell: str = "",
) -> EpochTotals:
    """Optimiser steps ``steps[0]`` to ``steps[1] - 1`` of ``epoch``; returns this rank's :class:`EpochTotals`.

    The wait for data is the time spent in the loader's ``next``: the step before ended with a device sync (the
    loss is read back), so it is time the accelerator had nothing to do.

    Raises:
        CellFailed: (class ``nan``) a loss was not finite on some rank.
        Preempted: the ranks agreed to stop after SIGUSR2; ``on_preempt`` wrote the checkpoint first.
    """
    strategy.model.train()
    batches = iter(loader)
    loss_sum, seen, wait_s, step_s = 0.0, 0, 0.0, 0.0
    for step in range(*steps):
        faults.inject_fault(epoch, step, is_main=is_main, cell=cell)
        bad: float | None = None  # a non-finite loss of this rank
        step_started = time.perf_counter()
        for micro in range(layout.accumulation):
            waited = time.perf_counter()
            host_batch = next(batches)
            wait_s += time.perf_counter() - waited
            batch = prep(to_device(host_batch, device))
            faults.inject_oom(int(batch["image"].shape[0]))
            with autocast(device, precision):
                logits = strategy.forward(batch["image"], batch.get("metadata"))
            loss, _ = segmentation_loss(logits, batch["mask"])
            value = float(loss.detach())
            bad = bad if math.isfinite(value) else value
            strategy.backward(loss, last=micro == layout.accumulation - 1)  # on every rank, even after a NaN
            n = int(batch["image"].shape[0])
            loss_sum += value * n
            seen += n
        not_finite, stop, lost = any_rank([bad is not None, preemption.requested, owner_lost()])
        if lost:  # another process owns the cell now: stop before this step changes anything it writes
            raise superseded(f"epoch {epoch}, step {step}")
        if not_finite:
            raise nan_failure(float("nan") if bad is None else bad, epoch, step)
        strategy.step()
        step_s += time.perf_counter() - step_started
        if stop:
            on_preempt(step + 1, loss_sum, seen)
            raise faults.Preempted(f"stopped by SIGUSR2 after step {step} of epoch {epoch}; the checkpoint is written")
    return EpochTotals(loss_sum, seen, wait_s, step_s)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Batch],
    device: torch.device,
    *,
    prep: BatchPreprocess,
    num_classes: int,
    precision: str,
) -> RegionMetrics:
    """Metrics of ``model`` over ``loader``, summed over every rank (each sample counted exactly once).

    ``model`` is the plain module (never a DDP wrapper): ranks may hold different numbers of batches. ``prep``
    turns the loader's stored-dtype batches into the model's input on ``device``.
    """
    model.eval()
    metrics = SplitMetrics(num_classes, device=device)
    for host_batch in loader:
        batch = prep(to_device(host_batch, device))
        with autocast(device, precision):
            logits = model(batch["image"], batch.get("metadata"))
        metrics.update(logits, batch["mask"], sample_loss_sum(logits, batch["mask"]))
    return metrics.compute()


def sample_loss_sum(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = -1) -> float:
    """The sum over samples of each sample's cross-entropy averaged over its labelled pixels.

    Unlike a batch mean times the batch size, it does not depend on which samples share a batch, so the loss of
    a split is the same whatever the batch size and number of ranks (up to the order of a float sum).
    """
    ce = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="none").flatten(1)
    labelled = (mask != ignore_index).flatten(1).sum(1).clamp(min=1)
    return float((ce.sum(1) / labelled).sum())
