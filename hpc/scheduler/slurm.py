"""The SLURM client commands geopeft calls itself on the login node: sinfo, scontrol, squeue and scancel.

sbatch is run by submitit (:mod:`hpc.launch.slurm_jobs`).

Every call runs with a cleaned environment: a sweep submitted from inside a job must not inherit that
job's ``SLURM_*`` variables (they leak gres, array and distributed settings into the new job). Nothing
here needs accounting (``sacct``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from geopeft.errors import SubmitError

#: Prefixes of the variables SLURM (and submitit) set inside a job; removed before submitting.
JOB_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_")
#: Distributed-training variables a job may have exported; removed as well.
DIST_NAMES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
#: Kept: they say where the cluster's configuration is, not anything about the current job.
KEEP = ("SLURM_CONF",)

#: ``sbatch(argv, env) -> stdout``; replaced by a counter in ``bench/plan_scale.py`` and unit tests.
Runner = Callable[[Sequence[str], Mapping[str, str]], str]


def clean_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without the variables of an enclosing SLURM job."""
    env = dict(os.environ if environ is None else environ)
    return {k: v for k, v in env.items() if k in KEEP or not (k.startswith(JOB_PREFIXES) or k in DIST_NAMES)}


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Run a SLURM client command; its stdout, or a :class:`SubmitError` with its stderr."""
    if shutil.which(argv[0]) is None:
        raise SubmitError(
            f"`{argv[0]}` not found: this machine is not a SLURM login node; "
            "use --cluster local, or start the test cluster with scripts/slurm-test-cluster.sh up"
        )
    proc = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise SubmitError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def partitions(runner: Runner = run_command) -> list[str] | None:
    """Partitions ``sinfo`` lists, or None when sinfo is not available here."""
    if runner is run_command and shutil.which("sinfo") is None:
        return None
    out = runner(["sinfo", "--noheader", "--format=%R"], clean_env())
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers (``sinfo --Node``): CPUs, memory in MB and GPUs."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int


def partition_nodes(partition: str, runner: Runner = run_command) -> list[Node] | None:
    """The nodes of ``partition`` (the default partition when empty); None when sinfo cannot tell."""
    if runner is run_command and shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "--Node", "--noheader", "--format=%N|%c|%m|%G"] + (
        ["--partition", partition] if partition else []
    )
    nodes: dict[str, Node] = {}
    for line in runner(argv, clean_env()).splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].rstrip("+").isdigit():
            return None  # an answer we cannot read: no check rather than a wrong refusal
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[\w.-]+)?:(\d+)", parts[3]))
        nodes[parts[0]] = Node(parts[0], int(parts[1]), int(parts[2].rstrip("+")), gpus)
    return list(nodes.values()) or None


def max_array_size(runner: Runner = run_command) -> int | None:
    """The cluster's MaxArraySize from ``scontrol show config``, or None when it cannot be read."""
    if runner is run_command and shutil.which("scontrol") is None:
        return None
    out = runner(["scontrol", "show", "config"], clean_env())
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else None


def scancel(job_id: str, runner: Runner = run_command) -> None:
    """Cancel a job or one array task (``<array job>_<task>``)."""
    runner(["scancel", job_id], clean_env())


def queued_jobs(
    job_ids: Iterable[str], runner: Runner | None = None, *, tries: int = 3, pause_s: float = 1.0
) -> frozenset[str] | None:
    """Which of ``job_ids`` squeue still lists; see :func:`job_states` (None when it cannot tell)."""
    listed = job_states(job_ids, runner, tries=tries, pause_s=pause_s)
    return None if listed is None else frozenset(listed)


#: squeue states of a job that waits to (re)start: pending, requeued, held, waiting for its BeginTime.
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})


def job_states(
    job_ids: Iterable[str], runner: Runner | None = None, *, tries: int = 3, pause_s: float = 1.0
) -> dict[str, str] | None:
    """The squeue state (``PENDING``, ``RUNNING``, ``REQUEUED``, ...) of each of ``job_ids`` squeue still lists.

    One call for all of them. Array tasks are named ``<array job>_<task>`` (``squeue --array``), other jobs by
    their id. Jobs that ended or were cancelled are not listed. A failed call (a busy controller times out,
    ``Socket timed out on send/recv``) is tried again, ``tries`` times in all, ``pause_s`` apart. Returns None
    when it cannot tell: no ``squeue`` on this machine, or every try failed. squeue refuses a list whose every
    id has left the controller's memory ("Invalid job id"); that answer means none of them is queued.
    """
    arrays = sorted({job.split("_")[0] for job in job_ids if job})
    if not arrays:
        return {}
    if runner is None:
        if shutil.which("squeue") is None:
            return None
        runner = run_command
    argv = ["squeue", "--noheader", "--array", "--format=%i %T", f"--jobs={','.join(arrays)}"]
    for attempt in range(1, tries + 1):
        try:
            out = runner(argv, clean_env())
            break
        except SubmitError as exc:
            if "Invalid job id" in str(exc):
                return {}
        except (OSError, subprocess.SubprocessError):
            pass
        if attempt < tries:
            time.sleep(pause_s)
    else:
        return None
    states: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts:
            states[parts[0]] = parts[1] if len(parts) > 1 else "UNKNOWN"
    return states
