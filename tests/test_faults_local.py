"""Fault injection on the local executor (submitit's LocalExecutor): one sweep of four tiny cells takes nine faults.

Two sweeps of the grid started at once; SIGKILL and SIGUSR2 at random steps; a full disk while a checkpoint is
written (a small tmpfs on the cell's ckpt/); a cell killed twice, its last.pt lost in between; the cache deleted
before the rerun; a truncated result.json. Each ends with every cell done once and the metrics of an uninterrupted
run (tests/fault_suite.py).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fault_suite import (
    FULL,
    LORA,
    SPLITS,
    Faults,
    at,
    build_cache,
    check_sweep,
    explain,
    fill,
    frozen,
    position,
    raw_data,
    reap,
    resume,
    settled,
    tmpfs,
    until,
    write_grid,
    write_plan,
)

from geopeft.io import read_jsonl
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.state.cells import State, states
from hpc.state.manifest import read_manifest
from hpc.sweep import rerun

PROFILE = 'executor = "local"\nmax_parallel = 2\ntime_limit_min = 30\nsignal_lead_s = 60\n'


def sweep_twice_at_once(grid: Path, profile: Path, logs: Path) -> list[str]:
    """Two ``geopeft sweep`` processes of one grid started together; what each printed."""
    cmd = [sys.executable, "-m", "hpc", "sweep", str(grid), "--cluster", str(profile)]
    outs = [logs / f"sweep-{k}.out" for k in range(2)]
    procs = []
    for out in outs:  # a file, not a pipe: the cells it starts keep its stdout open
        with open(out, "w") as fh:
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT))
    for proc, out in zip(procs, outs, strict=True):
        assert proc.wait(timeout=180) == 0, out.read_text()
    return [out.read_text() for out in outs]


@pytest.mark.slow
def test_local_sweep_recovers_from_kills_preemption_full_disk_and_lost_files(
    tmp_path, tmp_path_factory, monkeypatch, request
):
    faults = Faults("local")
    raw = raw_data(tmp_path_factory)
    cache = tmp_path / "cache"
    build_cache(raw, cache)
    grid = write_grid(tmp_path, "local", raw=raw, cache=cache, epochs=3, seeds="[0, 1]", tunings=f"[{FULL}, {LORA}]")
    profile = tmp_path / "workstation.toml"
    profile.write_text(PROFILE)
    planned = plan(load_grid(grid))  # the cell ids, before anything runs: the full disk is mounted first
    cells = [e.cell_id for e in planned.active()]
    kill0, usr2, kill3a, kill3b = position(1, 3), position(1, 3), position(2, 2), position(3, 3)
    plan_file = write_plan(tmp_path / "plan.json", {
        cells[0]: [at("KILL", kill0)], cells[1]: [at("USR2", usr2)], cells[2]: ["STOP@2:0"],
        cells[3]: [at("KILL", kill3a), at("KILL", kill3b)],
    }, monkeypatch)  # fmt: skip
    disk = tmpfs(request, planned.paths.cell(cells[2]).ckpt_dir, "32m")
    reap(request, planned.root)

    outs = sweep_twice_at_once(grid, profile, tmp_path)
    faults.inject("two `geopeft sweep` of one grid at once", "none")
    heads = sorted(o.split("\n")[0].split(": ", 1)[1].split(";")[0] for o in outs)
    assert heads == ["submitted 0 cells []", "submitted 4 cells [0, 1, 2, 3]"], outs  # the second waited
    manifest = read_manifest(planned.root)

    def why() -> str:
        return explain(manifest)

    faults.inject(f"SIGKILL at epoch {kill0[0]}, step {kill0[1]}", "rerun")
    faults.inject(f"SIGUSR2 at epoch {usr2[0]}, step {usr2[1]} (no requeue outside SLURM)", "rerun")
    faults.inject(f"SIGKILL at epoch {kill3a[0]}, step {kill3a[1]}", "rerun")
    pid = until(lambda: frozen(plan_file, cells[2]), "cell 2 to stop at epoch 2, step 0", why)
    ballast = fill(disk)  # last.pt and best.pt of epoch 1 are on it; the writes of epoch 2 find no space
    faults.inject("disk full while checkpoints are written (tmpfs)", "rerun", "the test frees the space first")
    resume(pid)
    failed = {0: (State.FAILED, "lost"), 1: (State.FAILED, "preempted"), 2: (State.FAILED, "error"),
              3: (State.FAILED, "lost")}  # fmt: skip
    until(lambda: settled(manifest, failed), "four failed cells", why)
    assert "No space left on device" in (manifest.paths.cell(cells[2]).failed.read_text()), why()
    assert sorted(p.name for p in disk.iterdir()) == ["ballast", "best.pt", "last.pt"]  # no temporary file left

    manifest.paths.cell(cells[3]).last_ckpt.unlink()  # scratch purged the killed cell's checkpoint
    faults.inject("ckpt/last.pt of a killed cell deleted", "rerun", "trains again from the start")
    shutil.rmtree(cache / "sen1floods11")
    faults.inject("cache deleted before the rerun", "rerun", "a local rerun rebuilds it from the grid's raw files")
    ballast.unlink()
    assert rerun(manifest.root, which="failed").submitted == (0, 1, 2, 3)
    assert sorted(p.name for p in (cache / "sen1floods11").glob("*.h5")) == sorted(f"{s}.h5" for s in SPLITS)
    faults.inject(f"SIGKILL at epoch {kill3b[0]}, step {kill3b[1]} (the same cell again)", "rerun")
    again = {0: (State.DONE, ""), 1: (State.DONE, ""), 2: (State.DONE, ""), 3: (State.FAILED, "lost")}
    until(lambda: settled(manifest, again), "three done, the twice killed one failed", why)
    result = manifest.paths.cell(cells[0]).result
    result.write_text(result.read_text()[: len(result.read_text()) // 2])
    faults.inject("result.json of a done cell truncated", "rerun", "tested again, not trained")
    assert states(manifest)[0].reason == "invalid result"
    assert rerun(manifest.root, which="failed").submitted == (0, 3)
    check_sweep(manifest, tmp_path_factory, retested={0})
    starts = [sum(a["event"] == "start" for a in read_jsonl(manifest.paths.cell(c).attempts)) for c in cells]
    assert starts == [3, 2, 2, 3], why()
    faults.all_recovered()
