"""One live owner per cell directory: a lease taken atomically, kept alive by a heartbeat, taken over when dead.

The lease lives in ``<cell>/lease/`` as numbered generations, ``000001.json``, ``000002.json``, ...; the highest
number is the current lease. Taking the cell means creating the next number with ``os.link`` of a private temporary
file, which succeeds for exactly one process even on NFS, Lustre and GPFS (no ``flock``, no ``O_EXCL`` semantics
needed): two starters that race for the same number cannot both win. A starter may take the next number only when the
current lease is dead:

* released (its owner ended, whatever the outcome);
* held by a process on this host that is gone (pid and start time checked, so a reused pid is not mistaken);
* or held on another host whose heartbeat is older than the time to live (:data:`TTL_S`).

The owner refreshes its heartbeat every :data:`HEARTBEAT_S` seconds from a daemon thread, rewriting only its own
generation file (atomically). When it finds a higher generation than its own (it stalled longer than the time to live
and was taken over), :attr:`Lease.lost` turns true and the training loop stops without writing anything more. Old
generations stay as the cell's history: each records its attempt and its last heartbeat, which is how long an attempt
killed without warning ran (:func:`geopeft.attempts.attempt_times`). Only rank 0 of a cell holds the lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopeft.attempts import process_start_ticks, read_attempts
from geopeft.io import atomic_write_json
from geopeft.paths import CellPaths
from geopeft.provenance import scheduler_ids

#: Seconds between heartbeats (``GEOPEFT_LEASE_HEARTBEAT_S`` overrides, for tests).
HEARTBEAT_S = 60.0
#: Seconds without a heartbeat after which another host's lease counts as dead (``GEOPEFT_LEASE_TTL_S``).
TTL_S = 600.0


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Holder:
    """A lease generation as read from its file.

    Args:
        generation: its number.
        record: the file's content (host, pid, pid_start, job ids, started, heartbeat, attempt, released).
    """

    generation: int
    record: dict[str, Any]

    def alive(self, now: float | None = None, ttl_s: float | None = None) -> bool:
        """Whether this lease still has a live owner (see the module docstring)."""
        r = self.record
        if r.get("released"):
            return False
        if r.get("host") == socket.gethostname():
            ticks = process_start_ticks(int(r.get("pid", -1)))
            return ticks is not None and (r.get("pid_start") is None or ticks == r.get("pid_start"))
        ttl = _seconds("GEOPEFT_LEASE_TTL_S", TTL_S) if ttl_s is None else ttl_s
        return (time.time() if now is None else now) - float(r.get("heartbeat", 0.0)) < ttl

    def describe(self) -> str:
        """E.g. ``pid 123 on node1, SLURM job 45_3, heartbeat 12 s ago``."""
        r = self.record
        job = r.get("slurm_array_job_id") and f"{r['slurm_array_job_id']}_{r.get('slurm_array_task_id')}"
        job = job or r.get("slurm_job_id")
        beat = time.time() - float(r.get("heartbeat", 0.0))
        where = f"pid {r.get('pid')} on {r.get('host')}" + (f", SLURM job {job}" if job else "")
        return f"{where}, heartbeat {beat:.0f} s ago"


def generations(paths: CellPaths) -> list[int]:
    """The lease generations on disk, lowest first."""
    try:
        names = os.listdir(paths.lease_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def _generation_file(paths: CellPaths, generation: int) -> Path:
    return paths.lease_dir / f"{generation:06d}.json"


def read_holder(paths: CellPaths, generation: int) -> Holder | None:
    """Generation ``generation``, or None when its file is unreadable (being replaced: read again)."""
    try:
        return Holder(generation, json.loads(_generation_file(paths, generation).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def current(paths: CellPaths) -> Holder | None:
    """The highest generation, or None when the cell has never been leased."""
    for _ in range(5):
        gens = generations(paths)
        if not gens:
            return None
        holder = read_holder(paths, gens[-1])
        if holder is not None:
            return holder
        time.sleep(0.05)
    return Holder(generations(paths)[-1], {})  # unreadable: treated as a live lease of unknown owner


def attempt_times(paths: CellPaths, now: float | None = None) -> list[float]:
    """Seconds each attempt ran, in attempt order.

    An attempt's time runs from its start line to its end line; one without an end line was killed without warning
    (or is the one running now): its time runs to the last heartbeat of its lease generation (within one heartbeat
    interval of its end), or to ``now`` when ``now`` is given and the attempt is the last one (the running one).
    """
    records = read_attempts(paths)
    starts = {a["attempt"]: float(a["time"]) for a in records if a.get("event") == "start"}
    ends = {a["attempt"]: float(a["time"]) for a in records if a.get("event") == "end"}
    beats = {}
    for generation in generations(paths):
        holder = read_holder(paths, generation)
        if holder is not None and isinstance(holder.record.get("attempt"), int):
            beats[holder.record["attempt"]] = float(holder.record.get("heartbeat", 0.0))
    out = []
    for number in sorted(starts):
        if number in ends:
            end = ends[number]
        elif now is not None and number == max(starts):
            end = now
        else:
            end = beats.get(number, starts[number])
        out.append(max(end - starts[number], 0.0))
    return out


class Lease:
    """The lease of one cell held by this process; :meth:`acquire` takes it.

    Use it as a context manager around the work: the heartbeat thread runs inside, and the lease is released on
    the way out.
    """

    def __init__(self, paths: CellPaths, generation: int, record: dict[str, Any]) -> None:
        self.paths, self.generation, self.record = paths, generation, record
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, paths: CellPaths) -> Lease | Holder:
        """Take the cell, or return the live :class:`Holder` that has it.

        Raises:
            OSError: the cell directory cannot be written.
        """
        paths.lease_dir.mkdir(parents=True, exist_ok=True)
        while True:
            top = current(paths)
            if top is not None and (not top.record or top.alive()):
                return top
            generation = (top.generation if top else 0) + 1
            now = time.time()
            record = {
                "generation": generation,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "pid_start": process_start_ticks(os.getpid()),
                "started": now,
                "heartbeat": now,
                "attempt": None,
                "released": False,
                **scheduler_ids(),
            }
            tmp = paths.lease_dir / f".{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(record), encoding="utf-8")
            try:
                os.link(tmp, _generation_file(paths, generation))
            except FileExistsError:
                continue  # another starter took this generation first: look again
            finally:
                tmp.unlink(missing_ok=True)
            return cls(paths, generation, record)

    @property
    def lost(self) -> bool:
        """True once another process took the cell over (this one stalled past the time to live)."""
        return self._lost.is_set()

    def owned(self) -> bool:
        """Check now whether this generation is still the highest (and remember the answer)."""
        gens = generations(self.paths)
        if gens and gens[-1] != self.generation:
            self._lost.set()
        return not self._lost.is_set()

    def update(self, **fields: Any) -> None:
        """Rewrite this generation's file with ``fields`` and a fresh heartbeat (only while it is owned)."""
        if not self.owned():
            return
        self.record = {**self.record, **fields, "heartbeat": time.time()}
        with contextlib.suppress(OSError):  # a missed beat is retried; the time to live spans many of them
            atomic_write_json(_generation_file(self.paths, self.generation), self.record)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.update()

    def __enter__(self) -> Lease:
        interval = _seconds("GEOPEFT_LEASE_HEARTBEAT_S", HEARTBEAT_S)
        self._thread = threading.Thread(target=self._beat, args=(interval,), name="geopeft-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Stop the heartbeat and mark this generation released (the next starter may take the cell at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.update(released=True, ended=time.time())


@contextlib.contextmanager
def held(lease: Lease | None) -> Iterator[None]:
    """``with lease`` when there is one (rank 0), else nothing (other ranks hold no lease)."""
    if lease is None:
        yield
        return
    with lease:
        yield
