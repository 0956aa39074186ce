"""The attempt log of a cell: one JSON line when an attempt starts and one when it ends.

A start line without an end line is an attempt still running, or one killed without warning
(SIGKILL, node failure); ``hpc.status`` tells them apart by the recorded host and pid. A process that found the
cell already owned by a live one (:mod:`geopeft.lease`) writes one ``skipped`` line and starts no attempt.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from geopeft.io import append_jsonl, read_jsonl
from geopeft.paths import CellPaths
from geopeft.provenance import scheduler_ids


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None if it is gone.

    Stored with the pid so that a later check cannot mistake a new process that reused the pid.
    A zombie (exited, not yet reaped) counts as gone.
    """
    try:
        stat = open(f"/proc/{pid}/stat", encoding="ascii").read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def read_attempts(paths: CellPaths) -> list[dict[str, Any]]:
    """Every line of ``attempts.jsonl``, oldest first."""
    return read_jsonl(paths.attempts)


def start_attempt(paths: CellPaths) -> int:
    """Append a start line and return this attempt's number (1-based)."""
    number = 1 + sum(1 for a in read_attempts(paths) if a.get("event") == "start")
    append_jsonl(
        paths.attempts,
        {
            "event": "start",
            "attempt": number,
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": process_start_ticks(os.getpid()),
            **scheduler_ids(),
        },
    )
    return number


def skip_attempt(paths: CellPaths, holder: str) -> None:
    """Append the line of a starter that left the cell to its live owner (``holder`` describes the owner)."""
    append_jsonl(
        paths.attempts,
        {
            "event": "skipped",
            "time": time.time(),
            "reason": f"already running ({holder})",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **scheduler_ids(),
        },
    )


def end_attempt(paths: CellPaths, number: int, status: str, reason: str = "") -> None:
    """Append an end line (``status`` success/failed/canceled; ``reason`` a failure class)."""
    append_jsonl(
        paths.attempts,
        {"event": "end", "attempt": number, "time": time.time(), "status": status, "reason": reason},
    )
