"""One training protocol for every cell: AdamW, ReduceLROnPlateau and early stopping on validation loss.

The best-validation-loss weights go to ``ckpt/best.pt``; the full training state goes to ``ckpt/last.pt`` after
every epoch, and after the optimiser step at which the ranks agreed to stop on SIGUSR2 (with the step to resume
at), so a killed, preempted or requeued cell resumes where it stopped and ends with the metrics of an uninterrupted
run. Both are written by rank 0 only, in a form that does not depend on the world size or the strategy
(:mod:`geopeft.train.strategy`). The data order and augmentation are functions of (seed, epoch, sample)
(:mod:`geopeft.train.loaders`), and the RNG states are saved, so resuming needs no replay of skipped batches.

``last.pt`` also keeps the per-epoch records (the history); a resumed cell rewrites ``metrics.jsonl`` from it, so the
log holds every epoch exactly once whatever was cut off. Epoch times and rates are computed from the history, over
every attempt.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from geopeft.cache.reader import CacheDataset
from geopeft.errors import CellFailed
from geopeft.io import append_jsonl, atomic_write_json, read_json, write_jsonl
from geopeft.paths import CellPaths
from geopeft.spec import TrainSpec
from geopeft.train import checkpoint, faults
from geopeft.train.distributed import all_reduce_sum, any_rank, barrier
from geopeft.train.loaders import TrainLoader, eval_loader, pin_memory
from geopeft.train.loop import evaluate, nan_failure, segmentation_loss, superseded, train_epoch
from geopeft.train.preprocess import BatchPreprocess
from geopeft.train.sampling import BatchLayout
from geopeft.train.strategy import Strategy, make_strategy

__all__ = ["EarlyStopping", "FitData", "FitOutcome", "evaluate", "fit", "segmentation_loss"]

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
    layout: BatchLayout
    data_wait_fraction: float


@dataclass(frozen=True)
class FitData:
    """What :func:`fit` trains and validates on.

    Args:
        train: the training split (with augmentation).
        val: the validation split.
        prep: the batch preprocessing on the device (scale, normalisation, padding).
        num_workers: DataLoader workers per rank.
        owner_lost: True once this process no longer owns the cell (its lease was taken over); the ranks then stop
            at the next step without writing anything more.
        on_epoch_end: rank 0's hook after each epoch's records are written (the cell refreshes its lease's
            heartbeat, which dates the end of an attempt killed without warning).
    """

    train: CacheDataset
    val: CacheDataset
    prep: BatchPreprocess
    num_workers: int = 0
    owner_lost: Callable[[], bool] = lambda: False
    on_epoch_end: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class _Resume:
    """Where a checkpoint says to continue: after ``epoch`` whole epochs, at ``step`` of the next one."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0  # training loss summed over the resumed epoch's finished steps, every rank
    seen: int = 0
    wait_s: float = 0.0  # seconds waiting for data in the whole epochs trained so far, every rank
    step_s: float = 0.0  # seconds of their optimiser steps, every rank


def _restore(
    state: dict[str, Any],
    strategy: Strategy,
    scheduler: Any,
    stopper: EarlyStopping,
    is_main: bool,
    history: list[dict[str, Any]],
) -> _Resume:
    strategy.load_optimizer_state(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stopper.load_state_dict(state["stopper"])
    checkpoint.set_rng_state(state["rng"])
    loss_sum, seen = state.get("partial", (0.0, 0)) if is_main else (0.0, 0)  # rank 0 carries the sums
    wait_s, step_s = state.get("data_wait", (0.0, 0.0)) if is_main else (0.0, 0.0)
    history[:] = state.get("history", [])
    return _Resume(
        int(state["epoch"]), int(state.get("step", 0)), float(loss_sum), int(seen), float(wait_s), float(step_s)
    )


def fit(
    model: nn.Module,
    spec: TrainSpec,
    data: FitData,
    paths: CellPaths,
    device: torch.device,
    *,
    layout: BatchLayout,
    seed: int,
    rank: int = 0,
    num_classes: int,
    trainable_state: Callable[[], dict[str, torch.Tensor]],
    log: Callable[[str], None] = print,
) -> FitOutcome:
    """Train with the paper's protocol on every rank, resuming from ``paths.last_ckpt`` when it exists.

    Args:
        model: the model on ``device`` (the plain module: the strategy wraps it, or trains a copy of it under
            ZeRO-3); it holds the trained weights whenever it is evaluated or saved, and when ``fit`` returns.
        spec: the optimisation settings.
        data: the training and validation splits.
        paths: the cell directory (rank 0 writes checkpoints, the metrics log and progress there).
        device: this rank's device.
        layout: ranks x accumulation x micro-batch making up ``spec.batch_size``.
        seed: the cell's seed (data order and augmentation per epoch).
        rank: this rank.
        num_classes: classes of the dataset.
        trainable_state: the weights ``best.pt`` keeps.
        log: sink for progress lines (rank 0's).

    Raises:
        CellFailed: class ``nan`` for a non-finite loss; :class:`~geopeft.train.faults.Preempted` after SIGUSR2.
    """
    is_main = rank == 0
    state = checkpoint.load(paths.last_ckpt) if paths.last_ckpt.exists() else None
    if state is not None:
        model.load_state_dict(state["model"])  # before the strategy copies the weights (DeepSpeed's master copy)
    strategy = make_strategy(model, spec, layout, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        strategy.optimizer, patience=spec.lr_patience, factor=spec.lr_factor
    )
    stopper = EarlyStopping(spec.patience)
    history: list[dict[str, Any]] = []  # one record per finished epoch, every attempt's
    at = _Resume() if state is None else _restore(state, strategy, scheduler, stopper, is_main, history)
    if state is not None:
        log(f"resuming at epoch {at.epoch + 1}, step {at.step} from {paths.last_ckpt}")
    if is_main:
        write_jsonl(paths.metrics_log, history)  # the epochs the checkpoint holds, each once
    del state
    pin = pin_memory(device)
    train = TrainLoader(data.train, layout, rank, seed, data.num_workers, pin)
    val_loader = eval_loader(data.val, layout.micro_batch, rank, layout.world_size, data.num_workers, pin)

    def save(resume: _Resume) -> None:
        payload = {
            "epoch": resume.epoch,
            "step": resume.step,
            "partial": (resume.loss_sum, resume.seen),
            "data_wait": (resume.wait_s, resume.step_s),
            "history": history,
            "model": model.state_dict(),
            "optimizer": strategy.optimizer_state(),  # a collective under ZeRO: every rank builds it
            "scheduler": scheduler.state_dict(),
            "stopper": stopper.state_dict(),
            "rng": checkpoint.rng_state(),
        }
        if is_main:
            checkpoint.save(paths.last_ckpt, payload)

    resumed_from = at.epoch
    with faults.Preemption() as preemption, contextlib.closing(strategy):
        while at.epoch < spec.max_epochs and not stopper.should_stop:
            epoch, started = at.epoch + 1, time.perf_counter()

            def on_preempt(next_step: int, loss_sum: float, seen: int, epoch: int = epoch, at: _Resume = at) -> None:
                total, count = all_reduce_sum([at.loss_sum + loss_sum, at.seen + seen])
                strategy.sync_model()
                save(_Resume(epoch - 1, next_step, total, int(count), at.wait_s, at.step_s))

            totals = train_epoch(
                strategy,
                train.epoch(epoch, at.step),
                layout,
                prep=data.prep,
                steps=(at.step, train.steps),
                epoch=epoch,
                device=device,
                precision=spec.precision,
                preemption=preemption,
                on_preempt=on_preempt,
                is_main=is_main,
                owner_lost=data.owner_lost,
                cell=paths.dir.name,
            )
            loss_sum, count, wait_s, step_s = all_reduce_sum(
                [at.loss_sum + totals.loss_sum, at.seen + totals.seen, totals.wait_s, totals.step_s]
            )
            strategy.sync_model()  # ``model`` gets the trained weights (gathered under ZeRO-3)
            val = evaluate(
                model, val_loader, device, prep=data.prep, num_classes=num_classes, precision=spec.precision
            )
            epoch_s = time.perf_counter() - started
            if val.n != len(data.val):
                raise CellFailed(f"validation counted {val.n} samples of {len(data.val)}; report this as a bug")
            if not math.isfinite(val.loss):
                raise nan_failure(val.loss, epoch, -1)
            preempted, lost = any_rank([preemption.requested, data.owner_lost()])
            if lost:
                raise superseded(f"the end of epoch {epoch}")
            scheduler.step(val.loss)
            if stopper.step(val.loss, epoch):
                best = trainable_state()
                if is_main:
                    checkpoint.save(paths.best_ckpt, {"epoch": epoch, "model": best})
            lr = strategy.optimizer.param_groups[0]["lr"]
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(count, 1),
                "val_loss": val.loss,
                "val_miou": val.miou,
                "lr": lr,
                "epoch_s": epoch_s,
                "samples": int(count) - at.seen,  # trained in this attempt (all of the epoch unless resumed in it)
                "partial": at.step > 0,
            }
            history.append(record)
            at = _Resume(epoch, wait_s=at.wait_s + wait_s, step_s=at.step_s + step_s)
            save(at)
            if is_main:
                _report(paths, spec, record, stopper, log)
                data.on_epoch_end()
            if preempted:
                raise faults.Preempted(f"stopped by SIGUSR2 after epoch {epoch}; the checkpoint is written")
    barrier()  # best.pt is complete before any rank reads it
    whole = [r for r in history if not r.get("partial")] or history
    trained_s = sum(float(r["epoch_s"]) for r in history)
    return FitOutcome(
        best_epoch=stopper.best_epoch,
        epochs_run=at.epoch,
        time_per_epoch_s=sum(float(r["epoch_s"]) for r in whole) / max(len(whole), 1),
        samples_per_s=sum(int(r["samples"]) for r in history) / trained_s if trained_s > 0 else 0.0,
        resumed_from_epoch=resumed_from,
        layout=layout,
        data_wait_fraction=at.wait_s / at.step_s if at.step_s > 0 else 0.0,
    )


def _report(
    paths: CellPaths, spec: TrainSpec, record: dict[str, Any], stopper: EarlyStopping, log: Callable[[str], None]
) -> None:
    """Rank 0's per-epoch records: a metrics line, the progress file and a log line.

    ``progress.json`` is what ``geopeft status`` shows of a running cell: the epoch, the best validation mIoU so far
    (the highest of any epoch) and the epoch of the best validation loss (the checkpoint tested), and the seconds of
    the last epoch, from which it estimates the time left.
    """
    epoch, val_miou = int(record["epoch"]), float(record["val_miou"])
    append_jsonl(paths.metrics_log, record)
    before = read_json(paths.progress) if paths.progress.exists() and epoch > 1 else {}
    best_miou = max(val_miou, float(before.get("best_val_miou", val_miou)))
    progress = {
        "epoch": epoch,
        "max_epochs": spec.max_epochs,
        "time": time.time(),
        "val_miou": val_miou,
        "best_val_miou": best_miou,
        "best_epoch": stopper.best_epoch,
        "patience_left": spec.patience - stopper.bad_epochs,
        "epoch_s": record["epoch_s"],
    }
    atomic_write_json(paths.progress, progress)
    log(
        f"epoch {epoch:3d}/{spec.max_epochs} train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
        f"val_mIoU {100 * val_miou:.2f} lr {record['lr']:.2e}{' *' if stopper.best_epoch == epoch else ''}"
    )
