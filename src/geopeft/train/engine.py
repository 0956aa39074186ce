"""One training protocol for every cell: AdamW, ReduceLROnPlateau and early stopping on validation loss.

The best-validation-loss weights go to ``ckpt/best.pt``; the full training state goes to
``ckpt/last.pt`` after every epoch, so a killed or requeued cell resumes where it stopped.
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
from geopeft.io import append_jsonl, atomic_write_json
from geopeft.paths import CellPaths
from geopeft.result import RegionMetrics
from geopeft.spec import TrainSpec
from geopeft.train import checkpoint
from geopeft.train.metrics import SplitMetrics

Batch = dict[str, Any]


@dataclass
class EarlyStopping:
    """Stop when the monitored loss has not improved for ``patience`` epochs (Lightning's rule)."""

    patience: int
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def step(self, loss: float, epoch: int) -> bool:
        """Record an epoch's loss; return True when it is a new best."""
        if loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs passed without improvement."""
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state."""
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


@dataclass(frozen=True)
class FitOutcome:
    """What :func:`fit` reports."""

    best_epoch: int
    epochs_run: int
    time_per_epoch_s: float
    samples_per_s: float
    resumed_from_epoch: int


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = -1) -> tuple[torch.Tensor, int]:
    """Cross-entropy averaged over labelled pixels; returns (loss, labelled pixel count).

    A batch without labelled pixels gives a zero loss that still carries the graph, where
    ``F.cross_entropy(reduction="mean")`` would return NaN.
    """
    total = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="sum")
    count = int((mask != ignore_index).sum())
    return total / max(count, 1), count


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise CellFailed(
            f"loss is {loss.item()} at epoch {epoch}, step {step}; lower the learning rate or use fp32",
            reason="nan",
        )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[Batch],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    precision: str,
    epoch: int,
) -> tuple[float, int]:
    """One pass over the training loader; returns (mean loss, samples seen)."""
    model.train()
    loss_sum, seen = 0.0, 0
    for step, batch in enumerate(loader):
        batch = _to(batch, device)
        with _autocast(device, precision):
            logits = model(batch["image"])
        loss, _ = segmentation_loss(logits, batch["mask"])
        _check_finite(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimizer.step()
        n = int(batch["image"].shape[0])
        loss_sum += float(loss.detach()) * n
        seen += n
    return loss_sum / max(seen, 1), seen


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader[Batch], device: torch.device, *, num_classes: int, precision: str
) -> RegionMetrics:
    """Metrics of ``model`` over every sample of ``loader`` (each counted exactly once)."""
    model.eval()
    metrics = SplitMetrics(num_classes)
    for batch in loader:
        batch = _to(batch, device)
        with _autocast(device, precision):
            logits = model(batch["image"])
        loss, _ = segmentation_loss(logits, batch["mask"])
        metrics.update(logits, batch["mask"], float(loss) * int(batch["mask"].shape[0]))
    return metrics.compute()


def fit(
    model: nn.Module,
    spec: TrainSpec,
    loaders: tuple[DataLoader[Batch], DataLoader[Batch]],
    paths: CellPaths,
    device: torch.device,
    *,
    num_classes: int,
    trainable_state: Callable[[], dict[str, torch.Tensor]],
    log: Callable[[str], None] = print,
) -> FitOutcome:
    """Train with the paper's protocol, resuming from ``paths.last_ckpt`` when it exists."""
    train_loader, val_loader = loaders
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=spec.lr_patience, factor=spec.lr_factor)
    stopper = EarlyStopping(spec.patience)
    start_epoch = 0
    if paths.last_ckpt.exists():
        state = checkpoint.load(paths.last_ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["stopper"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        log(f"resuming after epoch {start_epoch} from {paths.last_ckpt}")
    resumed_from = start_epoch
    train_time, samples = 0.0, 0
    epoch = start_epoch
    while epoch < spec.max_epochs and not stopper.should_stop:
        epoch += 1
        started = time.perf_counter()
        train_loss, seen = train_one_epoch(
            model, train_loader, optimizer, device, precision=spec.precision, epoch=epoch
        )
        val = evaluate(model, val_loader, device, num_classes=num_classes, precision=spec.precision)
        train_time += time.perf_counter() - started
        samples += seen
        _check_finite(torch.tensor(val.loss), epoch, -1)
        scheduler.step(val.loss)
        if stopper.step(val.loss, epoch):
            checkpoint.save(paths.best_ckpt, {"epoch": epoch, "model": trainable_state()})
        checkpoint.save(
            paths.last_ckpt,
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "stopper": stopper.state_dict(),
                "rng": checkpoint.rng_state(),
            },
        )
        lr = optimizer.param_groups[0]["lr"]
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val.loss, "val_miou": val.miou, "lr": lr}
        append_jsonl(paths.metrics_log, record)
        atomic_write_json(paths.progress, {"epoch": epoch, "max_epochs": spec.max_epochs, "time": time.time()})
        log(
            f"epoch {epoch:3d}/{spec.max_epochs} train_loss {train_loss:.4f} val_loss {val.loss:.4f} "
            f"val_mIoU {100 * val.miou:.2f} lr {lr:.2e}{' *' if stopper.best_epoch == epoch else ''}"
        )
    epochs_here = max(epoch - start_epoch, 1)
    return FitOutcome(
        best_epoch=stopper.best_epoch,
        epochs_run=epoch,
        time_per_epoch_s=train_time / epochs_here,
        samples_per_s=samples / train_time if train_time > 0 else 0.0,
        resumed_from_epoch=resumed_from,
    )
