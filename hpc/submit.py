"""Submitting manifest indices as one array through submitit, and recording what was submitted."""

from __future__ import annotations

import socket
import time
from typing import Any

import submitit

from geopeft.attempts import process_start_ticks
from geopeft.io import append_jsonl
from geopeft.provenance import git_state
from hpc.manifest import Manifest
from hpc.profiles import ClusterProfile
from hpc.task import CellTask


def make_executor(manifest: Manifest, profile: ClusterProfile) -> submitit.Executor:
    """A submitit executor configured from the cluster profile."""
    folder = manifest.paths.submitit_dir
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(
        timeout_min=profile.time_limit_min, signal_delay_s=profile.signal_lead_s, stderr_to_stdout=True
    )
    return executor


def submit_indices(manifest: Manifest, indices: list[int], profile: ClusterProfile, kind: str) -> list[str]:
    """Submit the cells at ``indices`` as one array; returns the job ids (one per task).

    The submission is appended to ``submissions.jsonl`` with each cell's job id, so that
    ``status`` can tell a queued cell (pending) from one never submitted (missing).
    """
    if not indices:
        return []
    submitted_at = time.time()  # before the first task can start
    executor = make_executor(manifest, profile)
    task = CellTask(str(manifest.root), profile.max_parallel if profile.executor == "local" else 0)
    jobs = executor.map_array(task, indices)
    record_jobs: dict[str, Any] = {}
    for index, job in zip(indices, jobs, strict=True):
        pid_start = process_start_ticks(int(job.job_id)) if profile.executor == "local" else None
        record_jobs[manifest.entry(index).cell_id] = {"job_id": job.job_id, "index": index, "pid_start": pid_start}
    append_jsonl(
        manifest.paths.submissions,
        {
            "time": submitted_at,
            "kind": kind,
            "executor": profile.executor,
            "profile": profile.name,
            "host": socket.gethostname(),
            "git": git_state(),
            "jobs": record_jobs,
        },
    )
    return [job.job_id for job in jobs]
