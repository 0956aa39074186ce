"""The state of each cell, decided from files (no sacct needed) and one squeue call.

``done``     result.json exists and reads as a valid result;
``running``  an attempt started and has not ended, and its process is alive (checked on its host; on another
             host: while squeue lists its job as running);
``pending``  submitted after its last attempt started, and the submitted job is still alive; or squeue still
             lists the job of an attempt that ended (preempted) or whose process is gone (``scontrol requeue``,
             a requeued node failure): pending, requeued, held, waiting for its BeginTime;
``failed``   the last attempt ended with an error (class from failed.json); or its process vanished without a
             record and squeue no longer lists its job (class ``lost``: SIGKILL, node failure, scancel without
             grace); or a SLURM job left the queue before its cell started: class ``prepare`` when the
             cache-prepare job it waited for failed (its log named), else ``lost`` (scancel while pending);
             or result.json is empty, truncated or invalid (class ``invalid result``, the file named);
``missing``  never submitted, or its local job ended before the cell started.

Whether a SLURM job is still queued, and in which state, comes from one ``squeue`` call for all of a sweep's
arrays and prepare jobs (:func:`hpc.scheduler.slurm.job_states`); without squeue (or when it fails) that is unknown,
and
a SLURM job counts as alive. A prepare job succeeded when it left its marker (:meth:`SweepPaths.prepare_ok`).
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, replace
from enum import StrEnum

from geopeft.attempts import process_start_ticks, read_attempts
from geopeft.errors import GeopeftError
from geopeft.io import read_json, read_jsonl
from geopeft.paths import CellPaths, SweepPaths
from geopeft.result import CellResult
from hpc.scheduler.profiles import Executor
from hpc.scheduler.slurm import WAITING_STATES, job_states
from hpc.state.manifest import Manifest


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
class CellSubmission:
    """The latest submission of a cell (from ``submissions.jsonl``), with what squeue says of its job.

    Args:
        queued: whether squeue lists the SLURM job; None when unknown (no squeue, no answer, or not SLURM).
        squeue_state: its squeue state when listed (``PENDING``, ``RUNNING``, ``REQUEUED``, ...).
        prepare_failed: the log of the cache-prepare job the job waited for, when that job left the queue
            without its success marker; empty otherwise.
    """

    time: float
    executor: str
    job_id: str
    host: str
    pid_start: int | None
    queued: bool | None = None
    squeue_state: str = ""
    prepare_failed: str = ""


def latest_submissions(paths: SweepPaths, *, squeue: bool = True) -> dict[str, CellSubmission]:
    """Cell id -> its most recent submission, with what one squeue call says of its job (``squeue=True``)."""
    out: dict[str, CellSubmission] = {}
    prepare_of: dict[str, str] = {}  # cell id -> the prepare job its array waited for
    for record in read_jsonl(paths.submissions):
        dependency = str((record.get("array") or {}).get("dependency", ""))
        waited = re.search(r"afterok:(\d+)", dependency)  # the prepare job (beside any afterany lane)
        prepare_job = waited.group(1) if waited else ""
        for cell_id, job in record["jobs"].items():
            out[cell_id] = CellSubmission(
                record["time"], record["executor"], str(job["job_id"]), record["host"], job.get("pid_start")
            )
            prepare_of[cell_id] = prepare_job
    slurm = {sub.job_id for sub in out.values() if sub.executor == Executor.SLURM}
    preparing = {job for job in prepare_of.values() if job}
    listed = job_states(slurm | preparing) if squeue and slurm else None
    if listed is None:
        return out

    def known(cell_id: str, s: CellSubmission) -> CellSubmission:
        if s.executor != Executor.SLURM:
            return s
        prep = prepare_of.get(cell_id, "")
        failed = prep and prep not in listed and not paths.prepare_ok(prep).exists()
        return replace(
            s,
            queued=s.job_id in listed,
            squeue_state=listed.get(s.job_id, ""),
            prepare_failed=str(paths.prepare_log(prep)) if failed else "",
        )

    return {c: known(c, s) for c, s in out.items()}


def process_alive(host: str, pid: int, pid_start: int | None) -> bool | None:
    """True/False for a process on this host; None when it ran on another host (not checkable here)."""
    if host != socket.gethostname():
        return None
    ticks = process_start_ticks(pid)
    return ticks is not None and (pid_start is None or ticks == pid_start)


def _job_alive(sub: CellSubmission) -> bool | None:
    if sub.executor == Executor.LOCAL:
        return process_alive(sub.host, int(sub.job_id), sub.pid_start)
    return sub.queued


def _waiting(sub: CellSubmission | None) -> bool:
    """Whether squeue lists this SLURM job as waiting to (re)start."""
    return (
        sub is not None
        and sub.executor == Executor.SLURM
        and sub.queued is True
        and sub.squeue_state in WAITING_STATES
    )


def cell_state(paths: CellPaths, submitted: CellSubmission | None = None) -> CellState:
    """Decide one cell's state; see the module docstring for the rules."""
    attempts = read_attempts(paths)
    starts = [a for a in attempts if a.get("event") == "start"]
    if paths.result.exists():
        problem = _invalid_result(paths)
        if problem is None:
            return CellState(State.DONE, attempts=len(starts))
        return CellState(State.FAILED, reason="invalid result", detail=problem, attempts=len(starts))
    ends = {a["attempt"]: a for a in attempts if a.get("event") == "end"}
    last = starts[-1] if starts else None
    ours = submitted is not None and last is not None and submitted.time <= last["time"]  # the attempt's own job
    if last is not None and last["attempt"] not in ends:
        alive = process_alive(last["host"], last["pid"], last.get("pid_start"))
        if alive is None and ours and submitted is not None:  # another host's process: ask squeue about its job
            alive = False if _waiting(submitted) else _job_alive(submitted)
        if alive is not False:
            where = f"attempt {last['attempt']} on {last['host']}"
            return CellState(State.RUNNING, detail=where + _progress(paths), attempts=len(starts))
        if ours and submitted is not None and submitted.executor == Executor.SLURM and submitted.queued:
            detail = (
                f"requeued as job {submitted.job_id} ({submitted.squeue_state.lower() or 'queued'}); "
                f"attempt {last['attempt']} on {last['host']} ended without a record"
            )
            return CellState(State.PENDING, detail=detail, attempts=len(starts))
        if submitted is None or ours:
            return CellState(
                State.FAILED,
                reason="lost",
                detail=f"attempt {last['attempt']} (pid {last['pid']} on {last['host']}) ended without a record",
                attempts=len(starts),
            )
    if submitted is not None and (last is None or submitted.time > last["time"]):
        if _job_alive(submitted) is not False:
            return CellState(State.PENDING, detail=f"job {submitted.job_id}", attempts=len(starts))
        if submitted.executor == Executor.SLURM and submitted.prepare_failed:
            detail = (
                f"the cache-prepare job failed, so job {submitted.job_id} never ran; see {submitted.prepare_failed}"
            )
            return CellState(State.FAILED, reason="prepare", detail=detail, attempts=len(starts))
        if last is None and submitted.executor == Executor.SLURM:
            detail = f"job {submitted.job_id} left the queue before the cell started (scancel, node failure)"
            return CellState(State.FAILED, reason="lost", detail=detail)
        if last is None:
            return CellState(State.MISSING, detail=f"job {submitted.job_id} ended before the cell started")
    if last is not None:
        end = ends.get(last["attempt"])
        reason = end.get("reason", "") if end else "lost"
        requeued = submitted is not None and submitted.executor == Executor.SLURM and submitted.queued is not False
        if reason == "preempted" and submitted is not None and requeued:  # squeue lists it, or cannot tell
            unknown = "" if submitted.queued else "; squeue did not answer"
            detail = f"preempted, requeued as job {submitted.job_id} (attempt {last['attempt']}){unknown}"
            return CellState(State.PENDING, detail=detail, attempts=len(starts))
        if end is None:
            detail = f"attempt {last['attempt']} (pid {last['pid']} on {last['host']}) ended without a record"
            return CellState(State.FAILED, reason="lost", detail=detail, attempts=len(starts))
        return CellState(State.FAILED, reason=reason or "error", detail=_last_error(paths), attempts=len(starts))
    return CellState(State.MISSING)


def _invalid_result(paths: CellPaths) -> str | None:
    """Why ``result.json`` is not a valid result (the file named, and the way out), or None when it is."""
    fix = "geopeft rerun --failed tests the cell again from its last checkpoint (the file is kept aside)"
    try:
        data = json.loads(paths.result.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise GeopeftError(f"{paths.result}: holds {type(data).__name__}, not a result object")
        CellResult.from_dict(data, str(paths.result))
    except json.JSONDecodeError as exc:
        return f"{paths.result}: not valid JSON ({exc}); {fix}"
    except GeopeftError as exc:
        return f"{exc}; {fix}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{paths.result}: cannot be read ({getattr(exc, 'strerror', None) or exc}); {fix}"
    return None


def _progress(paths: CellPaths) -> str:
    """E.g. ``, epoch 3/50, best val mIoU 61.2 (epoch 2), 4.1 s/epoch, at most 3.2 min left``."""
    if not paths.progress.exists():
        return ", starting"
    try:
        p = read_json(paths.progress)
        epoch, max_epochs = int(p["epoch"]), int(p["max_epochs"])
        text = f", epoch {epoch}/{max_epochs}"
        if p.get("best_val_miou") is not None:
            text += f", best val mIoU {100 * float(p['best_val_miou']):.1f}"
        if p.get("epoch_s"):
            # Early stopping may end it sooner: the bound assumes every remaining epoch runs.
            left = float(p["epoch_s"]) * (max_epochs - epoch)
            text += f", {float(p['epoch_s']):.1f} s/epoch, at most {duration(left)} left"
        return text
    except (GeopeftError, KeyError, TypeError, ValueError):
        return ""  # written atomically; unreadable only when edited by hand


def duration(seconds: float) -> str:
    """``42 s``, ``3.2 min``, ``5.1 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _last_error(paths: CellPaths) -> str:
    if not paths.failed.exists():
        return ""
    try:
        lines = str(read_json(paths.failed).get("error", "")).strip().splitlines()
    except GeopeftError as exc:
        return str(exc)
    return lines[-1] if lines else ""


def states(manifest: Manifest) -> dict[int, CellState]:
    """Manifest index -> state, for the cells in the grid."""
    subs = latest_submissions(manifest.paths)
    return {e.index: cell_state(manifest.paths.cell(e.cell_id), subs.get(e.cell_id)) for e in manifest.active()}
