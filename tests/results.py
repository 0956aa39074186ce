"""A valid ``result.json`` for tests that need a finished cell but not its numbers (no torch)."""

from __future__ import annotations

from geopeft.io import atomic_write_json
from geopeft.paths import CellPaths
from geopeft.result import CellResult, RegionMetrics, TrainSummary


def write_result(paths: CellPaths, *, best_epoch: int = 1, miou: float = 0.5, epochs: int = 2) -> CellResult:
    """Write (atomically) and return a minimal valid result for the cell at ``paths``."""
    result = CellResult(
        cell_id=paths.dir.name,
        slug=paths.dir.name,
        spec={},
        regions={"test": RegionMetrics(miou, (miou, miou), 0.9, 0.3, 4, 2)},
        train=TrainSummary(best_epoch, epochs, 3.0, 1.5, 10.0, 100.0, "cpu", 1, 0.1, attempt_times_s=(3.0,)),
        params={"trainable": 1, "total": 2},
        provenance={},
    )
    paths.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.result, result.to_dict())
    return result
