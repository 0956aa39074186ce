"""Reruns remember: the recorded cluster profile, a SLURM sweep that never falls back to this machine,
a second sweep or rerun that waits for the first one's lock, and the caches a rerun must rebuild."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from geopeft.errors import ConfigError, SubmitError
from geopeft.io import append_jsonl
from geopeft.paths import SweepPaths
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.scheduler.locks import exclusive
from hpc.scheduler.profiles import load_profile, profile_to_dict, record_profile, recorded_profile
from hpc.state.manifest import write_manifest
from hpc.sweep import rerun, submitted_profile


def test_a_recorded_profile_reads_back_equal_shapes_and_setup_included(tmp_path):
    for name in ("example-gpu", "local", "slurm-test"):
        profile = load_profile(name)
        record_profile(tmp_path / f"{name}.json", profile)
        assert recorded_profile(tmp_path / f"{name}.json") == profile
    assert load_profile("example-gpu").shape, "the round trip must cover [[shape]] tables"
    assert json.loads((tmp_path / "example-gpu.json").read_text())["profile"] == profile_to_dict(
        load_profile("example-gpu")
    )
    assert recorded_profile(tmp_path / "absent.json") is None


def test_a_damaged_record_names_its_file_and_the_fix(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text('{"profile": [1, 2]}')
    with pytest.raises(ConfigError, match=rf"{path}: no recorded cluster profile; pass --cluster"):
        recorded_profile(path)
    path.write_text('{"profile": {"name": "x", "executor": "slurm", "partiton": "gpu"}}')
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'partiton'"):
        recorded_profile(path)


def test_a_slurm_sweep_without_a_record_never_falls_back_to_this_machine(tmp_path):
    paths = SweepPaths(tmp_path)
    assert submitted_profile(paths).name == "local"  # never submitted: the embedded default
    append_jsonl(paths.submissions, {"time": 0, "executor": "local", "jobs": {}})
    assert submitted_profile(paths).executor == "local"
    append_jsonl(paths.submissions, {"time": 1, "executor": "slurm", "jobs": {}})
    with pytest.raises(SubmitError, match=r"submitted to slurm but its cluster profile is not recorded.*--cluster"):
        submitted_profile(paths)
    record_profile(paths.cluster, load_profile("slurm-test"))
    assert submitted_profile(paths) == load_profile("slurm-test")


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"pid %d on testhost\\n" % os.getpid())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(lock: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_submitter_waits_for_the_lock_and_a_timeout_names_the_holder(tmp_path):
    lock = tmp_path / ".lock"
    holder = hold(lock, 30)
    try:
        with pytest.raises(SubmitError, match=rf"{lock} is locked by pid {holder.pid} on testhost.*waited 0.3 s"):
            with exclusive(lock, wait_s=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    holder = hold(lock, 1.0)
    start = time.monotonic()
    with exclusive(lock, wait_s=30):
        assert holder.poll() is not None, "the lock was taken while its holder still held it"
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.2  # it waited for the holder instead of failing at once


GRID = """
name: r
output: {root}/runs
cache: {root}/cache
{raw}
env: {{threads: 1}}
defaults: {{model: {{name: prithvi_tiny}}, train: {{lr: 1.0e-3, batch_size: 2, max_epochs: 1}}}}
axes: {{dataset: [sen1floods11], seed: [0, 1]}}
"""


def planned(tmp_path, raw: str):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(GRID.format(root=tmp_path, raw=raw)))
    manifest = plan(load_grid(grid))
    write_manifest(manifest)
    return manifest


def test_a_local_rerun_without_raw_refuses_a_missing_cache_naming_the_prepare_command(tmp_path):
    manifest = planned(tmp_path, "")
    with pytest.raises(SubmitError, match=r"no valid cache for sen1floods11 .*raw:.*geopeft prepare sen1floods11"):
        rerun(manifest.root, which="missing")
    assert not manifest.paths.submissions.exists() and not manifest.paths.cluster.exists()


def test_a_local_rerun_builds_a_missing_cache_from_the_grids_raw_files_first(tmp_path):
    from geopeft.cache.build import cache_state
    from geopeft.data.synthetic import write_sen1floods11
    from hpc.state.cells import State
    from hpc.status import render, wait

    write_sen1floods11(tmp_path / "raw", counts={"train": 2, "val": 1, "test": 1, "bolivia": 1}, size=16)
    manifest = planned(tmp_path, f"raw: {{sen1floods11: {{dir: {tmp_path}/raw, splits: {tmp_path}/raw/splits}}}}")
    dry = rerun(manifest.root, which="missing", dry_run=True)
    assert dry.submitted == (0, 1) and dry.blockers == () and not (tmp_path / "cache").exists()
    report = rerun(manifest.root, which="missing")
    assert report.submitted == (0, 1)
    assert all(key is not None for key in cache_state(str(tmp_path / "cache"), "sen1floods11").values())
    current = wait(manifest, poll_s=0.5, timeout_s=300)
    assert all(s.state is State.DONE for s in current.values()), render(manifest, current)
