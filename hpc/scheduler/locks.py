"""File locks: a cap on cells running at once, and one submitter per sweep.

The cap is for executors without one of their own (SLURM arrays use ``%P``).

Each running cell holds an exclusive ``flock`` on one of ``n`` slot files in ``<sweep>/.slots``;
the kernel releases it when the process ends, however it ends, so a killed cell never leaks a slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from geopeft.errors import SubmitError


@contextlib.contextmanager
def slot(directory: Path, n: int, poll_s: float = 0.5) -> Iterator[int]:
    """Block until one of ``n`` slots is free; yield its number while holding it."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        for k in range(n):
            fd = os.open(directory / f"slot{k}", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield k
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll_s)


#: Seconds a sweep or rerun waits for another one of the same sweep to finish submitting.
LOCK_WAIT_S = float(os.environ.get("GEOPEFT_LOCK_WAIT_S", "600"))


@contextlib.contextmanager
def exclusive(path: Path, wait_s: float | None = None, poll_s: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, waiting up to ``wait_s`` for the one who holds it.

    Two sweeps or reruns of one grid never submit together: the second waits, then plans from what the first
    submitted (those cells are pending, so it does not submit them again). The holder writes its host and pid
    into the file, so a timeout names who holds it. ``flock`` is released by the kernel however the holder ends.
    """
    limit = LOCK_WAIT_S if wait_s is None else wait_s
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
                    raise SubmitError(
                        f"{path} is locked by {holder}: another sweep or rerun of this grid is submitting; "
                        f"waited {limit:g} s; retry when it ends (GEOPEFT_LOCK_WAIT_S sets the wait)"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
