"""The learning-rate search stage: ``geopeft sweep GRID --stage lr``, then ``--stage seeds``.

A grid marks the cells whose learning rate is found by search with ``train.lr: search`` and says how in its
``lr_search`` block (every other cell keeps its written rate, e.g. the paper's table, and skips the search)::

    lr_search:
      lrs: {min: 1.0e-5, max: 1.0e-3, n: 16}   # log-spaced, both ends included; or a list of rates
      seed: 0                                  # the seed of every search run

``--stage lr`` turns every such cell (its seeds collapsed to ``lr_search.seed``) into one cell per rate, in the
sweep directory ``<output>/lr-search``. Each trains with the cell's protocol; its score is the validation mIoU
at its best-validation-loss epoch (the checkpoint a cell tests). ``--stage seeds`` (the default stage) takes,
for each searched cell whose rates are all done, the rate with the best score, records it in
``<output>/lr_choices.json`` (never changed once recorded) and runs the cell's seeded repeats with it; cells whose
search is unfinished wait and are reported. ``geopeft status GRID --stage lr`` shows one row per searched cell
and one column per rate, so that runs differing only in their rate stay apart.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from geopeft.errors import ConfigError
from geopeft.io import atomic_write_json, read_json
from geopeft.paths import CellPaths, SweepPaths
from geopeft.spec import CellSpec


class Stage(StrEnum):
    """A sweep's stage: ``lr`` (the learning-rate search) or ``seeds`` (every cell at its written or chosen rate)."""

    LR = "lr"
    SEEDS = "seeds"


STAGES = tuple(s.value for s in Stage)
SEARCH = "search"
SEARCH_KEYS = ("lrs", "seed")


@dataclass(frozen=True)
class SearchSettings:
    """The ``lr_search`` block of a grid file.

    Args:
        lrs: the candidate rates, ascending.
        seed: the seed of every search run.
    """

    lrs: tuple[float, ...]
    seed: int = 0


def parse_search(value: Any, where: str) -> SearchSettings | None:
    """Read the ``lr_search`` block (None when absent); errors name the key and show a valid block."""
    if value is None:
        return None
    example = "e.g. lr_search: {lrs: {min: 1.0e-5, max: 1.0e-3, n: 16}, seed: 0}"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: lr_search must be a mapping; {example}")
    unknown = [k for k in value if k not in SEARCH_KEYS]
    if unknown:
        raise ConfigError(f"{where}: lr_search: unknown key {unknown[0]!r}; allowed: {', '.join(SEARCH_KEYS)}")
    seed = value.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{where}: lr_search.seed must be a non-negative integer, got {seed!r}")
    lrs = value.get("lrs")
    if isinstance(lrs, Mapping):
        lo, hi, n = lrs.get("min"), lrs.get("max"), lrs.get("n")
        if set(lrs) != {"min", "max", "n"} or not _number(lo) or not _number(hi) or not isinstance(n, int):
            raise ConfigError(f"{where}: lr_search.lrs as a range needs exactly min, max and n; {example}")
        lo, hi = float(lo), float(hi)  # type: ignore[arg-type]  # checked by _number
        if not 0 < lo < hi or n < 2:
            raise ConfigError(f"{where}: lr_search.lrs needs 0 < min < max and n >= 2, got {dict(lrs)}")
        step = (math.log10(hi) - math.log10(lo)) / (n - 1)
        rates = tuple(float(f"{10 ** (math.log10(lo) + i * step):.6g}") for i in range(n))
    elif isinstance(lrs, list) and lrs and all(_number(x) and x > 0 for x in lrs):
        rates = tuple(sorted(float(x) for x in lrs))
    else:
        raise ConfigError(f"{where}: lr_search.lrs must be a list of positive rates or a range; {example}")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"{where}: lr_search.lrs repeats a rate ({list(rates)}); give each once")
    return SearchSettings(rates, seed)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def search_key(spec: CellSpec) -> str:
    """What a search is for: a hash of the spec without its rate and seed (12 hex digits)."""
    d = spec.to_dict()
    del d["seed"], d["train"]["lr"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def search_label(spec: CellSpec) -> str:
    """The slug without the seed, e.g. ``prithvi_eo_v2_100_tl/lora/linear/sen1floods11``."""
    return spec.slug.rsplit("/", 1)[0]


@dataclass
class LrPlan:
    """How one stage treats the cells of a grid as they are expanded (used by :func:`hpc.plan.grid.expand`).

    Args:
        stage: ``lr`` or ``seeds``.
        settings: the grid's ``lr_search`` block.
        root: the grid's ``output`` (the main sweep directory).
        where: the grid file, for messages.
        choices: search key -> recorded or newly made choice (``seeds``).
        new: the choices made now, to record when the sweep is submitted.
        waiting: labels of the cells that wait for their search (``seeds``).
    """

    stage: str
    settings: SearchSettings | None
    root: Path
    where: str
    choices: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    _emitted: set[str] = field(default_factory=set)

    @classmethod
    def make(cls, doc: Mapping[str, Any], root: Path, stage: str, where: str) -> LrPlan:
        """The plan of ``stage`` for a parsed grid document whose sweep directory is ``root``."""
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
        plan = cls(Stage(stage), parse_search(doc.get("lr_search"), where), root, where)
        if stage == Stage.SEEDS and plan.settings is not None:
            plan.choices = recorded_choices(root)
            made = make_choices(root, plan.settings)
            plan.new = {k: v for k, v in made.items() if k not in plan.choices}
            plan.choices.update(plan.new)
        return plan

    @property
    def output(self) -> Path:
        """The sweep directory of this stage."""
        return SweepPaths(self.root).search.root if self.stage == Stage.LR else self.root

    def cells(self, cell: dict[str, Any], label: str) -> list[dict[str, Any]]:
        """The cells (as dicts with a numeric rate) that one expanded grid cell stands for in this stage."""
        train = cell.get("train", {})
        if not isinstance(train, Mapping) or train.get("lr") != SEARCH:
            return [cell] if self.stage == Stage.SEEDS else []
        if self.settings is None:
            raise ConfigError(
                f"{self.where}: {label} has train.lr: search but the grid has no lr_search block; add one, "
                "e.g. lr_search: {lrs: {min: 1.0e-5, max: 1.0e-3, n: 16}, seed: 0}"
            )
        full = {"tuning": {"method": "full"}, "decoder": {"name": "linear"}, **cell}  # hpc.plan.grid's defaults
        probe = CellSpec.from_dict(_with(full, self.settings.lrs[0], self.settings.seed), f"{self.where}: {label}")
        key = search_key(probe)
        if self.stage == Stage.SEEDS:
            if key in self.choices:
                return [_with(cell, float(self.choices[key]["lr"]), cell.get("seed", 0))]
            self.waiting.append(f"{search_label(probe)}/s{cell.get('seed', 0)}")
            return []
        if key in self._emitted:
            return []
        self._emitted.add(key)
        return [_with(cell, lr, self.settings.seed) for lr in self.settings.lrs]

    def empty_error(self) -> ConfigError | None:
        """Why the stage has no cells, when that is the search's doing (else None)."""
        if self.stage == Stage.LR:
            return ConfigError(
                f"{self.where}: no cell has train.lr: search, so the lr stage has nothing to search; "
                "run the grid without --stage lr"
            )
        if self.waiting:
            return ConfigError(
                f"{self.where}: every cell waits for its learning-rate search ({len(self.waiting)} cells); "
                f"run `geopeft sweep {self.where} --stage lr`, wait for it, then `--stage seeds`"
            )
        return None


def _with(cell: dict[str, Any], lr: float, seed: Any) -> dict[str, Any]:
    return {**cell, "train": {**cell.get("train", {}), "lr": lr}, "seed": seed}


def recorded_choices(root: Path) -> dict[str, Any]:
    """The choices recorded in ``<root>/lr_choices.json`` (search key -> choice), empty when none."""
    path = SweepPaths(root).lr_choices
    if not path.exists():
        return {}
    choices = read_json(path).get("choices", {})
    if not isinstance(choices, dict):
        raise ConfigError(f"{path}: 'choices' must be a mapping; delete the file to choose again")
    return choices


def val_score(paths: CellPaths) -> tuple[float, int] | None:
    """Validation mIoU at the best-validation-loss epoch of a finished cell, with that epoch (None if unfinished)."""
    if not paths.result.exists() or not paths.metrics_log.exists():
        return None
    best = int(read_json(paths.result)["train"]["best_epoch"])
    score = None
    for line in paths.metrics_log.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("epoch") == best:
                score = float(record["val_miou"])  # the last line of that epoch wins (resumed attempts)
    return None if score is None else (score, best)


def make_choices(root: Path, settings: SearchSettings) -> dict[str, Any]:
    """Choose a rate for every search in ``<root>/lr-search`` whose rates are all done (search key -> choice)."""
    from hpc.state.manifest import (
        read_manifest,  # here: the manifest module imports the grid, which imports this lazily
    )

    search = SweepPaths(root).search
    if not search.manifest.exists():
        return {}
    runs: dict[str, dict[float, tuple[CellSpec, tuple[float, int] | None]]] = {}
    for entry in read_manifest(search.root).entries:
        spec = entry.spec
        if spec.seed == settings.seed and any(math.isclose(spec.train.lr, lr) for lr in settings.lrs):
            runs.setdefault(search_key(spec), {})[spec.train.lr] = (spec, val_score(search.cell(entry.cell_id)))
    choices: dict[str, Any] = {}
    for key, by_lr in runs.items():
        scored = [(lr, spec, s) for lr, (spec, s) in sorted(by_lr.items()) if s is not None]
        if len(scored) < len(settings.lrs):
            continue
        lr, spec, _ = max(scored, key=lambda t: (t[2][0], -t[0]))  # ties: the smaller rate
        choices[key] = {
            "label": search_label(spec),
            "lr": lr,
            "cell_id": replace(spec, train=replace(spec.train, lr=lr)).cell_id,
            "metric": "val mIoU at the best-val-loss epoch",
            "trials": [{"lr": r, "val_miou": s[0], "best_epoch": s[1], "cell_id": c.cell_id} for r, c, s in scored],
        }
    return choices


def record(stage: str, root: Path, settings: SearchSettings | None, new: Mapping[str, Any]) -> None:
    """Write what a submitted stage decided: the search settings (``lr``) or the new choices (``seeds``)."""
    if stage == Stage.LR and settings is not None:
        path = SweepPaths(root).search.search_settings
        atomic_write_json(path, {"lrs": list(settings.lrs), "seed": settings.seed})
    elif new:
        atomic_write_json(SweepPaths(root).lr_choices, {"choices": {**recorded_choices(root), **new}})


def is_search_sweep(root: Path) -> bool:
    """Whether ``root`` is the sweep directory of an lr stage."""
    return SweepPaths(root).search_settings.exists()
