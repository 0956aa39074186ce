"""Submitting manifest indices, and recording what was submitted in ``submissions.jsonl``.

``local``: one array through submitit's LocalExecutor. ``slurm``: the rendered ``sbatch/`` scripts, one array
per resource shape and MaxArraySize chunk (``--array=i,j,k%P``, ``--signal=USR2@N --requeue``), each waiting
for the cache-prepare job when there is one (``--dependency=afterok``). Every check (partition, GPUs,
MaxArraySize) runs before the first ``sbatch``, so bad input submits nothing.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from geopeft.attempts import process_start_ticks
from geopeft.errors import SubmitError
from geopeft.io import append_jsonl, atomic_write_text
from geopeft.provenance import git_state
from hpc import slurm
from hpc.manifest import Manifest
from hpc.profiles import ClusterProfile, Resources
from hpc.sbatch import Context, Script, array_scripts, prepare_script
from hpc.snapshot import snapshot
from hpc.task import CellTask

#: Stands for the prepare job's id in the sbatch lines of a dry run.
PREPARE_PLACEHOLDER = "<prepare job>"


@dataclass(frozen=True)
class Submission:
    """What one submission did (or, in a dry run, would do).

    Args:
        job_ids: one job id per submitted cell (``<array job>_<task>`` on SLURM).
        scripts: the rendered sbatch scripts, prepare job first.
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

    ``code`` is the submission's snapshot (:mod:`hpc.snapshot`): cells waiting for a slot run the code as it
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
) -> Submission:
    """Submit the cells at ``indices`` (and the prepare job, given its ``geopeft prepare`` argument lists).

    The submission is appended to ``submissions.jsonl`` with each cell's job id, so that ``status`` can
    tell a queued cell (pending) from one never submitted (missing).
    """
    if profile.executor == "slurm":
        return _submit_slurm(manifest, indices, profile, kind, prepare, dry_run, runner)
    blockers = refusals(lambda: check_gpus(manifest, profile), dry_run)
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


def refusals(check: Callable[[], object], dry_run: bool) -> tuple[str, ...]:
    """Run a check that refuses with a :class:`SubmitError`; a dry run gets the refusal back instead.

    So a dry run on a machine without the data, weights or cluster still prints the whole plan, and lists what
    blocks the real submission.
    """
    try:
        check()
    except SubmitError as exc:
        if not dry_run:
            raise
        return (str(exc),)
    return ()


def check_submission(
    manifest: Manifest, indices: Sequence[int], profile: ClusterProfile, runner: slurm.Runner = slurm.run_command
) -> None:
    """Every refusal :func:`submit_indices` would make, without submitting or writing anything."""
    if profile.executor == "slurm":
        check_slurm(manifest, profile, runner, indices)
    else:
        check_gpus(manifest, profile)


def check_gpus(manifest: Manifest, profile: ClusterProfile) -> None:
    """Refuse CUDA cells on a CPU-only profile (its cells see no GPU), before anything is submitted."""
    if manifest.env.device == "cuda" and profile.gpus_per_task == 0:
        raise SubmitError(
            f"{manifest.grid_file}: env.device is cuda but cluster profile {profile.name!r} is CPU-only "
            "(gpus_per_task = 0); use a GPU profile (e.g. --cluster local-gpu), or set env.device to auto or cpu"
        )


def check_slurm(
    manifest: Manifest,
    profile: ClusterProfile,
    runner: slurm.Runner = slurm.run_command,
    indices: Sequence[int] = (),
) -> None:
    """Refuse what the cluster cannot run, before anything is submitted.

    That is: CUDA cells on a CPU-only profile, an unknown partition (checked with ``sinfo`` where it
    exists), a profile ``max_array_size`` above the cluster's MaxArraySize (``scontrol show config``), and a
    resource shape of the cells at ``indices`` (CPUs, GPUs, memory, nodes) that the partition's nodes cannot hold.
    """
    where = f"cluster profile {profile.name!r}"
    check_gpus(manifest, profile)
    if runner is slurm.run_command and shutil.which("sbatch") is None:
        raise SubmitError(
            f"{where} submits to SLURM, but sbatch is not on this machine's PATH; run the sweep on a SLURM login "
            "node (or --cluster local to run the cells here)"
        )
    known = slurm.partitions(runner)
    if known is not None and profile.partition and profile.partition not in known:
        raise SubmitError(
            f"{where}: partition {profile.partition!r} is not on this cluster (sinfo lists: {', '.join(known)}); "
            "fix `partition` in the profile"
        )
    limit = slurm.max_array_size(runner)
    if limit is not None and profile.max_array_size > limit:
        raise SubmitError(
            f"{where}: max_array_size = {profile.max_array_size} but the cluster's MaxArraySize is {limit}; "
            f"arrays would be refused; set max_array_size = {limit} so that sweeps are chunked below it"
        )
    nodes = slurm.partition_nodes(profile.partition, runner)
    if nodes is not None:
        shapes = {profile.resources_for(manifest.entry(i).spec) for i in indices} if indices else set()
        for resources in sorted(shapes | {profile.default_resources}, key=str):
            check_fits(resources, nodes, profile)


def check_fits(resources: Resources, nodes: Sequence[slurm.Node], profile: ClusterProfile) -> None:
    """Refuse a resource shape that no node (or not enough nodes) of the partition can hold.

    SLURM would accept such a job and leave it pending forever (``Reason=Resources``), or refuse it only at
    ``sbatch`` time, after the prepare job was queued.
    """
    where = f"cluster profile {profile.name!r}"
    partition = profile.partition or "the default partition"
    per_node = {
        "CPUs": (resources.tasks_per_node * resources.cpus_per_task, "cpus_per_task"),
        "GPUs": (resources.tasks_per_node * resources.gpus_per_task, "gpus_per_task"),
        "MB of memory": (resources.mem_gb * 1024, "mem_gb"),
    }
    fitting = [
        n
        for n in nodes
        if n.cpus >= per_node["CPUs"][0] and n.gpus >= per_node["GPUs"][0] and n.mem_mb >= per_node["MB of memory"][0]
    ]
    if len(fitting) >= resources.nodes:
        return
    for what, (need, key) in per_node.items():
        most = max(getattr(n, {"CPUs": "cpus", "GPUs": "gpus", "MB of memory": "mem_mb"}[what]) for n in nodes)
        if need > most:
            raise SubmitError(
                f"{where}: a cell asks for {need} {what} per node ({key}, tasks_per_node = "
                f"{resources.tasks_per_node}) but the largest node of {partition} has {most}; lower {key} "
                "or use another partition"
            )
    raise SubmitError(
        f"{where}: a cell asks for {resources.nodes} nodes but only {len(fitting)} node(s) of {partition} can "
        f"hold its tasks; lower nodes or use another partition"
    )


def plan_scripts(
    manifest: Manifest,
    indices: list[int],
    profile: ClusterProfile,
    kind: str,
    prepare: Sequence[Sequence[str]],
    *,
    write_code: bool = True,
) -> list[Script]:
    """Render the scripts of a submission: the prepare job (if any), then one array per shape and chunk.

    They run the code snapshot of this submission (:mod:`hpc.snapshot`), written here unless ``write_code`` is
    False (a dry run names it only).
    """
    seq = len(list((manifest.root / "slurm").glob("*.sbatch")))
    code = str(snapshot(manifest.root, write=write_code))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    ctx = Context(manifest.name, manifest.root, kind, git_state(), stamp, seq, code=code)
    shapes: dict[Resources, list[int]] = {}
    for i in sorted(indices):
        shapes.setdefault(profile.resources_for(manifest.entry(i).spec), []).append(i)
    scripts = []
    if prepare and indices:
        datasets = ", ".join(str(c[1]) for c in prepare)
        scripts.append(prepare_script(ctx, profile, prepare, datasets))
    return scripts + array_scripts(ctx, profile, shapes)


def _submit_slurm(
    manifest: Manifest,
    indices: list[int],
    profile: ClusterProfile,
    kind: str,
    prepare: Sequence[Sequence[str]],
    dry_run: bool,
    runner: slurm.Runner,
) -> Submission:
    blockers = refusals(lambda: check_slurm(manifest, profile, runner, indices), dry_run)
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
    if dry_run:
        prep = PREPARE_PLACEHOLDER if prepare else ""
        lines = tuple(_line(s, _dependency(s, prep, [f"<array {i}>" for i in range(len(scripts))])) for s in scripts)
        return Submission(scripts=tuple(scripts), commands=lines, gpu_hours=gpu_h, cpu_hours=cpu_h, blockers=blockers)
    for s in scripts:
        atomic_write_text(s.path, s.text)
        s.path.chmod(0o755)
        (s.path.parent / "logs").mkdir(exist_ok=True)
    prepare_job = ""
    job_ids: list[str] = []
    arrays: list[str] = []  # the job ids of this submission's arrays, in order
    commands: list[str] = []
    git = git_state()
    for s in scripts:
        submitted_at = time.time()
        dependency = _dependency(s, prepare_job, arrays)
        commands.append(_line(s, dependency))
        job = slurm.sbatch(s.path, dependency=dependency, runner=runner)
        if s.kind == "prepare":
            prepare_job = job
            _record(manifest, profile, kind, submitted_at, {}, git, prepare={"job_id": job, "script": str(s.path)})
            continue
        cells = {
            manifest.entry(i).cell_id: {"job_id": f"{job}_{s.task_id(i)}", "index": i, "pid_start": None}
            for i in s.indices
        }
        array = {"job_id": job, "script": str(s.path), "offset": s.offset, "dependency": dependency}
        _record(manifest, profile, kind, submitted_at, cells, git, array=array)
        job_ids += [f"{job}_{s.task_id(i)}" for i in s.indices]
        arrays.append(job)
    return Submission(tuple(job_ids), tuple(scripts), tuple(commands), prepare_job, gpu_h, cpu_h)


def _dependency(script: Script, prepare_job: str, arrays: Sequence[str]) -> str:
    """``afterok`` on the prepare job and ``afterany`` on the array this one queues behind (its lane)."""
    if script.kind == "prepare":
        return ""
    parts = [f"afterok:{prepare_job}"] if prepare_job else []
    if script.after >= 0:
        parts.append(f"afterany:{arrays[script.after]}")
    return ",".join(parts)


def _line(script: Script, dependency: str) -> str:
    return " ".join(slurm.sbatch_argv(script.path, dependency))


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
