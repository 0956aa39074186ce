"""The result schema: what a finished (or failed) cell writes, and how it is read back.

``result.json`` (status ``success``) and ``failed.json`` (status ``failed``) are plain JSON written
atomically by rank 0. Metrics are fractions in [0, 1]; tables multiply by 100 as the paper does.
This module imports nothing heavy, so ``analysis`` may use it without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from geopeft.errors import GeopeftError
from geopeft.io import SCHEMA_VERSION

STATUSES = ("success", "failed", "canceled")


@dataclass(frozen=True)
class RegionMetrics:
    """Test metrics of the best checkpoint on one region (split).

    Args:
        miou: TerraTorch's macro mIoU: the mean IoU over the classes present in the split (in its targets or its
            predictions), ignoring label -1.
        iou_per_class: IoU of each class, in class order; ``None`` for a class absent from both the targets and
            the predictions of the whole split (it has no IoU, and ``miou`` leaves it out).
        accuracy: pixel accuracy (micro), ignoring label -1.
        loss: mean cross-entropy.
        n: number of samples evaluated (checked against the split size).
        classes_present: how many classes ``miou`` averages (the non-``None`` entries of ``iou_per_class``).
    """

    miou: float
    iou_per_class: tuple[float | None, ...]
    accuracy: float
    loss: float
    n: int
    classes_present: int


@dataclass(frozen=True)
class TrainSummary:
    """How training went.

    Args:
        best_epoch: epoch (1-based) of the best validation loss.
        epochs_run: epochs trained (early stopping may end before max_epochs).
        wall_time_s: seconds the cell's attempts ran, summed (the sum of ``attempt_times_s``).
        time_per_epoch_s: mean seconds per training epoch (validation included).
        samples_per_s: training samples per second.
        peak_memory_mb: peak accelerator memory (peak RSS on CPU).
        device: device model, e.g. ``cpu`` or ``NVIDIA H100 80GB HBM3``.
        world_size: number of ranks.
        data_wait_fraction: share of the training steps' time spent waiting for the next batch of the loader
            (0 = the accelerator never waited for data).
        resumed_from_epoch: epoch a resumed attempt started after (0 = fresh).
        attempt_times_s: seconds each attempt ran, in attempt order (one killed without warning: to its last
            lease heartbeat, see :func:`geopeft.lease.attempt_times`).
    """

    best_epoch: int
    epochs_run: int
    wall_time_s: float
    time_per_epoch_s: float
    samples_per_s: float
    peak_memory_mb: float
    device: str
    world_size: int
    data_wait_fraction: float
    resumed_from_epoch: int = 0
    attempt_times_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class CellResult:
    """Everything ``result.json`` holds.

    Args:
        cell_id: the cell id (hash of the spec).
        slug: readable cell name.
        spec: the cell spec as a dict.
        regions: region name -> metrics.
        train: the training summary.
        params: trainable / total parameter counts.
        provenance: code and library versions, host, scheduler ids.
        cache_keys: split -> cache key the cell read.
    """

    cell_id: str
    slug: str
    spec: dict[str, Any]
    regions: dict[str, RegionMetrics]
    train: TrainSummary
    params: dict[str, Any]
    provenance: dict[str, Any]
    cache_keys: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``schema_version`` and ``status``."""
        d = asdict(self)
        return {"schema_version": SCHEMA_VERSION, "status": "success", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "result.json") -> CellResult:
        """Read back a result written by :meth:`to_dict`."""
        check_schema(d, where)
        try:
            regions = {
                name: RegionMetrics(**{**m, "iou_per_class": tuple(m["iou_per_class"])})
                for name, m in d["regions"].items()
            }
            return cls(
                cell_id=d["cell_id"],
                slug=d["slug"],
                spec=d["spec"],
                regions=regions,
                train=TrainSummary(**{**d["train"], "attempt_times_s": tuple(d["train"].get("attempt_times_s", ()))}),
                params=d["params"],
                provenance=d["provenance"],
                cache_keys=d.get("cache_keys", {}),
            )
        except (KeyError, TypeError) as exc:
            raise GeopeftError(f"{where}: malformed result ({exc}); rerun the cell to rewrite it") from exc


def check_schema(d: dict[str, Any], where: str) -> None:
    """Raise when a result file was written by an incompatible schema version."""
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise GeopeftError(
            f"{where}: schema_version {version!r}, this geopeft reads {SCHEMA_VERSION}; "
            "rerun the cell or use the geopeft version that wrote it"
        )


def failure_record(
    cell_id: str, slug: str, reason: str, error: str, traceback_tail: str, attempt: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The content of ``failed.json``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "failed",
        "cell_id": cell_id,
        "slug": slug,
        "reason": reason,
        "error": error,
        "traceback": traceback_tail,
        "attempt": attempt,
        **extra,
    }
