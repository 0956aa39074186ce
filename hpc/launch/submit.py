"""Submitting manifest indices, and recording what was submitted in ``submissions.jsonl``.

``local``: one array through submitit's LocalExecutor. ``slurm``: submitit's SlurmExecutor
(:mod:`hpc.launch.slurm_jobs`),
the cache-prepare job first when there is one, then one array per resource shape and MaxArraySize chunk
(:mod:`hpc.scheduler.arrays`: ``%P``, ``--signal=USR2@N --requeue``), each waiting for the prepare job (``afterok``)
and its
lane (``afterany``). Every check (:mod:`hpc.launch.admission`) runs before the first ``sbatch``, so bad input submits
nothing.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from geopeft.attempts import process_start_ticks
from geopeft.io import append_jsonl
from geopeft.provenance import git_state
from hpc.launch import slurm_jobs
from hpc.launch.admission import check_submission, refusals
from hpc.launch.snapshot import snapshot
from hpc.launch.task import CellTask, PrepareTask
from hpc.scheduler import slurm
from hpc.scheduler.arrays import Script, plan_arrays
from hpc.scheduler.profiles import ClusterProfile, Executor, Resources
from hpc.state.manifest import Manifest

#: Stands for the prepare job's id in the sbatch lines of a dry run.
PREPARE_PLACEHOLDER = "<prepare job>"


@dataclass(frozen=True)
class Submission:
    """What one submission did (or, in a dry run, would do).

    Args:
        job_ids: one job id per submitted cell (``<array job>_<task>`` on SLURM).
        scripts: the sbatch scripts as submitit wrote them, prepare job first.
        commands: the sbatch command lines, in submission order.
        prepare_job: the cache-prepare job's id; empty without one.
        gpu_hours: upper bound of the GPU hours asked for (cells x GPUs x time limit).
        cpu_hours: the same for CPU core hours.
        blockers: in a dry run, what would refuse the real submission (one message each).
    """

    job_ids: tuple[str, ...] = ()
    scripts: tuple[Script, ...] = ()
    commands: tuple[str, ...] = ()
    prepare_job: str = ""
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    blockers: tuple[str, ...] = ()


def make_executor(manifest: Manifest, profile: ClusterProfile, code: Path | None = None) -> submitit.Executor:
    """A submitit executor configured from a local profile; its tasks import ``code`` first when given.

    ``code`` is the submission's snapshot (:mod:`hpc.launch.snapshot`): cells waiting for a slot run the code as it
    was submitted, as SLURM array tasks do.
    """
    folder = manifest.paths.submitit_dir
    executor = submitit.LocalExecutor(folder=folder)
    # submitit sets CUDA_VISIBLE_DEVICES to the first ``gpus_per_node`` GPUs, "" (none) for 0: a CPU-only profile
    # hides the GPUs from its cells, a GPU profile shows each cell that many.
    executor.update_parameters(
        timeout_min=profile.time_limit_min,
        signal_delay_s=profile.signal_lead_s,
        stderr_to_stdout=True,
        gpus_per_node=profile.gpus_per_task,
    )
    if code is not None:
        executor.update_parameters(setup=[f"export PYTHONPATH={shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}"])
    return executor


def submit_indices(
    manifest: Manifest,
    indices: list[int],
    profile: ClusterProfile,
    kind: str,
    *,
    prepare: Sequence[Sequence[str]] = (),
    dry_run: bool = False,
    runner: slurm.Runner = slurm.run_command,
    checked: bool = False,
) -> Submission:
    """Submit the cells at ``indices`` (and the prepare job, given its ``geopeft prepare`` argument lists).

    The submission is appended to ``submissions.jsonl`` with each cell's job id, so that ``status`` can
    tell a queued cell (pending) from one never submitted (missing). It first makes the refusals of
    :func:`hpc.launch.admission.check_submission` (a dry run gets them back as blockers), unless the caller
    made them already (``checked``).
    """
    if not checked:  # sweep and rerun made these checks before writing anything (hpc.launch.admission)
        blockers = refusals(lambda: check_submission(manifest, indices, profile, runner), dry_run)
    else:
        blockers = ()
    if profile.executor == Executor.SLURM:
        return _submit_slurm(manifest, indices, profile, kind, prepare, dry_run, blockers)
    if not indices or dry_run:
        return Submission(blockers=blockers)
    submitted_at = time.time()  # before the first task can start
    task = CellTask(str(manifest.root), profile.max_parallel)
    jobs = make_executor(manifest, profile, snapshot(manifest.root)).map_array(task, indices)
    record_jobs: dict[str, Any] = {}
    for index, job in zip(indices, jobs, strict=True):
        pid_start = process_start_ticks(int(job.job_id))
        record_jobs[manifest.entry(index).cell_id] = {"job_id": job.job_id, "index": index, "pid_start": pid_start}
    _record(manifest, profile, kind, submitted_at, record_jobs)
    return Submission(job_ids=tuple(job.job_id for job in jobs))


def plan_scripts(
    manifest: Manifest,
    indices: list[int],
    profile: ClusterProfile,
    kind: str,
    prepare: Sequence[Sequence[str]],
    *,
    write_code: bool = True,
) -> list[Script]:
    """The jobs of a submission with submitit's scripts: the prepare job (if any), then the arrays.

    They run the code snapshot of this submission (:mod:`hpc.launch.snapshot`), written here unless ``write_code`` is
    False (a dry run names it only). Dependencies on jobs not yet submitted read as placeholders.
    """
    folder = manifest.paths.slurm_dir
    prefix = f"{len(list(folder.glob('*.sbatch'))):04d}-{kind}"
    code = str(snapshot(manifest.root, write=write_code))
    shapes: dict[Resources, list[int]] = {}
    for i in sorted(indices):
        shapes.setdefault(profile.resources_for(manifest.entry(i).spec), []).append(i)
    scripts: list[Script] = []
    if prepare and indices:
        executor = slurm_jobs.make_executor(
            manifest.root, profile, None, job_name=_name(manifest, "prepare"), code=code
        )
        scripts.append(Script("prepare", folder / f"{prefix}-prepare.sbatch", slurm_jobs.script_text(executor, 1)))
    planned = plan_arrays(profile, shapes, prefix, folder)
    placeholders = [f"<array {n}>" for n in range(len(planned))]
    for s in planned:
        dependency = _dependency(s, PREPARE_PLACEHOLDER if prepare else "", placeholders)
        executor = _array_executor(manifest, profile, s, code, dependency)
        scripts.append(replace(s, text=slurm_jobs.script_text(executor, len(s.indices))))
    return scripts


def _name(manifest: Manifest, part: str = "") -> str:
    return f"geopeft-{manifest.name}" + (f"-{part}" if part else "")


def _array_executor(
    manifest: Manifest, profile: ClusterProfile, script: Script, code: str, dependency: str
) -> submitit.SlurmExecutor:
    return slurm_jobs.make_executor(
        manifest.root,
        profile,
        script.resources,
        job_name=_name(manifest),
        code=code,
        parallelism=script.parallelism,
        dependency=dependency,
    )


def _submit_slurm(
    manifest: Manifest,
    indices: list[int],
    profile: ClusterProfile,
    kind: str,
    prepare: Sequence[Sequence[str]],
    dry_run: bool,
    blockers: tuple[str, ...],
) -> Submission:
    if not indices:
        return Submission(blockers=blockers)
    scripts = plan_scripts(manifest, indices, profile, kind, prepare, write_code=not dry_run)
    gpu_h = sum(len(s.indices) * s.resources.gpus * s.resources.time_limit_min / 60 for s in scripts if s.resources)
    cpu_h = sum(
        len(s.indices)
        * s.resources.nodes
        * s.resources.tasks_per_node
        * s.resources.cpus_per_task
        * s.resources.time_limit_min
        / 60
        for s in scripts
        if s.resources
    )
    lines = tuple(f"sbatch {s.path}" for s in scripts)  # submitit's sbatch call; the dependency is in the script
    if dry_run:
        return Submission(scripts=tuple(scripts), commands=lines, gpu_hours=gpu_h, cpu_hours=cpu_h, blockers=blockers)
    code = str(snapshot(manifest.root))
    prepare_job = ""
    job_ids: list[str] = []
    arrays: list[str] = []  # the job ids of this submission's arrays, in order
    submitted: list[Script] = []  # with the text submitit submitted (the dependencies filled in)
    git = git_state()
    for s in scripts:
        submitted_at = time.time()
        dependency = _dependency(s, prepare_job, arrays)
        if s.kind == "prepare":
            executor = slurm_jobs.make_executor(
                manifest.root, profile, None, job_name=_name(manifest, "prepare"), code=code
            )
            prepare_job = slurm_jobs.submit_one(executor, PrepareTask(str(manifest.root), prepare))
            slurm_jobs.keep_script(manifest.root, prepare_job, s.path)
            submitted.append(replace(s, text=s.path.read_text(encoding="utf-8")))
            _record(
                manifest, profile, kind, submitted_at, {}, git, prepare={"job_id": prepare_job, "script": str(s.path)}
            )
            continue
        ids = slurm_jobs.submit_array(
            _array_executor(manifest, profile, s, code, dependency), CellTask(str(manifest.root)), s.indices
        )
        slurm_jobs.keep_script(manifest.root, ids[0], s.path)
        submitted.append(replace(s, text=s.path.read_text(encoding="utf-8")))
        cells = {
            manifest.entry(i).cell_id: {"job_id": job, "index": i, "pid_start": None}
            for i, job in zip(s.indices, ids, strict=True)
        }
        array = {"job_id": ids[0].split("_")[0], "script": str(s.path), "dependency": dependency}
        _record(manifest, profile, kind, submitted_at, cells, git, array=array)
        job_ids += ids
        arrays.append(array["job_id"])
    return Submission(tuple(job_ids), tuple(submitted), lines, prepare_job, gpu_h, cpu_h)


def _dependency(script: Script, prepare_job: str, arrays: Sequence[str]) -> str:
    """``afterok`` on the prepare job and ``afterany`` on the array this one queues behind (its lane)."""
    if script.kind == "prepare":
        return ""
    parts = [f"afterok:{prepare_job}"] if prepare_job else []
    if script.after >= 0:
        parts.append(f"afterany:{arrays[script.after]}")
    return ",".join(parts)


def _record(
    manifest: Manifest,
    profile: ClusterProfile,
    kind: str,
    submitted_at: float,
    jobs: dict[str, Any],
    git: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    append_jsonl(
        manifest.paths.submissions,
        {
            "time": submitted_at,
            "kind": kind,
            "executor": profile.executor,
            "profile": profile.name,
            "host": socket.gethostname(),
            "git": git or git_state(),
            "jobs": jobs,
            **extra,
        },
    )
