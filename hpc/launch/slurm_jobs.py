"""SLURM jobs through submitit's ``SlurmExecutor``: the one way geopeft's cells and cache builds reach SLURM.

One executor per job: the cache-prepare job (:class:`hpc.launch.task.PrepareTask`) and one array per resource shape and
MaxArraySize chunk (``map_array`` of :class:`hpc.launch.task.CellTask` over the chunk's manifest indices: array task
``k``
runs ``indices[k]``). The profile and the shape become submitit's parameters: partition, account, qos, nodes,
tasks per node (submitit's ``srun`` starts one process per task), CPUs and GPUs per task, memory, time,
``signal_delay_s`` (``--signal=USR2@lead``), ``array_parallelism`` (the ``%P`` of
:func:`hpc.scheduler.arrays.throttles`), the
profile's setup lines and the export that puts the submission's code snapshot first on ``PYTHONPATH``. What
submitit has no parameter for goes through ``additional_parameters``: ``--requeue``, ``--dependency`` (``afterok``
on the prepare job, ``afterany`` on the array of the lane before) and ``--kill-on-invalid-dep=yes``.

submitit writes each script and its pickles under ``<sweep>/submitit/``; a copy of every script is kept in
``<sweep>/slurm/`` (what was submitted, readable without Python). A dry run renders the same text without
submitting. Status never asks submitit (no sacct polling): it reads the files and one squeue call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core import core, utils
from submitit.core.utils import JobPaths
from submitit.slurm.slurm import SlurmJob

from geopeft.errors import SubmitError
from geopeft.paths import SweepPaths
from hpc.scheduler.profiles import ClusterProfile, Resources

#: Requeues of one array task after a time limit that submitit allows before it gives up on the task.
MAX_TIMEOUT_REQUEUES = 20


class ArrayExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor whose ``map_array`` submits an array even of one task.

    submitit submits a one-element ``map_array`` as a plain job; a rerun of one failed cell would then not be an
    array task like every other cell (its log, ``SLURM_ARRAY_*``, ``squeue``'s ``<array>_<task>``). This follows
    submitit's own array branch (``SlurmExecutor._internal_process_submissions`` of submitit 1.5, pinned in
    pyproject.toml) for that one case.
    """

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        if len(delayed_submissions) != 1:
            return super()._internal_process_submissions(delayed_submissions)
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickle_path = folder / f"{uuid.uuid4().hex}.pkl"
        delayed_submissions[0].set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
        delayed_submissions[0].dump(pickle_path)
        array = submitit.SlurmExecutor(self.folder, self.max_num_timeout)
        array.update_parameters(**self.parameters)
        array.parameters["map_count"] = 1
        first = array._submit_command(self._submitit_command_str)
        job: core.Job[Any] = SlurmJob(
            folder=self.folder, job_id=f"{first.job_id}_0", tasks=list(range(first.num_tasks))
        )
        job.paths.move_temporary_file(pickle_path, "submitted_pickle")
        return [job]


def make_executor(
    root: Path,
    profile: ClusterProfile,
    resources: Resources | None,
    *,
    job_name: str,
    code: str,
    parallelism: int = 1,
    dependency: str = "",
) -> submitit.SlurmExecutor:
    """A SlurmExecutor for one job of the sweep in ``root``: an array (``resources``) or the prepare job (None).

    Args:
        root: the sweep directory.
        profile: the cluster profile.
        resources: the array's shape; None for the cache-prepare job (one CPU task of the profile's size).
        job_name: SLURM's job name.
        code: the code snapshot put first on ``PYTHONPATH`` (:mod:`hpc.launch.snapshot`); empty for none.
        parallelism: the array's ``%P``.
        dependency: sbatch's ``--dependency`` value; empty for none.
    """
    kind = submitit.SlurmExecutor if resources is None else ArrayExecutor  # the prepare job is a plain job
    executor = kind(
        folder=SweepPaths(root).submitit_dir,
        max_num_timeout=MAX_TIMEOUT_REQUEUES,
        python=profile.python or None,
    )
    setup = list(profile.setup)
    if code:
        setup.append(f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}")
    params: dict[str, Any] = {"job_name": job_name, "stderr_to_stdout": True, "setup": setup}
    extra: dict[str, Any] = {}
    for key in ("partition", "account", "qos"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    if resources is None:
        params.update(time=profile.prepare_time_min, nodes=1, ntasks_per_node=1, cpus_per_task=profile.prepare_cpus)
    else:
        params.update(
            time=resources.time_limit_min,
            nodes=resources.nodes,
            ntasks_per_node=resources.tasks_per_node,
            cpus_per_task=resources.cpus_per_task,
            signal_delay_s=profile.signal_lead_s,
            array_parallelism=parallelism,
        )
        if resources.gpus_per_task:
            params["gpus_per_task"] = resources.gpus_per_task
        if resources.mem_gb:
            params["mem"] = f"{resources.mem_gb}G"
        if resources.multi_task:
            # When one rank ends (killed, failed, preempted) the others end by themselves at their next collective;
            # srun terminates what is left after 60 s, not at once: rank 0 may be writing the cell's records.
            params["srun_args"] = ["--kill-on-bad-exit=0", "--wait=60"]
        extra["requeue"] = True
    if dependency:
        extra.update(dependency=dependency, kill_on_invalid_dep="yes")
    executor.update_parameters(**params, additional_parameters=extra)
    return executor


def script_text(executor: submitit.SlurmExecutor, tasks: int) -> str:
    """The sbatch script submitit writes for a job of ``tasks`` array tasks (a plain job for one task).

    It calls the same function submitit's submission does, with the array size it adds for ``map_array``.
    """
    params = dict(executor.parameters)
    if tasks > 1 or "array_parallelism" in params:
        params["map_count"] = tasks  # every cell is an array task (:class:`ArrayExecutor`)
    copy = submitit.SlurmExecutor(executor.folder, executor.max_num_timeout, python=executor.python)
    copy.parameters.update(params)
    return copy._make_submission_file_text(copy._submitit_command_str, "dry-run")


def submit_array(executor: submitit.SlurmExecutor, task: Callable[[int], Any], indices: Sequence[int]) -> list[str]:
    """Submit ``task`` over ``indices`` as one array (array task ``k`` runs ``indices[k]``); each index's job id."""
    with _clean_environment():
        jobs = executor.map_array(task, list(indices))
    return [job.job_id for job in jobs]


def submit_one(executor: submitit.SlurmExecutor, task: Callable[[], Any]) -> str:
    """Submit ``task`` as one plain job; its job id."""
    with _clean_environment():
        return executor.submit(task).job_id


def keep_script(root: Path, job_id: str, target: Path) -> None:
    """Copy the script submitit submitted for job ``job_id`` (an array's first id) to ``target``."""
    array = job_id.split("_", 1)[0]
    source = JobPaths(SweepPaths(root).submitit_dir, job_id=array).submission_file
    if not source.exists():
        source = JobPaths(SweepPaths(root).submitit_dir, job_id=job_id).submission_file
    if not source.exists():
        raise SubmitError(f"submitit wrote no script for job {job_id} under {SweepPaths(root).submitit_dir}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.resolve(), target)


@contextlib.contextmanager
def _clean_environment() -> Iterator[None]:
    """Submit without the SLURM_* variables of a job this process may run in (sbatch would inherit them)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_JOB", "SLURM_ARRAY", "SBATCH_"))}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)
