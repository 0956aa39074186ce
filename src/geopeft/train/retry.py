"""Out-of-memory errors: record the attempt, then train again with half the micro-batch and twice the accumulation.

The effective batch (``train.batch_size``) never changes, so the retried cell follows the same protocol. Each
try is an attempt of its own in ``attempts.jsonl`` (an end line ``failed``/``oom``, then a new start line), and
the micro-batch that is in use is kept in ``ckpt/layout.json`` so that a resumed or rerun attempt starts from it
rather than running out of memory again. A retry resumes from ``ckpt/last.pt`` when it exists, else from the
weights and RNG states the first try started with.

Every rank retries at the same point when the error strikes all ranks alike (the same micro-batch shape, as the
``GEOPEFT_OOM_ABOVE`` test hook makes it). An error on one rank only leaves the others waiting in a collective
until the process group's timeout fails the cell with class ``oom`` or ``error``; its ``layout.json`` still makes
the next attempt (``geopeft rerun``) start with the halved micro-batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from geopeft.attempts import end_attempt, start_attempt
from geopeft.io import atomic_write_json, read_json
from geopeft.lease import Lease
from geopeft.paths import CellPaths
from geopeft.train import checkpoint
from geopeft.train.sampling import BatchLayout

T = TypeVar("T")

#: Halvings of the micro-batch tried after out-of-memory errors before the cell fails with class ``oom``.
MAX_OOM_RETRIES = 3


@dataclass
class AttemptCounter:
    """The number of the attempt in progress (it grows with every out-of-memory retry), and rank 0's lease."""

    number: int
    lease: Lease | None = None

    def start_next(self, paths: CellPaths) -> None:
        """Start the next attempt (rank 0) and record its number in the lease."""
        self.number = start_attempt(paths)
        if self.lease is not None:
            self.lease.update(attempt=self.number)


def layout_file(paths: CellPaths) -> str:
    """Where the micro-batch in use is kept."""
    return str(paths.ckpt_dir / "layout.json")


def starting_layout(paths: CellPaths, full: BatchLayout) -> BatchLayout:
    """``full``, or the smaller micro-batch an earlier attempt of this cell fell back to (when it still divides)."""
    try:
        micro = int(read_json(layout_file(paths))["micro_batch"])
    except (OSError, KeyError, ValueError, TypeError):
        return full
    if 1 <= micro < full.micro_batch and full.per_rank % micro == 0:
        return BatchLayout(full.batch_size, full.world_size, micro)
    return full


def retry_oom(
    fit_once: Callable[[BatchLayout], T],
    layout: BatchLayout,
    *,
    model: nn.Module,
    paths: CellPaths,
    attempt: AttemptCounter,
    is_main: bool,
    log: Callable[[str], None],
    max_retries: int = MAX_OOM_RETRIES,
) -> T:
    """``fit_once(layout)``, again with a halved micro-batch after each ``torch.OutOfMemoryError``.

    Raises:
        torch.OutOfMemoryError: still out of memory after ``max_retries`` halvings.
        CellFailed: (class ``oom``) the micro-batch cannot be halved any further.
    """
    weights = copy.deepcopy(model.state_dict())
    rng = checkpoint.rng_state()
    for retry in range(max_retries + 1):
        try:
            return fit_once(layout)
        except torch.OutOfMemoryError as exc:
            if retry == max_retries:
                raise
            smaller = layout.halved()
            if is_main:
                end_attempt(paths, attempt.number, "failed", "oom")
                atomic_write_json(layout_file(paths), {"micro_batch": smaller.micro_batch, "error": str(exc)})
                attempt.start_next(paths)
            log(
                f"out of memory with micro-batch {layout.micro_batch} ({exc}); attempt {attempt.number} retries with "
                f"micro-batch {smaller.micro_batch} x {smaller.accumulation} accumulation steps"
            )
            layout = smaller
            del exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not paths.last_ckpt.exists():
                model.load_state_dict(weights)
                checkpoint.set_rng_state(rng)
    raise AssertionError("unreachable: the loop returns or raises")
