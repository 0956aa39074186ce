"""One live owner per cell: the lease, its takeover rules, and run_cell's behaviour around it."""

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geopeft.attempts import start_attempt
from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import atomic_write_json, read_json, read_jsonl
from geopeft.lease import Holder, Lease, attempt_times, current, generations
from geopeft.paths import CellPaths, SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec


def foreign(paths: CellPaths, generation: int, *, heartbeat: float, host: str = "another-node", **extra) -> None:
    """A lease generation written as another process would have written it."""
    paths.lease_dir.mkdir(parents=True, exist_ok=True)
    record = {"generation": generation, "host": host, "pid": 4242, "pid_start": 1, "started": heartbeat - 5}
    record |= {"heartbeat": heartbeat, "released": False, "attempt": None, **extra}
    atomic_write_json(paths.lease_dir / f"{generation:06d}.json", record)


def test_first_starter_takes_the_lease_and_a_second_finds_it_alive(tmp_path):
    paths = CellPaths(tmp_path / "cell")
    lease = Lease.acquire(paths)
    assert isinstance(lease, Lease) and lease.generation == 1
    again = Lease.acquire(paths)
    assert isinstance(again, Holder) and again.generation == 1 and again.alive()
    assert f"pid {os.getpid()} on {socket.gethostname()}" in again.describe()
    lease.release()
    assert not current(paths).alive()  # released: the next starter may take it at once
    taken = Lease.acquire(paths)
    assert isinstance(taken, Lease) and taken.generation == 2 and generations(paths) == [1, 2]
    taken.release()


def test_a_dead_local_owner_and_an_expired_remote_one_are_taken_over(tmp_path, monkeypatch):
    paths = CellPaths(tmp_path / "cell")
    foreign(paths, 1, heartbeat=time.time(), host=socket.gethostname(), pid=2**22 + 17)  # no such pid here
    lease = Lease.acquire(paths)
    assert isinstance(lease, Lease) and lease.generation == 2
    lease.release()
    foreign(paths, 3, heartbeat=time.time() - 30)  # another node, heartbeat 30 s ago: alive under the default TTL
    holder = Lease.acquire(paths)
    assert isinstance(holder, Holder) and holder.generation == 3 and "another-node" in holder.describe()
    monkeypatch.setenv("GEOPEFT_LEASE_TTL_S", "10")  # now it has expired
    lease = Lease.acquire(paths)
    assert isinstance(lease, Lease) and lease.generation == 4
    lease.release()


def _race(root: str, queue) -> None:
    taken = Lease.acquire(CellPaths(Path(root)))
    queue.put(isinstance(taken, Lease))
    time.sleep(1.0)  # hold it while the others look


def test_of_many_simultaneous_starters_exactly_one_wins(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "cell"), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    wins = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(wins) == 1 and generations(CellPaths(tmp_path / "cell")) == [1]


def test_a_taken_over_owner_knows_it_and_stops_writing_its_generation(tmp_path):
    paths = CellPaths(tmp_path / "cell")
    lease = Lease.acquire(paths)
    assert isinstance(lease, Lease) and lease.owned()
    foreign(paths, 2, heartbeat=time.time())  # someone took over after this owner's heartbeat expired
    assert not lease.owned() and lease.lost
    before = (paths.lease_dir / "000001.json").read_text()
    lease.update(attempt=3)
    lease.release()
    assert (paths.lease_dir / "000001.json").read_text() == before  # the stale owner writes nothing more


def test_heartbeat_thread_refreshes_the_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOPEFT_LEASE_HEARTBEAT_S", "0.05")
    paths = CellPaths(tmp_path / "cell")
    lease = Lease.acquire(paths)
    assert isinstance(lease, Lease)
    first = current(paths).record["heartbeat"]
    with lease:
        time.sleep(0.3)
        assert current(paths).record["heartbeat"] > first
    assert current(paths).record["released"]


def test_attempt_times_use_end_lines_then_the_last_heartbeat(tmp_path):
    paths = CellPaths(tmp_path / "cell")
    start = time.time()
    assert start_attempt(paths) == 1
    (paths.attempts).write_text(
        json.dumps({"event": "start", "attempt": 1, "time": start - 100})
        + "\n"
        + json.dumps({"event": "end", "attempt": 1, "time": start - 90, "status": "failed", "reason": "oom"})
        + "\n"
        + json.dumps({"event": "start", "attempt": 2, "time": start - 80})
        + "\n"
        + json.dumps({"event": "start", "attempt": 3, "time": start - 20})
        + "\n"
    )
    foreign(paths, 1, heartbeat=start - 50, attempt=2)  # attempt 2 was killed; its last heartbeat 30 s in
    assert attempt_times(paths) == pytest.approx([10.0, 30.0, 0.0])
    assert attempt_times(paths, now=start) == pytest.approx([10.0, 30.0, 20.0])  # attempt 3 is the running one


# --- run_cell with the lease -----------------------------------------------------------------------------------

SPEC = CellSpec(
    model=ModelSpec("prithvi_tiny"),
    tuning=TuningSpec("full"),
    decoder=DecoderSpec("linear"),
    dataset="sen1floods11",
    train=TrainSpec(lr=1e-3, batch_size=4, max_epochs=2),
)
LAUNCH = """
import json, sys
from pathlib import Path
from geopeft.cell import run_cell
from geopeft.paths import CellPaths
from geopeft.spec import CellSpec, RunEnv
spec, env = CellSpec.from_dict(json.loads(sys.argv[1])), RunEnv(**json.loads(sys.argv[2]))
r = run_cell(spec, env, CellPaths(Path(sys.argv[3])))
print("SKIPPED" if r is None else "TRAINED")
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("lease")
    splits = write_sen1floods11(root / "raw", counts={"train": 8, "val": 2, "test": 2, "bolivia": 2}, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return RunEnv(str(root / "cache"), threads=1)


def snapshot(paths: CellPaths) -> dict[str, bytes]:
    return {str(p.relative_to(paths.dir)): p.read_bytes() for p in sorted(paths.dir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_second_starter_leaves_a_live_cell_alone(env, tmp_path):
    paths = SweepPaths(tmp_path).cell(SPEC.cell_id)
    paths.dir.mkdir(parents=True)
    foreign(paths, 1, heartbeat=time.time(), slurm_job_id="99")
    before = snapshot(paths)
    assert run_cell(SPEC, env, paths, log=lambda _: None) is None
    after = snapshot(paths)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed <= {"attempts.jsonl", "spec.json"}  # one skipped line (and spec.json, which was missing)
    (line,) = read_jsonl(paths.attempts)
    assert line["event"] == "skipped" and "already running (pid 4242 on another-node, SLURM job 99" in line["reason"]
    assert not paths.result.exists() and not paths.failed.exists() and not paths.ckpt_dir.exists()


@pytest.mark.slow
def test_two_processes_started_at_once_train_the_cell_once(env, tmp_path):
    paths = SweepPaths(tmp_path).cell(SPEC.cell_id)
    args = [json.dumps(SPEC.to_dict()), json.dumps(env.to_dict()), str(paths.dir)]
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = sorted(p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs)
    assert outs in (["SKIPPED", "TRAINED"], ["TRAINED", "TRAINED"])  # the second may start after the first ended
    attempts = read_jsonl(paths.attempts)
    assert sum(a["event"] == "start" for a in attempts) == 1  # a finished cell is never trained again
    assert [r["epoch"] for r in read_jsonl(paths.metrics_log)] == [1, 2]
    assert read_json(paths.result)["train"]["epochs_run"] == 2


@pytest.mark.slow
def test_a_superseded_owner_stops_without_writing_the_cells_records(env, tmp_path):
    spec = CellSpec.from_dict({**SPEC.to_dict(), "train": {**SPEC.to_dict()["train"], "max_epochs": 100}})
    paths = SweepPaths(tmp_path).cell(spec.cell_id)
    args = [json.dumps(spec.to_dict()), json.dumps(env.to_dict()), str(paths.dir)]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not paths.progress.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert paths.progress.exists(), "the cell never finished an epoch"
    foreign(paths, generations(paths)[-1] + 1, heartbeat=time.time())  # another node takes the cell over
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "another process took this cell over" in err
    ends = [a for a in read_jsonl(paths.attempts) if a["event"] == "end"]
    assert [(a["status"], a["reason"]) for a in ends] == [("failed", "superseded")]
    assert not paths.failed.exists() and not paths.result.exists()  # the new owner's to write
    assert not read_json(paths.lease_dir / "000001.json")["released"]  # the old generation was left as it was
