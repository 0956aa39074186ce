"""The caches a sweep needs before its cells can start, and how to build the missing ones.

The grid's optional ``raw`` mapping says where each dataset's native files are. On SLURM the missing (or
corrupt) caches are then built by one CPU job (:class:`hpc.launch.task.PrepareTask`) that the arrays wait for
(``afterok``); on the local executor they are built here before the cells are submitted. Without ``raw`` a
missing cache stops the sweep with the ``geopeft prepare`` command to run. A cache that is already valid needs
no prepare job::

    cache: /scratch/me/cache
    raw:
      sen1floods11: /scratch/me/raw/sen1floods11          # the paper's split files
      burn_scars: {dir: /scratch/me/raw/burn_scars, splits: /scratch/me/splits/burn_scars}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError, SubmitError
from hpc.plan.grid import Grid


@dataclass(frozen=True)
class RawSource:
    """Where one dataset's native files are.

    Args:
        dataset: dataset registry name.
        dir: the native files, as downloaded (absolute).
        splits: split files (absolute); empty for the paper's, shipped with geopeft.
    """

    dataset: str
    dir: str
    splits: str = ""

    def command(self, cache_root: str) -> list[str]:
        """The ``geopeft prepare`` arguments that build this dataset's cache."""
        extra = ["--splits", self.splits] if self.splits else []
        return ["prepare", self.dataset, "--raw", self.dir, "--cache", cache_root, *extra]


def raw_sources(grid: Grid) -> dict[str, RawSource]:
    """The grid's ``raw`` mapping, checked: dataset -> :class:`RawSource` (paths made absolute)."""
    out: dict[str, RawSource] = {}
    datasets = {c.dataset for c in grid.cells}
    for name, value in grid.raw.items():
        where = f"{grid.path}: raw.{name}"
        if name not in datasets:
            raise ConfigError(f"{where}: no cell of the grid uses dataset {name!r}; grid datasets: {sorted(datasets)}")
        if isinstance(value, str):
            value = {"dir": value}
        if not isinstance(value, dict) or not isinstance(value.get("dir"), str):
            raise ConfigError(f"{where}: give the directory of the native files, or {{dir: DIR, splits: DIR}}")
        unknown = [k for k in value if k not in ("dir", "splits")]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: dir, splits")
        splits: Any = value.get("splits", "")
        if not isinstance(splits, str):
            raise ConfigError(f"{where}.splits: must be a directory (a string)")
        out[name] = RawSource(name, str(Path(value["dir"]).resolve()), str(Path(splits).resolve()) if splits else "")
    return out


def missing_caches(datasets: Iterable[str], cache_root: str) -> dict[str, list[str]]:
    """Dataset -> its splits without a valid cache (datasets whose caches are all valid are left out)."""
    from geopeft.cache.build import cache_state

    out: dict[str, list[str]] = {}
    for dataset in sorted(set(datasets)):
        missing = [split for split, key in cache_state(cache_root, dataset).items() if key is None]
        if missing:
            out[dataset] = missing
    return out


def prepare_commands(
    grid: Grid, datasets: Iterable[str] | None = None, cache_root: str | None = None
) -> list[list[str]]:
    """``geopeft prepare`` argument lists for every dataset whose cache is missing; empty when all are valid.

    Args:
        grid: the grid whose ``raw`` mapping says where the native files are.
        datasets: the datasets to check (default: every dataset of the grid's cells); a rerun checks those of
            the cells it resubmits.
        cache_root: the cache directory (default: the grid's); a rerun passes its manifest's.

    Raises:
        SubmitError: a cache is missing and the grid's ``raw`` does not say where the dataset's files are.
    """
    sources = raw_sources(grid)
    root = grid.env.cache_root if cache_root is None else cache_root
    commands = []
    for dataset, splits in missing_caches(datasets or {c.dataset for c in grid.cells}, root).items():
        if dataset not in sources:
            raise SubmitError(
                f"{grid.path}: no valid cache for {dataset} ({', '.join(splits)}) in {root}; "
                f"say where its native files are (raw: {{{dataset}: DIR}} in the grid) to build it in a prepare "
                f"job, or build it first: geopeft prepare {dataset} --raw RAW_DIR --cache {root}"
            )
        commands.append(sources[dataset].command(root))
    return commands


def local_builds(grid: Grid | None, datasets: Iterable[str], cache_root: str, where: str) -> list[RawSource]:
    """The caches a sweep on this machine builds itself before submitting: the missing ones the grid's ``raw`` names.

    Args:
        grid: the grid whose ``raw`` mapping says where the native files are (None: no mapping).
        datasets: the datasets the cells to submit read.
        cache_root: the cache directory.
        where: the grid file or sweep directory, for the message.

    Raises:
        SubmitError: a cache is missing or corrupt and ``raw`` does not say where its dataset's files are; the
            message names every such dataset and the ``geopeft prepare`` commands that build them.
    """
    missing = missing_caches(datasets, cache_root)
    sources = raw_sources(grid) if grid is not None and missing else {}
    lacking = {dataset: splits for dataset, splits in missing.items() if dataset not in sources}
    if lacking:
        what = "; ".join(f"{dataset} ({', '.join(splits)})" for dataset, splits in lacking.items())
        build = " && ".join(f"geopeft prepare {d} --raw RAW_DIR --cache {cache_root}" for d in lacking)
        raise SubmitError(
            f"{where}: no valid cache for {what} in {cache_root}; say where the native files are (raw: "
            f"{{DATASET: DIR}} in the grid) to have it built before the cells start, or build it first: {build}"
        )
    return [sources[dataset] for dataset in missing]


def build_caches(sources: Iterable[RawSource], cache_root: str) -> None:
    """Build (or verify and reuse) the caches of ``sources`` here, as a prepare job would on SLURM."""
    from geopeft.cache.build import prepare

    for source in sources:
        prepare(source.dataset, source.dir, cache_root, splits_dir=source.splits or None, progress=False)
