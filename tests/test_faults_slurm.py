"""Fault injection on the real single-node SLURM cluster (scripts/slurm-test-cluster.sh): twelve faults, two sweeps.

An array of six tiny cells takes SIGKILL and SIGUSR2 at random steps, scancel of a running and of a pending task,
``scontrol requeue``, a duplicate start by hand, a second sweep at the same time and a rerun while requeued tasks
wait. A second sweep's cache-prepare job fails while its array waits; its cache then gets a corrupt chunk and is
deleted. Each ends with every cell done once and the metrics of an uninterrupted run (tests/fault_suite.py).
"""

import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_suite import (
    FULL,
    LORA,
    Faults,
    at,
    build_cache,
    check_sweep,
    explain,
    flip_a_byte_of_chunk,
    frozen,
    position,
    raw_data,
    reap,
    resume,
    settled,
    until,
    write_grid,
    write_plan,
)

from geopeft.attempts import read_attempts
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.prepare.caches import missing_caches
from hpc.scheduler.profiles import ClusterProfile, load_profile
from hpc.scheduler.slurm import scancel
from hpc.state.cells import State, process_alive, states
from hpc.state.manifest import Manifest, read_manifest
from hpc.sweep import rerun, sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = """
executor = "slurm"
partition = "debug"
cpus_per_task = 1
mem_gb = 2
time_limit_min = 30
max_parallel = 2
setup = ["export HDF5_USE_FILE_LOCKING=FALSE", "export OMP_NUM_THREADS=1"]
"""


def profile(root: Path) -> ClusterProfile:
    path = root / "faults.toml"
    path.write_text(PROFILE)
    return load_profile(str(path))


def show(kind: str, name: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", kind, name], capture_output=True, text=True, check=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def release(job: str, manifest: Manifest, index: int) -> None:
    """Start a requeued task 5 s from now instead of after SLURM's ~120 s BeginTime (a shorter wait, no recovery).

    Only once its first run has ended everywhere: slurmctld can apply the old batch script's exit status to a run
    started at once (tests/test_slurm_faults.py).
    """
    first = read_attempts(manifest.paths.cell(manifest.entry(index).cell_id))[0]

    def why() -> str:
        return explain(manifest)

    until(lambda: show("job", job).get("JobState") == "PENDING", f"job {job} pending again", why, 60)
    until(lambda: not process_alive(first["host"], first["pid"], first.get("pid_start")), "the first run's end", why)
    node = socket.gethostname().split(".")[0]
    until(lambda: "COMPLETING" not in show("node", node).get("State", ""), "the node to leave COMPLETING", why, 60)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+5"], check=True, timeout=30)


def requeued(manifest: Manifest, index: int) -> bool:
    current = states(manifest)[index]
    return current.state is State.PENDING and "requeued" in current.detail


def test_an_array_recovers_from_signals_cancels_requeues_and_a_rerun_beside_requeued_tasks(
    cluster, tmp_path, tmp_path_factory, monkeypatch, request
):
    faults = Faults("slurm")
    raw = raw_data(tmp_path_factory)
    build_cache(raw, tmp_path / "cache")
    grid = write_grid(tmp_path, "signals", raw=raw, cache=tmp_path / "cache", epochs=3, seeds="[0, 1, 2]",
                      tunings=f"[{FULL}, {LORA}]")  # fmt: skip
    planned = plan(load_grid(grid))
    cells = [e.cell_id for e in planned.active()]
    reap(request, planned.root)
    kill0, usr2, stop2, stop3, kill5 = (position(1, 3) for _ in range(5))
    plan_file = write_plan(tmp_path / "plan.json", {
        cells[0]: [at("KILL", kill0)], cells[1]: [at("USR2", usr2)], cells[2]: [at("STOP", stop2)],
        cells[3]: [at("STOP", stop3)], cells[5]: [at("KILL", kill5)],
    }, monkeypatch)  # fmt: skip
    site = profile(tmp_path)
    with ThreadPoolExecutor(2) as pool:  # two sweeps of one grid at once: the second waits for the lock
        first, second = sorted(pool.map(lambda _: sweep(grid, site), range(2)), key=lambda r: -len(r.submitted))
    assert first.submitted == (0, 1, 2, 3, 4, 5) and second.submitted == ()
    assert sum(second.skipped.values()) == 6 and set(second.skipped) <= {State.PENDING, State.RUNNING}
    faults.inject("two sweeps of one grid at once", "none")
    manifest, jobs = read_manifest(first.manifest.root), dict(enumerate(first.job_ids))

    def why() -> str:
        return explain(manifest)

    scancel(jobs[4])  # waits behind the array's %2
    faults.inject("scancel of a pending array task", "rerun")
    faults.inject(f"SIGKILL at epoch {kill0[0]}, step {kill0[1]}", "rerun")
    faults.inject(f"SIGUSR2 at epoch {usr2[0]}, step {usr2[1]} (the cell requeues its own task)", "none",
                  "the test shortens SLURM's requeue delay")  # fmt: skip
    faults.inject(f"SIGKILL at epoch {kill5[0]}, step {kill5[1]}", "rerun")
    until(lambda: frozen(plan_file, cells[2]), f"cell 2 stopped at {stop2}", why)
    scancel(jobs[2])
    faults.inject(f"scancel of a running task (at epoch {stop2[0]}, step {stop2[1]})", "rerun")
    until(lambda: frozen(plan_file, cells[3]), f"cell 3 stopped at {stop3}", why)
    by_hand = subprocess.run([sys.executable, "-m", "hpc", "run-cell", str(grid), "3"], capture_output=True,
                             text=True, timeout=120, check=False)  # fmt: skip
    assert by_hand.returncode == 0 and "already running" in by_hand.stdout, by_hand.stdout + by_hand.stderr
    faults.inject("the same cell started by hand while it runs (geopeft run-cell)", "none")
    subprocess.run(["scontrol", "requeue", jobs[3]], check=True, timeout=30)
    faults.inject(f"scontrol requeue of a running task (at epoch {stop3[0]}, step {stop3[1]})", "none",
                  "the test shortens SLURM's requeue delay")  # fmt: skip
    failed = {i: (State.FAILED, "lost") for i in (0, 2, 4, 5)}
    until(lambda: settled(manifest, failed) and requeued(manifest, 1) and requeued(manifest, 3),
          "four failed cells and two requeued ones", why)  # fmt: skip
    assert not read_attempts(manifest.paths.cell(cells[4])), why()  # cancelled before it started

    with ThreadPoolExecutor(1) as pool:  # the rerun runs while the requeued tasks are released
        redo = pool.submit(rerun, manifest.root, which="failed")
        for index in (1, 3):
            release(jobs[index], manifest, index)
        assert redo.result().submitted == (0, 2, 4, 5), why()
    faults.inject("geopeft rerun while two requeued tasks wait and start", "rerun", "it resubmits only the failed")
    check_sweep(manifest, tmp_path_factory)
    for index in (1, 3):  # the same array task ran both attempts: requeued, not resubmitted
        starts = [a for a in read_attempts(manifest.paths.cell(cells[index])) if a["event"] == "start"]
        assert len(starts) == 2 and starts[0]["slurm_job_id"] == starts[1]["slurm_job_id"], why()
    skipped = [a for a in read_attempts(manifest.paths.cell(cells[3])) if a["event"] == "skipped"]
    assert len(skipped) == 1 and "already running" in skipped[0]["reason"]
    faults.all_recovered()


def test_caches_a_failed_prepare_job_a_corrupt_chunk_and_a_deleted_cache_are_rebuilt_by_reruns(
    cluster, tmp_path, tmp_path_factory, monkeypatch, request
):
    faults = Faults("slurm")
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    shutil.copytree(raw_data(tmp_path_factory), raw)
    grid = write_grid(tmp_path, "caches", raw=raw, cache=cache, epochs=2, seeds="[0, 1]", tunings=f"[{LORA}]")
    planned = plan(load_grid(grid))
    cells = [e.cell_id for e in planned.active()]
    reap(request, planned.root)
    plan_file = write_plan(tmp_path / "plan.json", {c: [at("STOP", position(1, 2))] for c in cells}, monkeypatch)
    raw.rename(tmp_path / "raw-offline")  # the file system of the downloads is offline when the prepare job runs
    report = sweep(grid, profile(tmp_path))
    assert report.submitted == (0, 1) and report.submission.prepare_job
    manifest = read_manifest(report.manifest.root)

    def why() -> str:
        return explain(manifest)

    until(lambda: settled(manifest, {0: (State.FAILED, "prepare"), 1: (State.FAILED, "prepare")}),
          "the cells of a failed prepare job failed (prepare)", why)  # fmt: skip
    faults.inject("the cache-prepare job fails while the array waits for it", "rerun", "the raw files come back first")
    (tmp_path / "raw-offline").rename(raw)
    redo = rerun(manifest.root, which="failed")
    assert redo.submitted == (0, 1) and redo.submission.prepare_job, why()

    pids = [until(lambda c=c: frozen(plan_file, c), f"cell {c} stopped", why) for c in cells]
    test_split = cache / "sen1floods11" / "test.h5"
    flip_a_byte_of_chunk(test_split, 1)  # read only when the trained cells are tested
    faults.inject("a flipped byte in a chunk of a cache file", "rerun")
    for pid in pids:
        resume(pid)
    until(lambda: settled(manifest, {0: (State.FAILED, "data"), 1: (State.FAILED, "data")}),
          "both cells failed on the corrupt chunk", why)  # fmt: skip
    assert not test_split.exists() and list(test_split.parent.glob("test.corrupt-*.h5")), "not moved aside"
    assert missing_caches({"sen1floods11"}, str(cache)) == {"sen1floods11": ["test"]}  # a rerun rebuilds it
    shutil.rmtree(cache / "sen1floods11")  # a scratch purge
    faults.inject("the whole cache deleted before the rerun", "rerun")
    redo = rerun(manifest.root, which="failed")
    assert redo.submitted == (0, 1) and redo.submission.prepare_job, why()
    check_sweep(manifest, tmp_path_factory)
    faults.all_recovered()
