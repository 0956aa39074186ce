"""The manifest of a sweep: manifest index -> cell id -> spec, plus the run environment.

An array task receives a manifest index. The manifest is append-only: planning again after the
grid file changed keeps every known cell at its index and appends new cells, so an index already
queued on the cluster always names the same cell. Cells that left the grid stay, marked
``in_grid: false``, and are neither submitted nor shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError, GeopeftError
from geopeft.io import SCHEMA_VERSION, atomic_write_json, read_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, RunEnv


@dataclass(frozen=True)
class Entry:
    """One cell of the manifest."""

    index: int
    spec: CellSpec
    in_grid: bool = True

    @property
    def cell_id(self) -> str:
        """The cell id of :attr:`spec`."""
        return self.spec.cell_id


@dataclass(frozen=True)
class Manifest:
    """A sweep's cells and environment.

    Args:
        name: sweep name.
        root: the sweep directory.
        grid_file: the grid file it was planned from.
        grid_sha256: hash of that file when last planned.
        env: the run environment shared by every cell.
        entries: cells by index (``entries[i].index == i``).
        git: the code version that planned it.
    """

    name: str
    root: Path
    grid_file: str
    grid_sha256: str
    env: RunEnv
    entries: tuple[Entry, ...]
    git: dict[str, Any]

    @property
    def paths(self) -> SweepPaths:
        """The sweep's paths."""
        return SweepPaths(self.root)

    def active(self) -> list[Entry]:
        """Entries that are part of the current grid."""
        return [e for e in self.entries if e.in_grid]

    def entry(self, index: int) -> Entry:
        """The entry at ``index`` (a clear error when out of range)."""
        if not 0 <= index < len(self.entries):
            raise GeopeftError(f"{self.paths.manifest}: no cell at index {index} (0..{len(self.entries) - 1})")
        return self.entries[index]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "grid_file": self.grid_file,
            "grid_sha256": self.grid_sha256,
            "env": self.env.to_dict(),
            "git": self.git,
            "planned": time.time(),
            "cells": [
                {
                    "index": e.index,
                    "cell_id": e.cell_id,
                    "slug": e.spec.slug,
                    "in_grid": e.in_grid,
                    "spec": e.spec.to_dict(),
                }
                for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path) -> Manifest:
        """Read the JSON form; every stored cell id must match its spec."""
        where = str(SweepPaths(root).manifest)
        if d.get("schema_version") != SCHEMA_VERSION:
            raise GeopeftError(f"{where}: schema_version {d.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        entries = []
        for i, c in enumerate(d["cells"]):
            spec = CellSpec.from_dict(c["spec"], f"{where}: cells[{i}]")
            if c["index"] != i or c["cell_id"] != spec.cell_id:
                raise GeopeftError(f"{where}: cells[{i}] is inconsistent (index or cell id); plan the sweep again")
            entries.append(Entry(i, spec, bool(c.get("in_grid", True))))
        return cls(d["name"], root, d["grid_file"], d["grid_sha256"], RunEnv(**d["env"]), tuple(entries), d["git"])


def read_manifest(root: str | Path) -> Manifest:
    """Load ``<root>/manifest.json``."""
    paths = SweepPaths(Path(root))
    if not paths.manifest.exists():
        raise ConfigError(f"{paths.manifest} not found; run `geopeft sweep GRID` first")
    return Manifest.from_dict(read_json(paths.manifest), paths.root)


def write_manifest(manifest: Manifest) -> None:
    """Write the manifest atomically."""
    atomic_write_json(manifest.paths.manifest, manifest.to_dict())
