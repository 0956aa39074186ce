"""What a submission must not reach the scheduler with: refusals made before anything is written or submitted.

CUDA cells on a CPU-only profile; on SLURM a missing ``sbatch``, an unknown partition, a profile MaxArraySize
above the cluster's, and a resource shape that no node of the partition can hold (``sinfo``). A dry run gets the
refusals back as blockers (:func:`refusals`) and prints the whole plan anyway.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence

from geopeft.errors import SubmitError
from hpc.scheduler import slurm
from hpc.scheduler.profiles import ClusterProfile, Executor, Resources
from hpc.state.manifest import Manifest


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
    if profile.executor == Executor.SLURM:
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
