"""The result schema: what a finished (or failed) cell writes, and how it is read back.

``result.json`` (status ``success``) and ``failed.json`` (status ``failed``) are plain JSON written
atomically by rank 0. Metrics are fractions in [0, 1]; tables multiply by 100 as the paper does.
This module imports nothing heavy, so ``analysis`` may use it without torch.
"""

from __future__ import annotations

import math
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
        """Read back a result written by :meth:`to_dict`; a missing field or a bad value names the file and field."""
        check_schema(d, where)
        check_values(d, where)
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


#: Train summary fields: (kind, lower bound, upper bound); kind ``int`` or ``float`` (an int is a float too).
TRAIN_FIELDS: dict[str, tuple[str, float, float]] = {
    "best_epoch": ("int", 0, math.inf),
    "epochs_run": ("int", 0, math.inf),
    "wall_time_s": ("float", 0, math.inf),
    "time_per_epoch_s": ("float", 0, math.inf),
    "samples_per_s": ("float", 0, math.inf),
    "peak_memory_mb": ("float", 0, math.inf),
    "world_size": ("int", 1, math.inf),
    "data_wait_fraction": ("float", 0, 1),
    "resumed_from_epoch": ("int", 0, math.inf),
}
#: Region metric fields, as above.
REGION_FIELDS: dict[str, tuple[str, float, float]] = {
    "miou": ("float", 0, 1),
    "accuracy": ("float", 0, 1),
    "loss": ("float", 0, math.inf),
    "n": ("int", 0, math.inf),
    "classes_present": ("int", 0, math.inf),
}


def _bad(value: Any, kind: str, lo: float, hi: float) -> bool:
    """``value`` is not a finite number of ``kind`` within [lo, hi] (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    if kind == "int" and not isinstance(value, int):
        return True
    return not (math.isfinite(value) and lo <= value <= hi)


def _describe(kind: str, lo: float, hi: float) -> str:
    what = "an integer" if kind == "int" else "a number"
    return f"{what} >= {lo:g}" if math.isinf(hi) else f"{what} in [{lo:g}, {hi:g}]"


def check_values(d: dict[str, Any], where: str) -> None:
    """Raise naming the file and the field (``regions.test.miou``) when a metric or train value is not valid."""
    fix = "rerun the cell to rewrite it (geopeft rerun GRID --cells ID)"

    def check(value: Any, field_name: str, rule: tuple[str, float, float]) -> None:
        if _bad(value, *rule):
            raise GeopeftError(f"{where}: {field_name} = {value!r} is not {_describe(*rule)}; {fix}")

    regions = d.get("regions")
    if not isinstance(regions, dict) or not regions:
        raise GeopeftError(f"{where}: regions = {regions!r} is not a mapping of region -> metrics; {fix}")
    for name, metrics in regions.items():
        if not isinstance(metrics, dict):
            raise GeopeftError(f"{where}: regions.{name} = {metrics!r} is not a mapping of metrics; {fix}")
        for key, rule in REGION_FIELDS.items():
            if key in metrics:
                check(metrics[key], f"regions.{name}.{key}", rule)
        ious = metrics.get("iou_per_class")
        if not isinstance(ious, list):
            raise GeopeftError(f"{where}: regions.{name}.iou_per_class = {ious!r} is not a list; {fix}")
        for i, iou in enumerate(ious):
            if iou is not None:
                check(iou, f"regions.{name}.iou_per_class[{i}]", ("float", 0, 1))
    train = d.get("train")
    if not isinstance(train, dict):
        raise GeopeftError(f"{where}: train = {train!r} is not a mapping; {fix}")
    for key, rule in TRAIN_FIELDS.items():
        if key in train:
            check(train[key], f"train.{key}", rule)
    for i, t in enumerate(train.get("attempt_times_s", ())):
        check(t, f"train.attempt_times_s[{i}]", ("float", 0, math.inf))


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
