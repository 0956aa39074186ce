"""The kit of the fault-injection suite (tests/test_faults_*.py): data, grids, fault plans, final checks, the tally.

Every sweep of the suite ends with the same checks (:func:`check_sweep`): every cell done once, its metrics equal to
an uninterrupted run of the same spec and seed (:func:`reference`), no two attempts that trained at the same time
(attempts.jsonl and the lease generations), each epoch once in metrics.jsonl, and no file lost. Faults are sent
inside a cell by ``GEOPEFT_FAULT_PLAN`` (:mod:`geopeft.train.faults`): once per cell, at a step drawn at random
(``GEOPEFT_FAULT_SEED`` repeats a draw); ``STOP`` freezes a cell at its step for a fault from outside.

The tally (:data:`TALLY`) is printed by ``pytest_terminal_summary`` in conftest.py.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import pytest

from geopeft.attempts import read_attempts
from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import read_json, read_jsonl
from geopeft.lease import generations, read_holder
from geopeft.paths import CellPaths, SweepPaths
from geopeft.spec import CellSpec, RunEnv
from geopeft.train import checkpoint
from geopeft.train.faults import FAULT_PLAN, fired_dir
from hpc.state.cells import State, process_alive, states
from hpc.state.manifest import Manifest
from hpc.status import render, wait

SEED = int(os.environ.get("GEOPEFT_FAULT_SEED") or random.SystemRandom().randrange(10_000))
RNG = random.Random(SEED)
STEPS = 2  # optimiser steps per epoch: 4 train samples, batch size 2
SPLITS = ("train", "val", "test", "bolivia")
CELL_FILES = ("spec.json", "attempts.jsonl", "progress.json", "metrics.jsonl", "result.json", "ckpt/last.pt",
              "ckpt/best.pt")  # fmt: skip
TIMING = ("epoch_s", "samples", "partial")  # of the attempt that trained the epoch, not of the training

GRID = """
name: {name}
output: {root}/runs-{name}
cache: {cache}
raw: {{sen1floods11: {{dir: {raw}, splits: {raw}/splits}}}}
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 2, max_epochs: {epochs}, patience: {epochs}}}
axes:
  dataset: [sen1floods11]
  tuning: {tunings}
  seed: {seeds}
"""
FULL = "{method: full}"
LORA = "{method: lora, options: {r: 2, alpha: 2, dropout: 0.2}}"  # dropout: a resume must restore the RNG too


# --- the tally -------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault and the recovery it is expected to need (``none``, ``rerun`` or ``manual``)."""

    executor: str
    what: str
    recovery: str
    note: str = ""
    recovered: bool = False


@dataclass
class Tally:
    """Every fault the suite injected, whether it recovered, and the seed of the random steps."""

    faults: list[Fault] = field(default_factory=list)

    def lines(self) -> list[str]:
        by = {k: [f for f in self.faults if f.recovered and f.recovery == k] for k in ("none", "rerun", "manual")}
        lost = [f for f in self.faults if not f.recovered]
        out = [
            f"  [{f.executor}] {f.what}: "
            + ("NOT RECOVERED" if not f.recovered else {"none": "needed nothing", "rerun": "geopeft rerun"}.get(
                f.recovery, "a manual step")) + (f" ({f.note})" if f.note else "")
            for f in self.faults
        ]  # fmt: skip
        out.append(
            f"fault tally: {len(self.faults)} injected / {len(by['none']) + len(by['rerun'])} recovered without a "
            f"manual step ({len(by['rerun'])} by the documented geopeft rerun, {len(by['none'])} needed nothing at "
            f"all) / {len(by['manual'])} recovered after a manual step / {len(lost)} not recovered "
            f"(GEOPEFT_FAULT_SEED={SEED})"
        )
        return out


TALLY = Tally()


class Faults:
    """The faults of one test: recorded as injected, marked recovered once the test's final checks passed."""

    def __init__(self, executor: str) -> None:
        self.executor = executor
        self.mine: list[Fault] = []

    def inject(self, what: str, recovery: str, note: str = "") -> None:
        assert recovery in ("none", "rerun", "manual")
        fault = Fault(self.executor, what, recovery, note)
        self.mine.append(fault)
        TALLY.faults.append(fault)

    def all_recovered(self) -> None:
        for fault in self.mine:
            fault.recovered = True


def position(first_epoch: int, last_epoch: int) -> tuple[int, int]:
    """A random (epoch, step) in ``first_epoch..last_epoch`` (inclusive)."""
    return RNG.randint(first_epoch, last_epoch), RNG.randrange(STEPS)


def at(signal_name: str, where: tuple[int, int]) -> str:
    return f"{signal_name}@{where[0]}:{where[1]}"


# --- data, grids, references -----------------------------------------------------------------------------------

_RAW: list[Path] = []
_REFERENCES: dict[str, CellPaths] = {}


def raw_data(factory: pytest.TempPathFactory) -> Path:
    """The synthetic Sen1Floods11 download every sweep of the suite builds its cache from (written once)."""
    if not _RAW:
        root = factory.mktemp("fault_raw")
        write_sen1floods11(root, counts={"train": 4, "val": 2, "test": 2, "bolivia": 2}, size=16)
        _RAW.append(root)
    return _RAW[0]


def build_cache(raw: Path, cache: Path) -> None:
    prepare("sen1floods11", raw, cache, splits_dir=raw / "splits", progress=False)


def write_grid(root: Path, name: str, *, raw: Path, cache: Path, epochs: int, seeds: str, tunings: str) -> Path:
    path = root / f"{name}.yaml"
    text = GRID.format(root=root, name=name, raw=raw, cache=cache, epochs=epochs, seeds=seeds, tunings=tunings)
    path.write_text(textwrap.dedent(text))
    return path


def reference(factory: pytest.TempPathFactory, spec: CellSpec, env: RunEnv) -> CellPaths:
    """The cell trained in this process without any fault, on its own cache of the same download (once per spec)."""
    if spec.cell_id not in _REFERENCES:
        root = factory.mktemp("fault_reference")
        if not (root.parent / "reference-cache").exists():
            build_cache(raw_data(factory), root.parent / "reference-cache")
        paths = SweepPaths(root).cell(spec.cell_id)
        run_cell(spec, replace(env, cache_root=str(root.parent / "reference-cache")), paths, log=lambda _: None)
        _REFERENCES[spec.cell_id] = paths
    return _REFERENCES[spec.cell_id]


def write_plan(path: Path, faults: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a fault plan (cell id -> faults) and point the cells started from here on at it."""
    path.write_text(json.dumps(faults))
    monkeypatch.setenv(FAULT_PLAN, str(path))
    return path


def fired(plan: Path, cell_id: str, n: int = 0) -> dict[str, Any] | None:
    """The record the cell left when it sent its ``n``-th planned fault, or None before."""
    record = fired_dir(plan) / f"{cell_id}-{n}.json"
    try:
        return dict(json.loads(record.read_text()))
    except (OSError, ValueError):
        return None


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def frozen(plan: Path, cell_id: str, n: int = 0) -> int | None:
    """The pid of a cell stopped by its ``n``-th planned fault (a STOP), once it is stopped."""
    record = fired(plan, cell_id, n)
    return int(record["pid"]) if record and stopped(int(record["pid"])) else None


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def until(check: Callable[[], Any], what: str, explain: Callable[[], str], timeout_s: float = 240.0) -> Any:
    """Poll ``check`` (every 0.2 s) until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} (GEOPEFT_FAULT_SEED={SEED})\n{explain()}")
        time.sleep(0.2)
    return value


def settled(manifest: Manifest, expected: dict[int, tuple[State, str]]) -> bool:
    """Whether the cells at the indices of ``expected`` are in their (state, reason); reason '' matches any."""
    current = states(manifest)
    return all(current[i].state is s and (not r or current[i].reason == r) for i, (s, r) in expected.items())


def explain(manifest: Manifest) -> str:
    """The status grid and the tail of every job log: what a failed check shows."""
    parts = [render(manifest, states(manifest))]
    for log in sorted([*manifest.root.glob("slurm/logs/*.out"), *manifest.root.glob("submitit/*/*.out")]):
        parts.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    for entry in manifest.active():
        paths = manifest.paths.cell(entry.cell_id)
        lines = paths.attempts.read_text() if paths.attempts.exists() else "(none)\n"
        parts.append(f"--- [{entry.index}] {entry.cell_id} attempts.jsonl\n{lines}")
    return "\n".join(parts)


def tmpfs(request: pytest.FixtureRequest, directory: Path, size: str) -> Path:
    """Mount a tmpfs of ``size`` (``32m``) on ``directory`` (we are root); unmounted when the test ends, however."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True, timeout=30)
    request.addfinalizer(lambda: subprocess.run(["umount", "--lazy", str(directory)], check=False, timeout=30))
    return directory


def reap(request: pytest.FixtureRequest, root: Path) -> None:
    """When the test ends, passed or not: cancel the SLURM jobs of the sweep in ``root`` and kill its processes
    still alive here, so that a failed test leaves no cell stopped (SIGSTOP) on a CPU or training on."""

    def finish() -> None:
        paths, pids, jobs = SweepPaths(root), [], set()
        for record in read_jsonl(paths.submissions):
            if record.get("executor") == "slurm":
                jobs |= {str(j["job_id"]).split("_")[0] for j in record["jobs"].values()}
                jobs |= {str(record["prepare"]["job_id"])} if record.get("prepare") else set()
            else:
                pids += [(record["host"], int(j["job_id"]), j.get("pid_start")) for j in record["jobs"].values()]
        if jobs:
            subprocess.run(["scancel", *sorted(jobs)], capture_output=True, timeout=30, check=False)
        for attempts in paths.cells_dir.glob("*/attempts.jsonl"):
            pids += [(a["host"], a["pid"], a.get("pid_start")) for a in read_jsonl(attempts) if a["event"] == "start"]
        for host, pid, start in pids:
            if process_alive(host, pid, start):
                os.kill(pid, signal.SIGKILL)

    request.addfinalizer(finish)


def fill(directory: Path) -> Path:
    """Write a ballast file into ``directory`` until its file system is full; the ballast."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    probe = directory / "probe"
    with pytest.raises(OSError, match="No space left"):
        probe.write_bytes(b"\0" * 65536)
    probe.unlink()
    return ballast


def flip_a_byte_of_chunk(path: Path, index: int) -> None:
    """Corrupt the image chunk of sample ``index`` of a cache file in place (its Fletcher-32 sum no longer holds)."""
    with h5py.File(path) as f:
        info = f["images"].id.get_chunk_info(index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))


# --- the final checks ------------------------------------------------------------------------------------------


def _metric_log(paths: CellPaths) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(paths.metrics_log)]


def attempt_spans(paths: CellPaths) -> list[tuple[int, float, float]]:
    """(attempt, start, end) of every attempt that trained; a killed attempt ends at its lease's last heartbeat."""
    records = read_attempts(paths)
    ends = {a["attempt"]: float(a["time"]) for a in records if a.get("event") == "end"}
    beats = {}
    for generation in generations(paths):
        holder = read_holder(paths, generation)
        assert holder is not None, f"{paths.lease_dir}: generation {generation} unreadable"
        beats[holder.record.get("attempt")] = float(holder.record["heartbeat"])
    out = []
    for a in (a for a in records if a.get("event") == "start"):
        n = a["attempt"]
        out.append((n, float(a["time"]), ends.get(n, beats.get(n, float(a["time"])))))
    return out


def check_cell(paths: CellPaths, ref: CellPaths, *, retested: bool = False) -> None:
    """One cell: done once, the reference's metrics, no overlapping attempts, each epoch once, no file lost."""
    where = f"cell {paths.dir.name}"
    records = read_attempts(paths)
    starts = [a for a in records if a.get("event") == "start"]
    successes = [a for a in records if a.get("event") == "end" and a["status"] == "success"]
    assert len(successes) == 1 + retested, f"{where}: done {len(successes)} times: {records}"
    last = max(a["attempt"] for a in starts)
    assert successes[-1]["attempt"] == last, f"{where}: an attempt started after the cell was done: {records}"
    assert [a["attempt"] for a in starts] == list(range(1, len(starts) + 1)), f"{where}: {records}"
    # One lease generation per attempt that trained (a starter that found a live owner took none and trained nothing)
    gens = [read_holder(paths, g) for g in generations(paths)]
    assert [h.record.get("attempt") for h in gens if h] == list(range(1, len(starts) + 1)), f"{where}: {gens}"
    spans = attempt_spans(paths)
    for (n0, _, end0), (n1, start1, _) in itertools.pairwise(spans):
        assert start1 >= end0, f"{where}: attempt {n1} started while attempt {n0} was still training: {spans}"
    # The uninterrupted run's metrics, each epoch once
    got, want = read_json(paths.result), read_json(ref.result)
    assert got["regions"] == want["regions"], f"{where}: test metrics differ from the uninterrupted run"
    for key in ("best_epoch", "epochs_run"):
        assert got["train"][key] == want["train"][key], f"{where}: {key} differs"
    assert got["cache_keys"] == want["cache_keys"], f"{where}: trained on another cache"
    epochs = [r["epoch"] for r in read_jsonl(paths.metrics_log)]
    assert epochs == list(range(1, want["train"]["epochs_run"] + 1)), f"{where}: metrics.jsonl epochs {epochs}"
    assert _metric_log(paths) == _metric_log(ref), f"{where}: per-epoch metrics differ from the uninterrupted run"
    assert len(got["train"]["attempt_times_s"]) == len(starts)
    if retested:
        assert got["train"]["resumed_from_epoch"] == want["train"]["epochs_run"], f"{where}: trained again"
    # No file lost: every record of a finished cell is there and readable
    for name in CELL_FILES:
        assert (paths.dir / name).is_file(), f"{where}: {name} is missing"
    assert not paths.failed.exists(), f"{where}: failed.json left behind"
    assert checkpoint.load(paths.last_ckpt)["epoch"] == want["train"]["epochs_run"]
    assert checkpoint.load(paths.best_ckpt)["epoch"] == want["train"]["best_epoch"]


def check_sweep(
    manifest: Manifest, factory: pytest.TempPathFactory, *, retested: Iterable[int] = (), timeout_s: float = 240.0
) -> None:
    """Wait for every cell to settle, then :func:`check_cell` each against its reference; the sweep's files too."""
    current = wait(manifest, poll_s=0.5, timeout_s=timeout_s)
    assert all(s.state is State.DONE for s in current.values()), explain(manifest)
    for name in ("manifest.json", "submissions.jsonl", "cluster.json"):
        assert (manifest.root / name).is_file(), f"{name} of the sweep is missing"
    cache = Path(manifest.env.cache_root) / "sen1floods11"
    assert sorted(p.name for p in cache.glob("*.h5") if ".corrupt-" not in p.name) == sorted(f"{s}.h5" for s in SPLITS)
    for entry in manifest.active():
        ref = reference(factory, entry.spec, manifest.env)
        check_cell(manifest.paths.cell(entry.cell_id), ref, retested=entry.index in set(retested))
