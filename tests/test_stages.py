"""The learning-rate search stage (``hpc.plan.lr_search``): candidates, choices by validation mIoU, waiting cells."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from results import write_result

from geopeft.errors import ConfigError
from geopeft.paths import SweepPaths
from hpc.plan.grid import load_grid
from hpc.plan.lr_search import parse_search, record, recorded_choices
from hpc.plan.manifests import plan
from hpc.state.cells import states
from hpc.state.manifest import write_manifest
from hpc.status import render_search

GRID = """
name: t
output: {out}
cache: {cache}
lr_search: {{lrs: [1.0e-4, 1.0e-3, 1.0e-2], seed: 7}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 4}}
axes:
  tuning: [{{method: full}}, {{method: lora}}]
  dataset: [sen1floods11]
  seed: [0, 1]
overrides:
  - where: {{tuning.method: lora}}
    set: {{train.lr: search}}
"""


def write(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text.format(out=tmp_path / "runs", cache=tmp_path / "cache")))
    return path


def finish(root: Path, cell_id: str, val_by_epoch: dict[int, float], best_epoch: int) -> None:
    """Write what a finished cell leaves behind: its result (best epoch) and per-epoch metrics."""
    cell = SweepPaths(root).cell(cell_id)
    cell.dir.mkdir(parents=True, exist_ok=True)
    write_result(cell, best_epoch=best_epoch)
    cell.metrics_log.write_text(
        "".join(json.dumps({"epoch": e, "val_miou": v}) + "\n" for e, v in val_by_epoch.items())
    )


def test_lr_stage_expands_search_cells_once_per_rate(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path), stage="lr")
    assert grid.output == SweepPaths(tmp_path / "runs").search.root
    assert [(c.tuning.method, c.seed, c.train.lr) for c in grid.cells] == [
        ("lora", 7, 1e-4),
        ("lora", 7, 1e-3),
        ("lora", 7, 1e-2),
    ]


def test_seeds_stage_waits_then_uses_the_best_rate(tmp_path: Path) -> None:
    path = write(tmp_path)
    grid = load_grid(path)
    assert [c.tuning.method for c in grid.cells] == ["full", "full"]
    assert grid.plan is not None and grid.plan.waiting == [
        "prithvi_tiny/lora/linear/sen1floods11/s0",
        "prithvi_tiny/lora/linear/sen1floods11/s1",
    ]
    search = load_grid(path, stage="lr")
    manifest = plan(search)
    write_manifest(manifest)
    scores = {1e-4: 0.5, 1e-3: 0.7, 1e-2: 0.9}
    for spec in search.cells[:2]:
        finish(search.output, spec.cell_id, {1: 0.1, 2: scores[spec.train.lr], 3: 0.99}, best_epoch=2)
    assert load_grid(path).plan.waiting  # one rate unfinished: still waiting
    # The 1e-2 run has the best val mIoU at its last epoch, but not at its best-val-loss epoch.
    finish(search.output, search.cells[2].cell_id, {1: 0.6, 2: 0.95}, best_epoch=1)
    grid = load_grid(path)
    assert not grid.plan.waiting
    lora = [c for c in grid.cells if c.tuning.method == "lora"]
    assert [(c.seed, c.train.lr) for c in lora] == [(0, 1e-3), (1, 1e-3)]
    assert not SweepPaths(tmp_path / "runs").lr_choices.exists()  # recorded only on submission
    record(grid.stage, grid.plan.root, grid.plan.settings, grid.plan.new)
    (choice,) = recorded_choices(tmp_path / "runs").values()
    assert choice["lr"] == 1e-3 and choice["label"] == "prithvi_tiny/lora/linear/sen1floods11"
    assert sorted((t["lr"], t["val_miou"]) for t in choice["trials"]) == [(1e-4, 0.5), (1e-3, 0.7), (1e-2, 0.6)]
    text = render_search(manifest, states(manifest))
    assert "1.00e-03" in text and "1.00e-02" in text and "70.0*" in text and "60.0" in text


def test_recorded_choices_are_never_changed(tmp_path: Path) -> None:
    path = write(tmp_path)
    grid = load_grid(path, stage="lr")
    write_manifest(plan(grid))
    for spec in grid.cells:
        finish(grid.output, spec.cell_id, {1: spec.train.lr}, best_epoch=1)
    seeds = load_grid(path)
    record(seeds.stage, seeds.plan.root, seeds.plan.settings, seeds.plan.new)
    assert {c.train.lr for c in seeds.cells if c.tuning.method == "lora"} == {1e-2}
    finish(grid.output, grid.cells[0].cell_id, {1: 0.99}, best_epoch=1)  # a rerun scores better now
    again = load_grid(path)
    assert not again.plan.new and {c.train.lr for c in again.cells if c.tuning.method == "lora"} == {1e-2}


def test_errors_name_the_fix(tmp_path: Path) -> None:
    no_search = GRID.replace("lr_search: {{lrs: [1.0e-4, 1.0e-3, 1.0e-2], seed: 7}}\n", "")
    with pytest.raises(ConfigError, match="no lr_search block"):
        load_grid(write(tmp_path, no_search))
    nothing = GRID.replace("set: {{train.lr: search}}", "set: {{train.lr: 1.0e-4}}")
    with pytest.raises(ConfigError, match="nothing to search"):
        load_grid(write(tmp_path, nothing), stage="lr")
    only_search = GRID.replace("tuning: [{{method: full}}, {{method: lora}}]", "tuning: [{{method: lora}}]")
    with pytest.raises(ConfigError, match="--stage lr"):
        load_grid(write(tmp_path, only_search))
    with pytest.raises(ConfigError, match="unknown stage"):
        load_grid(write(tmp_path), stage="hpo")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"lrs": {"min": 1e-3, "max": 1e-5, "n": 4}}, "0 < min < max"),
        ({"lrs": {"min": 1e-5, "max": 1e-3}}, "exactly min, max and n"),
        ({"lrs": [1e-3, 1e-3]}, "repeats a rate"),
        ({"lrs": [1e-3], "trials": 3}, "unknown key 'trials'"),
        ({"lrs": [-1.0]}, "list of positive rates"),
    ],
)
def test_search_block_is_checked(block: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search(block, "g.yaml")


def test_range_is_log_spaced_with_both_ends() -> None:
    settings = parse_search({"lrs": {"min": 1e-5, "max": 1e-3, "n": 5}}, "g.yaml")
    assert settings is not None
    assert settings.lrs == pytest.approx((1e-5, 10**-4.5, 1e-4, 10**-3.5, 1e-3), rel=1e-5)
