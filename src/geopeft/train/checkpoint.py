"""Checkpoints: the best weights for testing, and the full training state for resuming a cell.

Both are written through :func:`geopeft.io.temporary_save_path`, so a kill during a save, or a full disk, leaves
the previous checkpoint intact; a write that fails says why (``No space left on device``), not torch's position
mismatch. The training state holds everything needed to continue bit-for-bit:
model, optimiser, scheduler, early-stopping state, epoch and every RNG state.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np
import torch

from geopeft.errors import CheckpointError
from geopeft.io import temporary_save_path


class _Writer:
    """The file torch writes into: it remembers the ``OSError`` torch's own error would hide."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        try:
            while view:
                written = self.fh.write(view)
                if not written:
                    raise OSError(errno.EIO, "the file took no bytes")
                view = view[written:]
        except OSError as exc:
            self.error = exc
            raise
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


def save(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` atomically.

    Raises:
        CheckpointError: the file could not be written (full disk, quota, I/O error); the previous one is intact.
    """
    with temporary_save_path(path) as tmp, open(tmp, "wb", buffering=0) as fh:
        writer = _Writer(fh)
        try:
            torch.save(payload, cast(IO[bytes], writer))  # torch calls write and flush only
        except (RuntimeError, OSError) as exc:
            if writer.error is None:
                raise
            why = writer.error.strerror or str(writer.error)
            raise CheckpointError(f"{path}: cannot be written ({why}); the previous checkpoint is kept") from exc


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (tensors and plain Python values only)."""
    try:
        out: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc}); delete it to start the cell afresh") from exc
    return out


def rng_state() -> dict[str, Any]:
    """The state of every random number generator a cell uses."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def determinism() -> dict[str, Any]:
    """The settings that decide whether a rerun repeats a cell bit for bit (recorded in ``result.json``)."""
    return {
        "seeded": ["python", "numpy", "torch", "dataloader workers"],
        "data_order": "permutation drawn from (seed, epoch); D4 element from (seed, epoch, sample index)",
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
    }
