"""The state of each cell, decided from files (no sacct needed); squeue only adds detail when it exists.

``done``     result.json exists;
``running``  an attempt started and has not ended, and its process is alive (checked on its host);
``pending``  submitted after its last attempt started, and the submitted job is still alive; or the last
             attempt was preempted and SLURM still queues its requeued job (or squeue cannot tell);
``failed``   the last attempt ended with an error (class from failed.json), or its process vanished
             without a record (class ``lost``: SIGKILL, node failure, scancel without grace), or a SLURM job
             left the queue before its cell started (class ``lost``: scancel while pending, node failure);
``missing``  never submitted, or its local job ended before the cell started.

Whether a SLURM job is still queued comes from one ``squeue`` call for all of a sweep's arrays
(:func:`hpc.slurm.queued_jobs`); without squeue (or when it fails) that is unknown, and a SLURM job counts as
alive as before.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from geopeft.attempts import process_start_ticks, read_attempts
from geopeft.io import read_json, read_jsonl
from geopeft.paths import CellPaths, SweepPaths
from hpc.slurm import queued_jobs


class State(StrEnum):
    """A cell's state, in the order tables list them."""

    DONE = "done"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"
    MISSING = "missing"


@dataclass(frozen=True)
class CellState:
    """A state with its explanation."""

    state: State
    reason: str = ""
    detail: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class Submitted:
    """The latest submission of a cell (from ``submissions.jsonl``)."""

    time: float
    executor: str
    job_id: str
    host: str
    pid_start: int | None
    queued: bool | None = None  # whether squeue lists the SLURM job; None when unknown (or not SLURM)


def latest_submissions(paths: SweepPaths, *, squeue: bool = True) -> dict[str, Submitted]:
    """Cell id -> its most recent submission, with whether squeue still lists its job (``squeue=True``)."""
    out: dict[str, Submitted] = {}
    for record in read_jsonl(paths.submissions):
        for cell_id, job in record["jobs"].items():
            out[cell_id] = Submitted(
                record["time"], record["executor"], str(job["job_id"]), record["host"], job.get("pid_start")
            )
    slurm = {sub.job_id for sub in out.values() if sub.executor == "slurm"}
    listed = queued_jobs(slurm) if squeue and slurm else None
    if listed is None:
        return out
    return {c: replace(s, queued=s.job_id in listed) if s.executor == "slurm" else s for c, s in out.items()}


def process_alive(host: str, pid: int, pid_start: int | None) -> bool | None:
    """True/False for a process on this host; None when it ran on another host (not checkable here)."""
    if host != socket.gethostname():
        return None
    ticks = process_start_ticks(pid)
    return ticks is not None and (pid_start is None or ticks == pid_start)


def _job_alive(sub: Submitted) -> bool | None:
    if sub.executor == "local":
        return process_alive(sub.host, int(sub.job_id), sub.pid_start)
    return sub.queued


def cell_state(paths: CellPaths, submitted: Submitted | None = None) -> CellState:
    """Decide one cell's state; see the module docstring for the rules."""
    if paths.result.exists():
        return CellState(State.DONE, attempts=_count(read_attempts(paths)))
    attempts = read_attempts(paths)
    starts = [a for a in attempts if a.get("event") == "start"]
    ends = {a["attempt"]: a for a in attempts if a.get("event") == "end"}
    last = starts[-1] if starts else None
    if last is not None and last["attempt"] not in ends:
        alive = process_alive(last["host"], last["pid"], last.get("pid_start"))
        if alive is None and submitted is not None and submitted.time <= last["time"]:
            alive = _job_alive(submitted)  # another host's process: alive while its job is queued
        if alive is not False:
            where = f"attempt {last['attempt']} on {last['host']}"
            return CellState(State.RUNNING, detail=where + _progress(paths), attempts=len(starts))
        if submitted is None or submitted.time <= last["time"]:
            return CellState(
                State.FAILED,
                reason="lost",
                detail=f"attempt {last['attempt']} (pid {last['pid']} on {last['host']}) ended without a record",
                attempts=len(starts),
            )
    if submitted is not None and (last is None or submitted.time > last["time"]):
        if _job_alive(submitted) is not False:
            return CellState(State.PENDING, detail=f"job {submitted.job_id}", attempts=len(starts))
        if last is None and submitted.executor == "slurm":
            detail = f"job {submitted.job_id} left the queue before the cell started (scancel, node failure)"
            return CellState(State.FAILED, reason="lost", detail=detail)
        if last is None:
            return CellState(State.MISSING, detail=f"job {submitted.job_id} ended before the cell started")
    if last is not None:
        end = ends.get(last["attempt"])
        reason = end.get("reason", "") if end else "lost"
        requeued = submitted is not None and submitted.executor == "slurm" and submitted.queued is not False
        if reason == "preempted" and submitted is not None and requeued:  # squeue lists it, or cannot tell
            unknown = "" if submitted.queued else "; squeue did not answer"
            detail = f"preempted, requeued as job {submitted.job_id} (attempt {last['attempt']}){unknown}"
            return CellState(State.PENDING, detail=detail, attempts=len(starts))
        return CellState(State.FAILED, reason=reason or "error", detail=_last_error(paths), attempts=len(starts))
    return CellState(State.MISSING)


def _count(attempts: list[dict[str, Any]]) -> int:
    return sum(1 for a in attempts if a.get("event") == "start")


def _progress(paths: CellPaths) -> str:
    if not paths.progress.exists():
        return ", starting"
    p = read_json(paths.progress)
    return f", epoch {p['epoch']}/{p['max_epochs']}"


def _last_error(paths: CellPaths) -> str:
    if not paths.failed.exists():
        return ""
    lines = str(read_json(paths.failed).get("error", "")).strip().splitlines()
    return lines[-1] if lines else ""
