"""Faults during training: SLURM's warning signal, requeueing, and test hooks that inject faults.

SIGUSR2 has one owner at a time. submitit installs its own handler in every job before the cell starts
(``submitit/core/job_environment.py``: ``checkpoint_and_try_requeue`` calls the task's ``checkpoint``, requeues
and ``sys.exit``-s from inside the handler, wherever the main thread happens to be). While :func:`fit` trains,
:class:`Preemption` replaces it with a handler that only sets a flag; the training loop looks at the flag at each
optimiser-step boundary, the ranks agree with one all-reduce (a signal delivered to some ranks only stops them
all at the same step), rank 0 writes the checkpoint and the loop raises :class:`Preempted`. The cell then records
the attempt as ``preempted`` and, under SLURM, :func:`requeue` puts the array task back in the queue; under the
local executor ``geopeft rerun`` resumes it. Outside training submitit's handler is back in place.

Test hooks (environment variables; never set them in production):

- ``GEOPEFT_FAULT_AT=SIGNAL@EPOCH:STEP`` sends ``SIGNAL`` (``USR2``, ``KILL``, ``STOP``, ...) to this process on
  rank 0 just before optimiser step ``STEP`` (0-based) of epoch ``EPOCH`` (1-based), in every attempt;
- ``GEOPEFT_FAULT_PLAN=FILE`` names a JSON file ``{cell_id: ["SIGNAL@EPOCH:STEP", ...]}``: each of a cell's faults is
  sent once, by the first attempt that reaches its step, which first creates ``FILE.fired/<cell_id>-<n>.json``
  (exclusively; it holds the pid) so that a requeued or rerun attempt does not send it again. The faults of one
  SLURM array or local sweep can then differ per cell (``STOP`` freezes a cell at a known step for a fault from
  outside: scancel, scontrol requeue, a full disk);
- ``GEOPEFT_OOM_ABOVE=N`` raises ``torch.OutOfMemoryError`` before any forward pass of a micro-batch of more than
  ``N`` samples.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

from geopeft.errors import CellFailed, ConfigError

FAULT_AT = "GEOPEFT_FAULT_AT"
FAULT_PLAN = "GEOPEFT_FAULT_PLAN"
OOM_ABOVE = "GEOPEFT_OOM_ABOVE"


class Preempted(CellFailed):
    """Training stopped at a step boundary after SIGUSR2; the checkpoint to resume from is written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="preempted")


#: SIGUSR2 seen by :func:`defer_preemption`'s handler and not yet taken by a :class:`Preemption`.
_pending = threading.Event()


def _remember(signum: int, frame: FrameType | None) -> None:
    _pending.set()


def defer_preemption() -> None:
    """Make SIGUSR2 outside training a flag instead of the default (terminating the process).

    ``geopeft run-cell`` (what ``sbatch/cells.sbatch`` runs) calls this first, so a warning signal that arrives while
    the cell starts up is kept: the next :class:`Preemption` starts with :attr:`Preemption.requested` set, and training
    checkpoints and requeues at its first step boundary. One that arrives while the best checkpoint is tested lets
    the test finish. Under submitit, whose own handler is in place, this is not called.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, _remember)


class Preemption:
    """Context manager that owns SIGUSR2 for its body: the handler only sets :attr:`requested`."""

    def __init__(self) -> None:
        self.requested = _pending.is_set()  # a signal deferred before training counts
        _pending.clear()
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGUSR2, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGUSR2, self._previous)
            self._installed = False


def requeue(env: Mapping[str, str] | None = None) -> str | None:
    """Requeue this SLURM job (the array task ``<array job>_<task>`` when it is one); None outside SLURM.

    Raises:
        CellFailed: ``scontrol requeue`` failed (the job was not started with ``--requeue``?).
    """
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        return None
    job = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode:
        raise CellFailed(
            f"scontrol requeue {job} failed ({done.stderr.strip()}); submit with --requeue, or rerun the cell "
            "with geopeft rerun --failed",
            reason="preempted",
        )
    return job


def _parse_fault(value: str, where: str) -> tuple[signal.Signals, int, int]:
    try:
        name, at = value.split("@")
        epoch, step = (int(v) for v in at.split(":"))
        return signal.Signals[f"SIG{name}"], epoch, step
    except (ValueError, KeyError):
        raise ConfigError(f"{where}: {value!r}: expected SIGNAL@EPOCH:STEP, e.g. USR2@2:1") from None


def _fault_at(env: Mapping[str, str]) -> tuple[signal.Signals, int, int] | None:
    value = env.get(FAULT_AT, "")
    return _parse_fault(value, FAULT_AT) if value else None


def fired_dir(plan: str | os.PathLike[str]) -> Path:
    """Where the faults of a ``GEOPEFT_FAULT_PLAN`` file leave one record each as they are sent."""
    return Path(f"{plan}.fired")


def _planned(plan: str, cell: str, epoch: int, step: int) -> list[signal.Signals]:
    """The signals of ``cell``'s planned faults at (epoch, step) not sent before; each recorded as sent."""
    try:
        entries = json.loads(Path(plan).read_text(encoding="utf-8")).get(cell, [])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{FAULT_PLAN}={plan}: unreadable fault plan ({exc})") from None
    out = []
    for n, value in enumerate(entries):
        signum, at_epoch, at_step = _parse_fault(str(value), f"{plan}: {cell}")
        if (at_epoch, at_step) != (epoch, step):
            continue
        record = fired_dir(plan) / f"{cell}-{n}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # an earlier attempt sent it
        fields = {"fault": value, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({**fields, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, fh)
        out.append(signum)
    return out


def inject_fault(
    epoch: int, step: int, *, is_main: bool, cell: str = "", env: Mapping[str, str] | None = None
) -> None:
    """Test hook: send the signals ``GEOPEFT_FAULT_AT`` and ``GEOPEFT_FAULT_PLAN`` name for (epoch, step) on rank 0."""
    env = os.environ if env is None else env
    if not is_main:
        return
    fault = _fault_at(env)
    if fault is not None and fault[1:] == (epoch, step):
        os.kill(os.getpid(), fault[0])
    plan = env.get(FAULT_PLAN, "")
    if plan and cell:
        for signum in _planned(plan, cell, epoch, step):
            os.kill(os.getpid(), signum)


def inject_oom(micro_batch: int, env: Mapping[str, str] | None = None) -> None:
    """Test hook: raise ``torch.OutOfMemoryError`` for micro-batches above ``GEOPEFT_OOM_ABOVE``."""
    limit = (os.environ if env is None else env).get(OOM_ABOVE, "")
    if limit and micro_batch > int(limit):
        raise torch.OutOfMemoryError(f"injected by {OOM_ABOVE}={limit}: micro-batch {micro_batch} > {limit}")
