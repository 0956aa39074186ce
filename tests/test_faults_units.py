"""Fast checks of what the fault-injection suite found (tests/test_faults_local.py, tests/test_faults_slurm.py).

The per-cell fault plan that injects the suite's faults; a checkpoint write on a full disk; a cell whose result.json
is invalid; a corrupt cache chunk read by a cell. No sweep, no cluster; a tmpfs is mounted (we are root).
"""

import json
import os
import shutil
import signal

import pytest
import torch
from fault_suite import build_cache, fill, fired, flip_a_byte_of_chunk, raw_data, reference, tmpfs

from geopeft.cache.reader import open_split
from geopeft.cell import run_cell
from geopeft.data.bands import S2_BANDS
from geopeft.errors import CacheError, CheckpointError, ConfigError
from geopeft.io import read_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.train import checkpoint
from geopeft.train import faults as hooks
from hpc.prepare.caches import missing_caches


def test_each_planned_fault_is_sent_once_per_cell(tmp_path):
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps({"abc": ["USR1@1:0", "USR1@2:1"], "other": ["USR1@1:0"]}))
        env = {hooks.FAULT_PLAN: str(plan_file)}
        for _ in range(2):  # a second attempt reaching the same step sends nothing again
            hooks.inject_fault(1, 0, is_main=True, cell="abc", env=env)
        hooks.inject_fault(1, 1, is_main=True, cell="abc", env=env)  # no fault planned at this step
        hooks.inject_fault(2, 1, is_main=False, cell="abc", env=env)  # other ranks send nothing
        assert got == [signal.SIGUSR1] and fired(plan_file, "abc", 1) is None
        hooks.inject_fault(2, 1, is_main=True, cell="abc", env=env)
        assert got == [signal.SIGUSR1] * 2
        record = fired(plan_file, "abc", 0)
        assert record is not None and record["pid"] == os.getpid() and record["fault"] == "USR1@1:0"
        assert fired(plan_file, "other", 0) is None  # faults belong to their cell
        plan_file.write_text(json.dumps({"abc": ["USR1@3"]}))
        with pytest.raises(ConfigError, match="SIGNAL@EPOCH:STEP"):
            hooks.inject_fault(3, 0, is_main=True, cell="abc", env=env)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_checkpoint_write_on_a_full_disk_names_the_cause_and_keeps_the_previous_one(tmp_path, request):
    disk = tmpfs(request, tmp_path / "ckpt", "1m")
    checkpoint.save(disk / "last.pt", {"epoch": 1})
    fill(disk)
    with pytest.raises(CheckpointError, match=r"last.pt: cannot be written \(No space left on device\)"):
        checkpoint.save(disk / "last.pt", {"epoch": 2, "weights": torch.zeros(100_000)})
    assert checkpoint.load(disk / "last.pt") == {"epoch": 1}
    assert sorted(p.name for p in disk.iterdir()) == ["ballast", "last.pt"]  # no temporary file left


@pytest.mark.slow
def test_a_cell_with_an_invalid_result_is_tested_again_from_its_checkpoint(tmp_path, tmp_path_factory):
    cache = tmp_path / "cache"
    build_cache(raw_data(tmp_path_factory), cache)
    env = RunEnv(str(cache), threads=1)
    spec = CellSpec(ModelSpec("prithvi_tiny"), TuningSpec("full"), DecoderSpec("linear"), "sen1floods11",
                    TrainSpec(lr=1e-3, batch_size=2, max_epochs=2, patience=2))  # fmt: skip
    ref = reference(tmp_path_factory, spec, env)
    paths = SweepPaths(tmp_path / "sweep").cell(spec.cell_id)
    shutil.copytree(ref.dir, paths.dir)
    paths.result.write_text("")  # empty: status shows the cell failed (invalid result), so rerun runs it
    result = run_cell(spec, env, paths, log=lambda _: None)
    assert result is not None and result.train.resumed_from_epoch == 2  # tested, not trained again
    assert read_json(paths.result)["regions"] == read_json(ref.result)["regions"]
    (aside,) = paths.dir.glob("result.json.invalid-*")
    assert aside.read_text() == ""


def test_a_corrupt_chunk_a_cell_reads_moves_its_file_aside_so_that_a_rerun_rebuilds_it(tmp_path, tmp_path_factory):
    cache = tmp_path / "cache"
    build_cache(raw_data(tmp_path_factory), cache)
    path = cache / "sen1floods11" / "val.h5"
    ds = open_split(cache, "sen1floods11", "val", bands=S2_BANDS[:3], train=False)
    ds[0]  # opened
    flip_a_byte_of_chunk(path, 1)
    with pytest.raises(CacheError, match=r"val.h5: sample 1 cannot be read .*moved to val\.corrupt-.*geopeft rerun"):
        ds[1]
    assert not path.exists() and len(list(path.parent.glob("val.corrupt-*.h5"))) == 1
    assert missing_caches({"sen1floods11"}, str(cache)) == {"sen1floods11": ["val"]}
    # A file rebuilt at the path meanwhile is not the one this process found corrupt: it stays
    build_cache(raw_data(tmp_path_factory), cache)
    old = open_split(cache, "sen1floods11", "val", bands=S2_BANDS[:3], train=False)
    old[0]
    flip_a_byte_of_chunk(path, 1)
    os.replace(path, tmp_path / "elsewhere.h5")
    build_cache(raw_data(tmp_path_factory), cache)
    with pytest.raises(CacheError, match="delete the file and rebuild it"):
        old[1]
    assert path.exists() and not missing_caches({"sen1floods11"}, str(cache))
