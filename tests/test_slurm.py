"""On a real single-node SLURM cluster (scripts/slurm-test-cluster.sh, started here when it is down).

Tiny cells (prithvi_tiny, 16 px synthetic Sen1Floods11 chips, one epoch) go through sbatch: the cache-prepare
job and the array that waits for it (afterok), a task cancelled with scancel, and ``rerun --failed`` as an
array subset. Nothing is mocked; the cluster must come up, or these tests fail.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from geopeft.attempts import read_attempts
from geopeft.cache.build import prepare
from geopeft.data.synthetic import write_sen1floods11
from hpc.scheduler.profiles import load_profile
from hpc.scheduler.slurm import scancel
from hpc.state.cells import State, states
from hpc.state.manifest import read_manifest
from hpc.status import render, wait
from hpc.sweep import rerun, sweep

pytestmark = pytest.mark.slurm

GRID = """
name: {name}
output: {root}/runs-{name}
cache: {root}/cache
raw: {{sen1floods11: {{dir: {root}/raw, splits: {root}/raw/splits}}}}
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 2, max_epochs: {epochs}, patience: {epochs}}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 4, alpha: 4}}}}]
  seed: {seeds}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm")
    write_sen1floods11(root / "raw", counts={"train": 4, "val": 2, "test": 2, "bolivia": 2}, size=16)
    return root


def grid(root: Path, name: str, epochs: int = 1, seeds: str = "[0, 1]") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(textwrap.dedent(GRID.format(root=root, name=name, epochs=epochs, seeds=seeds)))
    return path


def job_field(job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return fields.get(key, "")


def test_sweep_prepares_cache_first_then_array_runs_to_done(cluster, data):
    profile = load_profile("slurm-test")
    report = sweep(grid(data, "first"), profile)
    done = report.submission
    assert report.submitted == (0, 1, 2, 3) and done.prepare_job, "a missing cache must add a prepare job"
    array_job = report.job_ids[0].split("_")[0]
    assert report.job_ids == tuple(f"{array_job}_{i}" for i in range(4))
    assert f"afterok:{done.prepare_job}" in job_field(array_job, "Dependency") or job_field(array_job, "JobState") in (
        "RUNNING",
        "COMPLETED",
        "COMPLETING",
    ), "the array must wait for the prepare job"
    assert "#SBATCH --array=0-3%2" in done.scripts[1].text and "--signal=USR2@60" in done.scripts[1].text

    manifest = read_manifest(report.manifest.root)
    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert all(s.state is State.DONE for s in current.values()), render(manifest, current)
    cache_built = max(p.stat().st_mtime for p in (data / "cache" / "sen1floods11").glob("*.h5"))
    for entry in manifest.active():
        start = read_attempts(manifest.paths.cell(entry.cell_id))[0]
        assert start["slurm_array_job_id"] == array_job
        assert int(start["slurm_array_task_id"]) == entry.index
        assert start["time"] >= cache_built, "a cell started before the prepare job had built the cache"
    record = [json.loads(line) for line in manifest.paths.submissions.read_text().splitlines()]
    assert record[0]["prepare"]["job_id"] == done.prepare_job and record[1]["array"]["job_id"] == array_job
    assert record[1]["git"].keys() == {"sha", "dirty"}

    again = sweep(grid(data, "first"), profile)  # all done, cache built: nothing to submit, no prepare job
    assert again.submitted == () and again.submission.prepare_job == "" and again.skipped == {State.DONE: 4}


def test_scancelled_task_is_failed_and_rerun_submits_only_its_index(cluster, data):
    profile = load_profile("slurm-test")
    g = grid(data, "cancel", epochs=150, seeds="[0]")
    prepare("sen1floods11", data / "raw", data / "cache", splits_dir=data / "raw" / "splits", progress=False)
    report = sweep(g, profile)
    assert report.submitted == (0, 1) and report.submission.prepare_job == ""
    manifest = read_manifest(report.manifest.root)
    victim = 1
    deadline = time.monotonic() + 120
    while states(manifest)[victim].state is not State.RUNNING:
        assert time.monotonic() < deadline, render(manifest, states(manifest))
        time.sleep(0.2)
    scancel(report.job_ids[victim])

    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert current[victim].state is State.FAILED, render(manifest, current)
    assert current[0].state is State.DONE, render(manifest, current)
    assert "failed:" in render(manifest, current)

    shutil.rmtree(data / "cache" / "sen1floods11")  # lost since the sweep: the rerun rebuilds it first
    redo = rerun(manifest.root, which="failed")  # no profile named: where the sweep went, never this machine
    assert redo.submitted == (victim,) and redo.submission.prepare_job, "the missing cache needs a prepare job"
    assert redo.job_ids == (f"{redo.job_ids[0].split('_')[0]}_0",)
    prep, script = redo.submission.scripts
    assert prep.kind == "prepare" and f"#SBATCH --dependency=afterok:{redo.submission.prepare_job}" in script.text
    assert "#SBATCH --array=0-0%1" in script.text  # one cell is an array task too
    assert rerun(manifest.root, which="failed").submitted == ()  # pending now: not submitted twice
    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert all(s.state is State.DONE for s in current.values()), render(manifest, current)
    starts = [a for a in read_attempts(manifest.paths.cell(manifest.entry(victim).cell_id)) if a["event"] == "start"]
    assert len(starts) == 2 and starts[1]["slurm_array_job_id"] == redo.job_ids[0].split("_")[0]


def test_the_plain_scripts_of_sbatch_run_a_planned_cell_by_hand(cluster, data):
    """`sbatch/cells.sbatch` (no Python on the login node): an array task id is a manifest index."""
    from hpc.plan.grid import load_grid
    from hpc.plan.manifests import plan
    from hpc.state.manifest import write_manifest

    scripts = Path(__file__).resolve().parents[1] / "sbatch"
    for script in scripts.glob("*.sbatch"):
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0, script
        assert "{{" not in script.read_text(), f"{script} is a plain script, not a template"
    manifest = plan(load_grid(grid(data, "byhand", seeds="[0]")))
    write_manifest(manifest)
    prepare("sen1floods11", data / "raw", data / "cache", splits_dir=data / "raw" / "splits", progress=False)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the venv's python
    argv = ["sbatch", "--parsable", "--array=1", "--time=30", f"--chdir={data}", str(scripts / "cells.sbatch")]
    job = subprocess.run([*argv, str(manifest.root)], capture_output=True, text=True, check=True, env=env).stdout
    job = job.strip().split(";")[0]
    log = data / f"geopeft-cells-{job}_1.out"
    deadline = time.monotonic() + 240
    while states(manifest)[1].state is not State.DONE:  # status knows no hand-submitted job: it stays missing
        assert time.monotonic() < deadline, log.read_text() if log.exists() else f"no log {log}"
        time.sleep(1.0)
    assert states(manifest)[0].state is State.MISSING
    start = read_attempts(manifest.paths.cell(manifest.entry(1).cell_id))[0]
    assert (start["slurm_array_job_id"], start["slurm_array_task_id"]) == (job, "1")
