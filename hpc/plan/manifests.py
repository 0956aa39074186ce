"""Planning a grid into a sweep's manifest: append-only, so a queued array index always names the same cell."""

from __future__ import annotations

from dataclasses import replace

from geopeft.provenance import git_state
from hpc.plan.grid import Grid
from hpc.state.manifest import Entry, Manifest


def plan(grid: Grid, existing: Manifest | None = None) -> Manifest:
    """Merge ``grid`` into ``existing`` (append-only) and return the new manifest."""
    wanted = {spec.cell_id: spec for spec in grid.cells}
    entries: list[Entry] = []
    if existing is not None:
        entries = [replace(e, in_grid=e.cell_id in wanted) for e in existing.entries]
    known = {e.cell_id for e in entries}
    for spec in grid.cells:
        if spec.cell_id not in known:
            entries.append(Entry(len(entries), spec))
    return Manifest(grid.name, grid.output, str(grid.path), grid.sha256, grid.env, tuple(entries), git_state())
