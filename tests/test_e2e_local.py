"""End to end on the local executor: synth -> prepare -> sweep -> fault -> status -> rerun -> tables."""

import textwrap

import pytest

from analysis.tables import write_tables
from geopeft.cache.build import prepare
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import read_json, read_jsonl
from hpc.demo import kill_one_running_cell
from hpc.scheduler.profiles import load_profile
from hpc.state.cells import State
from hpc.state.manifest import read_manifest
from hpc.status import render, wait
from hpc.sweep import rerun, sweep

pytestmark = pytest.mark.slow

GRID = """
name: e2e
output: {root}/runs
cache: {root}/cache
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 2, max_epochs: 10, patience: 10}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 4, alpha: 4}}}}]
  seed: [0, 1]
"""


def test_sweep_status_rerun_tables(tmp_path):
    splits = write_sen1floods11(tmp_path / "raw", counts={"train": 6, "val": 3, "test": 3, "bolivia": 2}, size=64)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(GRID.format(root=tmp_path)))
    site = tmp_path / "workstation.toml"  # a profile of the user's own: reruns must remember it
    site.write_text('executor = "local"\nmax_parallel = 2\ntime_limit_min = 30\n')
    profile = load_profile(str(site))

    report = sweep(grid, profile)
    assert report.submitted == (0, 1, 2, 3) and len(report.job_ids) == 4
    manifest = read_manifest(tmp_path / "runs")
    killed = kill_one_running_cell(manifest.root, timeout_s=300)
    assert killed, "no cell was caught running"

    current = wait(manifest, poll_s=0.5, timeout_s=600)
    states = {i: s.state for i, s in current.items()}
    failed = [i for i, s in states.items() if s is State.FAILED]
    assert len(failed) == 1 and sum(s is State.DONE for s in states.values()) == 3, render(manifest, current)
    assert current[failed[0]].reason == "lost"
    assert "lost" in render(manifest, current)

    again = sweep(grid, profile, dry_run=True)  # done cells are skipped; the failed one would run again
    assert again.submitted == tuple(failed) and again.skipped == {State.DONE: 3}

    redo = rerun(manifest.root, which="failed")  # no profile named: the one the sweep was submitted with
    assert redo.submitted == tuple(failed)
    assert [r["profile"] for r in read_jsonl(manifest.paths.submissions)] == ["workstation", "workstation"]
    current = wait(manifest, poll_s=0.5, timeout_s=600)
    assert all(s.state is State.DONE for s in current.values()), render(manifest, current)

    cell = manifest.paths.cell(manifest.entry(failed[0]).cell_id)
    result = read_json(cell.result)
    assert result["train"]["resumed_from_epoch"] >= 1  # the rerun resumed from ckpt/last.pt
    assert set(result["regions"]) == {"test", "bolivia"}
    assert result["regions"]["bolivia"]["n"] == 2
    assert result["params"]["trainable"] < result["params"]["total"] or result["spec"]["tuning"]["method"] == "full"
    attempts = [line for line in cell.attempts.read_text().splitlines() if '"start"' in line]
    assert len(attempts) == 2

    assert sweep(grid, profile).submitted == ()  # everything done: nothing to submit

    outputs = write_tables(manifest.root)
    tex = next(p for p in outputs.values() if p.suffix == ".tex").read_text()
    assert "\\toprule" in tex and "LoRA" in tex and "Full FT" in tex
