"""File locks: a cap on cells running at once, and one submitter per sweep.

The cap is for executors without one of their own (SLURM arrays use ``%P``).

Each running cell holds an exclusive ``flock`` on one of ``n`` slot files in ``<sweep>/.slots``;
the kernel releases it when the process ends, however it ends, so a killed cell never leaks a slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` or fail at once (two sweeps of one grid never submit together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SubmitError(
                f"{path} is locked: another sweep or rerun of this grid is submitting; retry when it ends"
            ) from None
        yield
    finally:
        os.close(fd)
